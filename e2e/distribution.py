"""How ``make test`` spreads the suite over two pytest-xdist workers (``pytest -n 2``).

The e2e tests share one control plane and one node (session fixtures), and the ports, network namespaces and
iptables rules those hold: a second worker would start them again beside the first. So every test under e2e/
is one unit of work, run on one worker in collection order; the tests/ directory's tests go by module (their
module fixtures, a runtime process each, start once) to whichever worker is free. The e2e tests wait much of
their time on probes, kubelets and controllers, and the other worker fills that time.

xdist's own ``--dist loadgroup`` would do this through an ``xdist_group`` mark, but pytest-xdist 3.8 applies
the mark by rewriting ``item._nodeid``, which pytest 9.2 no longer reads (pytest-dev/pytest-xdist#1386): the
grouping silently does not happen. Choosing the unit from the node id does not depend on that."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

E2E_UNIT = "e2e"


class E2EOnOneWorker(LoadScopeScheduling):
    """xdist's scope scheduling (a unit per module), except that every e2e test belongs to one unit."""

    def _split_scope(self, nodeid: str) -> str:
        return E2E_UNIT if nodeid.startswith(f"{E2E_UNIT}/") else super()._split_scope(nodeid)
