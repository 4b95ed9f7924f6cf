"""Torch's idle intra-op threads poll briefly for the next parallel region, then sleep, instead of spinning on
the cores the event loop needs for libgomp's default 300,000 polls, unless the user chose how OpenMP threads
wait (isvc_runtime.server.brief_omp_spin, called before torch is imported)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from isvc_runtime.server import OMP_SPIN_COUNT, OMP_WAIT_SETTINGS, brief_omp_spin

# What the runtime's main() does before its loader thread imports torch; then the OpenMP runtime torch
# loads prints the settings it took (OMP_DISPLAY_ENV), among them how long an idle thread spins.
IMPORT_TORCH_AS_THE_SERVER_DOES = (
    "import os; from isvc_runtime.server import brief_omp_spin; brief_omp_spin(os.environ); import torch"
)


def openmp_spin_count(extra_env: dict[str, str]) -> str:
    """GOMP_SPINCOUNT as the OpenMP runtime loaded by torch reports it."""
    env = {k: v for k, v in os.environ.items() if k not in OMP_WAIT_SETTINGS}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **extra_env)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_TORCH_AS_THE_SERVER_DOES],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip().startswith("GOMP_SPINCOUNT")]
    assert lines, f"the OpenMP runtime printed no GOMP_SPINCOUNT:\n{done.stderr}"
    return lines[0].split("=", 1)[1].strip().strip("'")


def test_idle_torch_threads_poll_briefly_then_sleep() -> None:
    env: dict[str, str] = {}
    assert brief_omp_spin(env)
    assert env == {"GOMP_SPINCOUNT": "3000"}
    assert OMP_SPIN_COUNT == 3000
    # as torch's OpenMP runtime took it: a hundredth of its own default (300000)
    assert openmp_spin_count({}) == "3000"


@pytest.mark.parametrize("name", OMP_WAIT_SETTINGS)
def test_a_users_openmp_wait_setting_is_kept(name: str) -> None:
    env = {name: "ACTIVE" if name == "OMP_WAIT_POLICY" else "1234"}
    assert not brief_omp_spin(env)
    assert env == {name: env[name]}

