"""Helpers shared by the test directories (and the benchmarks): the runtime server as a process and loading
a file as a module. ``tests/`` is on ``sys.path`` (pytest's rootdir insertion), so tests import
``support.runtime`` / ``support.modules``; bench/ adds ``tests/`` itself. Child processes and free ports come
from the development harness's one module for them, ``e2e/processes.py`` (pyproject's pytest ``pythonpath``
puts the checkout on ``sys.path``)."""
