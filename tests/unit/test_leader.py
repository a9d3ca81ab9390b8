"""Leader election: the expiry and renewal arithmetic, and the elector's rounds against an in-memory Lease
store that behaves as the API server does for one object (resourceVersion checks, 404, 409)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from flowrun_operator import leader
from flowrun_operator.leader import (
    ElectionConfig,
    LeaderElector,
    LeaseRecord,
    can_take,
    expired,
    next_record,
    observed_at,
    released_record,
    renew_overdue,
    retry_delay,
)


def record(holder: str = "a", duration: int = 15, renew: str = "t1", transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(holder, duration, "t0", renew, transitions)


# ------------------------------------------------------------------------------------------- pure parts


def test_expiry_counts_from_when_the_record_was_seen_not_from_renew_time() -> None:
    rec = record(duration=15)
    assert not expired(rec, seen_at=100.0, now=114.999)
    assert expired(rec, seen_at=100.0, now=115.0)


def test_an_unchanged_record_keeps_its_first_sighting_and_a_changed_one_restarts_it() -> None:
    first = record(renew="t1")
    assert observed_at(None, 0.0, first, now=10.0) == 10.0
    assert observed_at(first, 10.0, record(renew="t1"), now=20.0) == 10.0
    assert observed_at(first, 10.0, record(renew="t2"), now=20.0) == 20.0  # renewed: alive again


def test_who_may_take_the_lease() -> None:
    held = record(holder="a", duration=15)
    assert can_take(None, 0.0, 0.0, "b")  # no Lease yet
    assert not can_take(held, seen_at=0.0, now=14.9, identity="b")
    assert can_take(held, seen_at=0.0, now=15.0, identity="b")  # expired
    assert can_take(held, seen_at=0.0, now=1.0, identity="a")  # its own: a renewal
    assert can_take(record(holder=""), seen_at=0.0, now=0.0, identity="b")  # released


def test_next_record_keeps_acquire_time_on_renewal_and_counts_transitions() -> None:
    mine = record(holder="a", transitions=3)
    renewed = next_record(mine, "a", 15, "t9")
    assert (renewed.holder, renewed.acquire_time, renewed.renew_time, renewed.transitions) == ("a", "t0", "t9", 3)
    taken = next_record(mine, "b", 15, "t9")
    assert (taken.holder, taken.acquire_time, taken.transitions) == ("b", "t9", 4)
    after_release = next_record(released_record(mine, "t5"), "b", 15, "t9")
    assert after_release.transitions == 3  # a release is not a transition; the next holder's is counted once
    fresh = next_record(None, "a", 15.4, "t9")
    assert (fresh.transitions, fresh.lease_duration_seconds) == (0, 15)


def test_released_record_has_no_holder() -> None:
    rel = released_record(record(holder="a", transitions=2), "t5")
    assert rel.to_spec()["holderIdentity"] is None
    assert (rel.lease_duration_seconds, rel.transitions) == (1, 2)


def test_renew_deadline() -> None:
    assert not renew_overdue(last_renewed=50.0, now=59.99, renew_deadline=10.0)
    assert renew_overdue(last_renewed=50.0, now=60.0, renew_deadline=10.0)


def test_retry_delay_is_jittered_as_client_go() -> None:
    rng = random.Random(7)
    delays = [retry_delay(2.0, rng) for _ in range(2000)]
    assert min(delays) >= 2.0 and max(delays) < 2.0 * 2.2
    assert max(delays) > 4.0 and min(delays) < 2.2  # spread over the whole range


def test_microtime_always_has_six_fraction_digits() -> None:
    from datetime import UTC, datetime

    assert leader.microtime(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"


@pytest.mark.parametrize(
    ("durations", "message"),
    [
        ((10.0, 10.0, 2.0), "must be greater than the renew deadline"),
        ((15.0, 2.0, 2.0), "must be greater than 1.2 x the retry period"),
        ((15.0, 10.0, 0.0), "retry period must be > 0"),
    ],
)
def test_config_rejects_unsafe_durations(durations: tuple[float, float, float], message: str) -> None:
    lease, renew, retry = durations
    with pytest.raises(ValueError, match=message):
        ElectionConfig("ns", "me", lease_duration=lease, renew_deadline=renew, retry_period=retry)


def test_identity_and_namespace_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("POD_NAME", "flowrun-operator-abc12")
    assert leader.default_identity() == "flowrun-operator-abc12"
    monkeypatch.delenv("POD_NAME")
    assert leader.default_identity().endswith(f"_{__import__('os').getpid()}")
    monkeypatch.setenv("POD_NAMESPACE", "flowrun-system")
    assert leader.default_namespace() == "flowrun-system"
    monkeypatch.delenv("POD_NAMESPACE")
    sa = tmp_path / "namespace"
    sa.write_text("from-sa\n")
    monkeypatch.setattr(leader, "SERVICE_ACCOUNT_NAMESPACE", sa)
    assert leader.default_namespace() == "from-sa"
    monkeypatch.setattr(leader, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "missing")
    assert leader.default_namespace() == "default"


# ---------------------------------------------------------------------------------- elector, fake store


class Response:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj).encode()


class LeaseStore:
    """One Lease, with the API server's optimistic concurrency. `fail` makes every call raise."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.fail: BaseException | None = None
        self.writes: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def read_namespaced_lease(self, name: str, namespace: str, **kw: Any) -> Response:
        assert kw["_request_timeout"]
        with self.lock:
            self._check()
            if self.lease is None:
                raise ApiException(status=404, reason="Not Found")
            return Response(self.lease)

    def _store(self, body: dict[str, Any]) -> Response:
        self.version += 1
        self.lease = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        self.writes.append(self.lease["spec"])
        return Response(self.lease)

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **kw: Any) -> Response:
        assert kw["_request_timeout"]
        with self.lock:
            self._check()
            if self.lease is not None:
                raise ApiException(status=409, reason="AlreadyExists")
            return self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any], **kw: Any) -> Response:
        assert kw["_request_timeout"]
        with self.lock:
            self._check()
            assert self.lease is not None
            if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                raise ApiException(status=409, reason="Conflict")
            return self._store(body)

    @property
    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"]["holderIdentity"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(store: LeaseStore, identity: str, clock: Clock, **kw: Any) -> LeaderElector:
    config = ElectionConfig("ns", identity, lease_duration=15, renew_deadline=10, retry_period=2)
    return LeaderElector(config, store, clock=clock, **kw)


def test_first_replica_creates_the_lease_second_waits_for_expiry_as_it_observes_it() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew()
    assert store.holder == "a"
    assert store.lease is not None and store.lease["spec"]["renewTime"].endswith("Z")

    assert not b.try_acquire_or_renew()  # b sees a's record for the first time now
    clock.now += 10
    assert a.try_acquire_or_renew()  # a renews: the record changes
    clock.now += 14
    assert not b.try_acquire_or_renew()  # b first saw the renewed record now: the clock restarts
    clock.now += 14.9
    assert not b.try_acquire_or_renew()
    clock.now += 0.1
    assert b.try_acquire_or_renew()  # 15 s unchanged since b saw it
    assert store.holder == "b"
    assert store.lease is not None and store.lease["spec"]["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew()  # a's next round sees b's valid record
    assert a.holder == "b"


def test_a_stale_write_conflicts() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 16
    # a renews between b's read and b's write: b's write carries the old resourceVersion and loses.
    original = store.read_namespaced_lease

    def read_then_renew(name: str, namespace: str, **kw: Any) -> Response:
        response = original(name, namespace, **kw)
        store.lease["spec"]["renewTime"] = "later"  # type: ignore[index]
        store.version += 1
        store.lease["metadata"]["resourceVersion"] = str(store.version)  # type: ignore[index]
        return response

    store.read_namespaced_lease = read_then_renew  # type: ignore[method-assign]
    assert not b.try_acquire_or_renew()
    assert store.holder == "a"


def test_release_lets_a_standby_take_over_at_once() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    asyncio.run(a.acquire())
    assert a.leading and REGISTRY.get_sample_value("flowrun_leader") == 1
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert store.holder is None and REGISTRY.get_sample_value("flowrun_leader") == 0
    assert b.try_acquire_or_renew()  # no waiting for expiry
    assert store.holder == "b"


def test_errors_fail_the_round_without_raising() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, "a", clock)
    store.fail = TimeoutError("read timed out")
    assert not a.try_acquire_or_renew()
    store.fail = ApiException(status=500, reason="Internal Server Error")
    assert not a.try_acquire_or_renew()
    store.fail = None
    assert a.try_acquire_or_renew()


def test_leader_stops_when_renewals_fail_past_the_deadline() -> None:
    """Real threads and a real clock, small durations: the watchdog calls on_lost about one renew
    deadline after the last successful renewal, not later."""
    store = LeaseStore()
    lost: list[tuple[float, str]] = []
    done = threading.Event()

    def on_lost(why: str) -> None:
        lost.append((time.monotonic(), why))
        done.set()

    config = ElectionConfig("ns", "a", lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)
    a = LeaderElector(config, store, on_lost=on_lost)
    asyncio.run(a.acquire())
    a.start_renewing()
    time.sleep(0.5)
    renewals = len(store.writes)
    assert renewals >= 3  # renewing every retry period
    store.fail = TimeoutError("API server unreachable")
    failed_at = time.monotonic()
    assert done.wait(5)
    at, why = lost[0]
    assert "renew deadline" in why
    assert at - failed_at <= 0.6 + 0.3  # within the deadline of the last success (plus the watchdog's tick)
    assert not a.leading
    a.stop_renewing()


def test_leader_stops_at_once_when_another_replica_holds_the_lease() -> None:
    store = LeaseStore()
    done = threading.Event()
    reasons: list[str] = []
    config = ElectionConfig("ns", "a", lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)
    a = LeaderElector(config, store, on_lost=lambda why: (reasons.append(why), done.set()))
    asyncio.run(a.acquire())
    a.start_renewing()
    with store.lock:
        assert store.lease is not None
        store._store({**store.lease, "spec": {**store.lease["spec"], "holderIdentity": "intruder"}})
    assert done.wait(2)
    assert "held by intruder" in reasons[0]
    a.stop_renewing()
