"""``--processes N``: N server processes on one port, each with its own models, their metrics added up,
started again when killed, and nothing left behind when the server stops."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from isvc_runtime import processes
from isvc_runtime.server import default_torch_threads
from runtime_support import ASSETS, RuntimeProcess, build_archive

from e2e.processes import free_port, pid_alive

PREDICT = "/v1/models/pids:predict"
# Two processes; metrics on the inference port only and a gRPC port of their own (the defaults, 8082 and
# 8081, may be another server's on a shared machine).
TWO_PROCESSES = ("--processes", "2", "--metrics-port", "0", "--grpc-port", str(free_port()))


# --- the parts, without a server ---


def test_every_process_gets_its_own_work_dir_and_all_but_the_first_leave_the_metrics_port() -> None:
    argv = ["--model-store", "/m", "--processes", "2"]
    assert processes.process_command(argv, 0, Path("/w/process-0"))[-6:] == [
        *argv,
        "--work-dir",
        "/w/process-0",
    ]
    assert processes.process_command(argv, 1)[-6:] == [*argv, "--metrics-port", "0"]


def test_two_sockets_bind_one_port_for_two_processes() -> None:
    first = processes.listening_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = processes.listening_socket("127.0.0.1", port)
    try:
        assert second.getsockname()[1] == port
    finally:
        first.close()
        second.close()


def test_a_crash_loop_is_not_restarted_for_ever() -> None:
    restarts = processes.Restarts()
    assert all(restarts.allow(float(t)) for t in range(processes.MAX_RESTARTS))
    assert not restarts.allow(float(processes.MAX_RESTARTS))
    assert restarts.allow(processes.RESTART_WINDOW_S + processes.MAX_RESTARTS)  # the old ones expired


def test_the_metrics_directory_starts_empty(tmp_path: Path) -> None:
    given = tmp_path / "multiproc"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "ready-1").touch()
    env = {processes.MULTIPROC_DIR_ENV: str(given)}
    assert processes.metrics_directory(env, tmp_path / "server") == given
    assert list(given.iterdir()) == []
    env = {}
    fresh = processes.metrics_directory(env, tmp_path / "server")
    assert fresh == tmp_path / "server" / "metrics" and list(fresh.iterdir()) == []
    assert env == {processes.MULTIPROC_DIR_ENV: str(fresh)}


def test_each_process_gets_its_share_of_the_cpus_for_torch() -> None:
    assert default_torch_threads(2, 1) == 1
    assert default_torch_threads(2, 1, processes=2) == 1
    assert default_torch_threads(64, 1, processes=8) == 7
    assert default_torch_threads(64, 2, processes=4) == 7


# --- a server of two processes ---


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's TMPDIR: where its work and metrics directories go, empty again once it stopped."""
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tmp_dir: Path) -> Iterator[RuntimeProcess]:
    store = tmp_path_factory.mktemp("pid-store")
    build_archive(store, "pids", handler=ASSETS / "pid_handler.py")
    process = RuntimeProcess(store, store / "runtime.log", *TWO_PROCESSES, env={"TMPDIR": str(tmp_dir)})
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def ask(server: RuntimeProcess, text: str, after_kill: bool = False) -> dict[str, object] | None:
    """One request on a connection of its own (the kernel picks a process per connection); None while
    the process it reached is still loading, and, ``after_kill``, when its connection was reset: one the
    kernel queued on the killed process's socket in the moment before that process was gone, or one
    it had accepted."""
    try:
        response = httpx.post(server.url + PREDICT, json={"instances": [{"data": text}]}, timeout=30)
    except (httpx.ReadError, httpx.RemoteProtocolError):  # reset, or closed without an answer
        if after_kill:
            return None
        raise
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]
    assert answer["echo"] == text
    return answer


def pids_answering(server: RuntimeProcess, wanted: int = 2, tries: int = 400,
                   after_kill: bool = False) -> tuple[set[int], int]:
    """The processes seen answering (until ``wanted`` of them did) and how many requests were answered."""
    pids: set[int] = set()
    answered = 0
    for index in range(tries):
        answer = ask(server, f"request {index}", after_kill)
        if answer is not None:
            answered += 1
            pids.add(int(answer["pid"]))  # type: ignore[call-overload]
        if len(pids) >= wanted and answered >= 20:
            break
        if answer is None:
            time.sleep(0.05)
    return pids, answered


def answered_total(server: RuntimeProcess) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("isvc_requests_total{")
        and 'endpoint="v1_predict"' in line  # merged values come with their labels sorted by name
        and 'code="200"' in line
    )


def test_both_processes_answer_on_the_one_port(server: RuntimeProcess) -> None:
    pids, _ = pids_answering(server)
    assert len(pids) == 2 and server.process.pid not in pids


def test_metrics_count_the_requests_of_every_process(server: RuntimeProcess) -> None:
    before = answered_total(server)
    pids, answered = pids_answering(server)
    assert len(pids) == 2
    # Each scrape reaches one process or the other: every one must show the requests of both.
    assert [answered_total(server) - before for _ in range(6)] == [float(answered)] * 6


def test_a_killed_process_is_started_again(server: RuntimeProcess) -> None:
    pids, _ = pids_answering(server)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        seen, _ = pids_answering(server, tries=100, after_kill=True)
        if len(seen) == 2 and victim not in seen:
            break
    assert len(seen) == 2 and victim not in seen and (pids - {victim}) <= seen
    restarted = rf"server process \d \(pid {victim}\) was killed by SIGKILL; starting it again"
    assert re.search(restarted, server.log())


def test_stopping_the_server_stops_every_process_and_leaves_no_directory(
    server: RuntimeProcess, tmp_dir: Path
) -> None:
    pids, _ = pids_answering(server)
    server.process.send_signal(signal.SIGTERM)  # the parent alone, as the kubelet does
    assert server.process.wait(timeout=60) == 0
    assert not [pid for pid in pids if pid_alive(pid)]
    assert list(tmp_dir.iterdir()) == []


def test_a_port_in_use_stops_the_whole_server(tmp_path: Path) -> None:
    build_archive(tmp_path / "store", "pids", handler=ASSETS / "pid_handler.py")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = RuntimeProcess(
            tmp_path / "store", tmp_path / "runtime.log", *TWO_PROCESSES, "--http-port", str(port)
        )
        try:
            assert process.process.wait(timeout=120) == 1
        finally:
            process.stop()
    assert "stopping the server" in process.log()
