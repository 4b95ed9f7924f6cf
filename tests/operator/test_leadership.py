"""Leader election among the operator's replicas (isvc_operator/leadership.py): who may hold the Lease, when
a holder stops acting, and what a release leaves. Two electors share one in-memory Lease that keeps the
apiserver's rule for conditioned writes (a stale resourceVersion gets 409 Conflict); the clock is the
test's."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest
from isvc_operator.__main__ import parse_args
from isvc_operator.leadership import (
    ELECTION_ENV,
    FAILED,
    HELD,
    LEASE_DURATION,
    OTHER,
    RENEW_DEADLINE,
    LeaseElector,
    LeaseRecord,
    holding_spec,
    leader_election,
    may_take,
    read_record,
)
from kubernetes.client.exceptions import ApiException

MOMENT = datetime.datetime(2026, 11, 30, 7, 0, 0, 123456, tzinfo=datetime.UTC)


class OneLease:
    """One Lease with the apiserver's optimistic concurrency; `down` makes every call fail."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise OSError("connection refused")

    def _store(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(spec)}
        return self.lease

    def get(self) -> dict[str, Any] | None:
        self._check()
        return self.lease

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(spec)

    def replace(self, spec: dict[str, Any], resource_version: str) -> dict[str, Any]:
        self._check()
        if self.lease is None or self.lease["metadata"]["resourceVersion"] != resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(spec)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lease() -> OneLease:
    return OneLease()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def elector(lease: OneLease, clock: Clock, identity: str) -> LeaseElector:
    return LeaseElector(lease, identity, logging.getLogger("test"), clock=clock, wall_clock=lambda: MOMENT)


def attempt(candidate: LeaseElector) -> str | None:
    return candidate.step(candidate.try_take())


def test_the_first_replica_creates_the_lease_and_leads() -> None:
    lease, clock = OneLease(), Clock()
    first = elector(lease, clock, "a")
    assert attempt(first) == "lead" and first.leading
    assert lease.lease["spec"] == {"holderIdentity": "a", "leaseDurationSeconds": LEASE_DURATION,
                                   "acquireTime": "2026-11-30T07:00:00.123456Z",
                                   "renewTime": "2026-11-30T07:00:00.123456Z", "leaseTransitions": 0}


def test_a_renewal_keeps_the_acquire_time_and_the_count_of_transitions() -> None:
    record = LeaseRecord("a", 15, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:05.000000Z", 3, "7")
    spec = holding_spec(record, "a", MOMENT)
    assert (spec["acquireTime"], spec["leaseTransitions"]) == ("2026-01-01T00:00:00.000000Z", 3)
    assert spec["renewTime"] == "2026-11-30T07:00:00.123456Z"
    taken = holding_spec(record, "b", MOMENT)
    assert (taken["acquireTime"], taken["leaseTransitions"]) == ("2026-11-30T07:00:00.123456Z", 4)


def test_a_live_holder_is_left_alone_until_its_record_is_unchanged_for_its_duration(
    lease: OneLease, clock: Clock
) -> None:
    holder, standby = elector(lease, clock, "a"), elector(lease, clock, "b")
    assert attempt(holder) == "lead"
    for _ in range(20):  # the holder renews every 2 s: the standby never may take it
        clock.now += 2
        assert attempt(holder) is None and holder.leading
        assert standby.try_take() == OTHER and not standby.leading
    clock.now += LEASE_DURATION - 1  # the holder went silent: not yet
    assert standby.try_take() == OTHER
    clock.now += 1
    assert attempt(standby) == "lead"
    assert lease.lease["spec"]["holderIdentity"] == "b" and lease.lease["spec"]["leaseTransitions"] == 1


def test_the_unchanged_time_is_measured_on_the_standbys_own_clock_from_when_it_first_saw_the_record() -> None:
    record = LeaseRecord("a", 15, None, "2000-01-01T00:00:00.000000Z", 0, "1")  # a renewTime long past
    assert not may_take(record, "b", unchanged_for=14.9)
    assert may_take(record, "b", unchanged_for=15)
    assert may_take(record, "a", unchanged_for=0) and may_take(None, "b", 0)
    assert may_take(LeaseRecord("", 1, None, None, 0, "1"), "b", 0)


class Racing(OneLease):
    """The Lease, where another replica writes between this one's read and its write (once)."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: LeaseElector | None = None

    def _interleave(self) -> None:
        other, self.meanwhile = self.meanwhile, None
        if other is not None:
            assert other.try_take() == HELD

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._interleave()
        return super().create(spec)

    def replace(self, spec: dict[str, Any], resource_version: str) -> dict[str, Any]:
        self._interleave()
        return super().replace(spec, resource_version)


def test_of_two_replicas_racing_for_the_lease_only_one_writes_itself_as_holder(clock: Clock) -> None:
    lease = Racing()
    first, second = elector(lease, clock, "a"), elector(lease, clock, "b")
    lease.meanwhile = first  # both read "no Lease"; "a" creates it first
    assert second.try_take() == FAILED and second.step(FAILED) is None and not second.leading
    assert lease.lease["spec"]["holderIdentity"] == "a" and attempt(first) == "lead"
    first.release()
    third = elector(lease, clock, "c")
    lease.meanwhile = second  # both read "no holder"; "b" updates first, "c"'s update is stale
    assert third.try_take() == FAILED
    assert lease.lease["spec"]["holderIdentity"] == "b" and lease.version == 4


def test_a_holder_that_reads_another_holder_stops_acting_at_once(lease: OneLease, clock: Clock) -> None:
    holder = elector(lease, clock, "a")
    assert attempt(holder) == "lead"
    record = read_record(lease.get())
    lease.replace(holding_spec(record, "b", MOMENT), record.resource_version)  # e.g. after a long pause
    assert attempt(holder) == "standby" and not holder.leading


def test_a_holder_cut_off_from_the_apiserver_stops_acting_before_anyone_may_take_over(
    lease: OneLease, clock: Clock
) -> None:
    holder = elector(lease, clock, "a")
    assert attempt(holder) == "lead"
    lease.down = True
    clock.now += RENEW_DEADLINE - 0.5
    assert holder.try_take() == FAILED
    assert holder.step(FAILED) is None and holder.leading
    clock.now += 0.5
    assert holder.step(FAILED) == "standby"
    assert RENEW_DEADLINE < LEASE_DURATION


def test_a_released_lease_is_taken_by_a_standby_at_its_next_try_and_never_again_by_the_releaser(
    lease: OneLease, clock: Clock
) -> None:
    holder, standby = elector(lease, clock, "a"), elector(lease, clock, "b")
    assert attempt(holder) == "lead"
    assert standby.try_take() == OTHER
    holder.release()
    assert not holder.leading and lease.lease["spec"]["holderIdentity"] == ""
    assert attempt(standby) == "lead"  # no clock advance: no waiting out the duration
    assert holder.try_take() == OTHER and lease.lease["spec"]["holderIdentity"] == "b"


def test_release_by_a_replica_that_does_not_hold_the_lease_writes_nothing(
    lease: OneLease, clock: Clock
) -> None:
    holder, standby = elector(lease, clock, "a"), elector(lease, clock, "b")
    assert attempt(holder) == "lead" and standby.try_take() == OTHER
    version = lease.version
    standby.release()
    assert lease.version == version and lease.lease["spec"]["holderIdentity"] == "a"


def test_a_held_lease_is_reported_as_held(lease: OneLease, clock: Clock) -> None:
    holder = elector(lease, clock, "a")
    assert holder.try_take() == HELD and holder.try_take() == HELD


@pytest.mark.parametrize("value", [None, "true", "TRUE", " True "])
def test_the_election_is_on_unless_the_environment_says_false(value: str | None) -> None:
    environ = {} if value is None else {ELECTION_ENV: value}
    assert leader_election(environ) is True


def test_leader_election_false_lets_one_replica_act_alone() -> None:
    assert leader_election({ELECTION_ENV: "false"}) is False


@pytest.mark.parametrize("value", ["no", "0", "", "flase"])
def test_a_misspelt_election_setting_is_refused_never_read_as_off(value: str) -> None:
    with pytest.raises(ValueError, match="ISVC_LEADER_ELECTION must be true or false"):
        leader_election({ELECTION_ENV: value})


def test_the_command_line_turns_the_election_off_and_refuses_a_bad_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ELECTION_ENV, raising=False)
    assert parse_args([]).leader_election is True
    assert parse_args(["--no-leader-election"]).leader_election is False
    monkeypatch.setenv(ELECTION_ENV, "false")
    assert parse_args([]).leader_election is False
    monkeypatch.setenv(ELECTION_ENV, "maybe")
    with pytest.raises(SystemExit) as exited:
        parse_args([])
    assert exited.value.code == 2
    assert "ISVC_LEADER_ELECTION must be true or false, not 'maybe'" in capsys.readouterr().err
