"""Helpers shared by the test directories (and the benchmarks): child processes on loopback ports and the
runtime server as a process. ``tests/`` is on ``sys.path`` (tests/conftest.py, pytest's rootdir
insertion), so tests import ``support.processes`` / ``support.runtime``; bench/ adds ``tests/`` itself."""
