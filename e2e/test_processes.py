"""The harness's child processes: stopped with their whole process group, or alone when they lead none;
distinct free ports; work directories of a dead owner swept."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from e2e.polling import wait_for
from e2e.processes import free_ports, owned_workdir, pid_alive, popen, stop, sweep_stale_workdirs

# A parent that starts a grandchild sleeping in its process group, prints its pid and ignores SIGTERM.
PARENT_OF_A_SLEEPER = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def test_stop_ends_the_whole_process_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    log = tmp_path / "parent.log"
    parent = popen([sys.executable, "-c", PARENT_OF_A_SLEEPER], log=log)
    grandchild = int(wait_for(lambda: log.read_text().strip(), 30, "the grandchild's pid"))
    assert pid_alive(grandchild)
    assert stop(parent, timeout=0.5) == -9
    assert not pid_alive(parent.pid)
    wait_for(lambda: not pid_alive(grandchild), 10, "the grandchild to be gone")


def test_stop_ends_a_child_that_leads_no_group_of_its_own() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    assert stop(child, timeout=10) == -15


def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20


def test_workdirs_of_a_dead_owner_are_swept_and_a_live_owners_kept() -> None:
    mine = owned_workdir("harness-test-")
    dead = owned_workdir("harness-test-")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (dead / "owner.pid").write_text(gone.stdout.strip())
    try:
        sweep_stale_workdirs("harness-test-")
        assert mine.is_dir() and not dead.exists()
    finally:
        for directory in (mine, dead):
            shutil.rmtree(directory, ignore_errors=True)
