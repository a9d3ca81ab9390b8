"""The engine's view keeps little per run: a digest of the stored status instead of the raw object, one copy
of a Pod template shared by the runs that use it. These tests pin what that must not change."""

from __future__ import annotations

import gc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flowrun_operator.engine.view import (
    EMPTY_SHARE,
    EMPTY_STATUS,
    NamespaceView,
    PackedSpec,
    Share,
    parse_spec,
    parse_status,
)


def waiting_status(position: int) -> dict[str, Any]:
    return {
        "phase": "Pending",
        "observedGeneration": 1,
        "waitingFor": [{"name": "team", "position": position, "inUse": 0, "limit": 0}],
    }


PENDING = waiting_status(3)
WRITTEN = {"phase": "Submitted", "observedGeneration": 1}


def run(name: str, version: int, status: dict[str, Any] | None = None, command: str = "true") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"team": "a"},
        },
        "spec": {
            "flow": "etl",
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "command": [command]}]}},
        },
        "status": status or {},
    }


def test_an_unchanged_status_in_another_key_order_is_not_a_change() -> None:
    view = NamespaceView("ns")
    assert view.put_run(run("a", 1, PENDING))
    reordered = dict(reversed(list(PENDING.items())))
    assert not view.put_run(run("a", 2, reordered))
    assert view.runs["a"].resource_version == 2
    assert view.put_run(run("a", 3, waiting_status(1)))
    assert view.runs["a"].snapshot.status.waiting_for[0].position == 1


def pending_run_with_a_write_in_flight() -> NamespaceView:
    view = NamespaceView("ns")
    view.put_run(run("a", 1, PENDING))
    view.assume_status("a", WRITTEN)
    assert view.run_phase("a") == "Submitted"
    return view


def test_a_failed_write_falls_back_to_the_stored_status() -> None:
    view = pending_run_with_a_write_in_flight()
    view.settle_status("a", WRITTEN, None)
    assert view.run_phase("a") == "Pending"
    assert view.runs["a"].snapshot.status.waiting_for[0].position == 3


def test_a_status_stored_under_an_outstanding_write_is_the_fallback() -> None:
    view = pending_run_with_a_write_in_flight()
    assert not view.put_run(run("a", 2, waiting_status(1)))  # decisions still see the write in flight
    assert view.run_phase("a") == "Submitted"
    view.settle_status("a", WRITTEN, None)
    assert view.run_phase("a") == "Pending"
    assert view.runs["a"].snapshot.status.waiting_for[0].position == 1


def test_the_echo_of_a_landed_write_is_not_a_change() -> None:
    view = pending_run_with_a_write_in_flight()
    assert not view.put_run(run("a", 2, dict(WRITTEN)))
    record = view.runs["a"]
    assert record.assumed_status is None and record.stored_fallback is None
    assert view.run_phase("a") == "Submitted"
    assert not view.put_run(run("a", 3, dict(WRITTEN)))


def test_equal_templates_are_kept_once_and_go_with_their_last_run() -> None:
    view = NamespaceView("ns")
    view.put_run(run("a", 1))
    view.put_run(run("b", 2))
    view.put_run(run("c", 3, command="false"))
    spec_a, spec_b, spec_c = (view.runs[n].snapshot.spec for n in "abc")
    assert spec_a is not None and spec_b is not None and spec_c is not None
    assert spec_a.template is spec_b.template
    assert spec_a.template is not spec_c.template
    assert spec_c.template is not None and spec_c.template.spec["containers"][0]["command"] == ["false"]
    del spec_a, spec_b, spec_c
    view.drop_run("a")
    view.drop_run("b")
    view.drop_run("c")
    gc.collect()
    fresh, _ = parse_spec(run("d", 4)["spec"])
    again, _ = parse_spec(run("e", 5)["spec"])
    assert fresh is not None and again is not None and fresh.template is again.template


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["leave", "join"]), st.integers(0, 10**6), st.integers(0, 2)), max_size=80))
def test_stale_places_are_exactly_the_halved_ones(steps: list[tuple[str, int, int]]) -> None:
    """After any sequence of departures (anywhere in the line) and arrivals (any priority), the runs reported
    stale are exactly those whose written place is at least twice their place now, as a walk would find."""
    view = NamespaceView("ns")
    view.put_limit(
        {
            "metadata": {"name": "team", "uid": "l", "resourceVersion": "1", "generation": 1},
            "spec": {"limit": 0, "selector": {"matchLabels": {"team": "a"}}},
        }
    )
    limit = view.limits["team"]
    counter = 0

    def join(priority: int) -> None:
        nonlocal counter
        counter += 1
        name = f"r{counter:04d}"
        view.put_run(run(name, counter + 1))
        entry = (-priority, float(counter), name)
        view.set_share(name, Share(waiting=frozenset({("team", entry)})))
        view.assume_status(name, waiting_status(limit.position(entry)))

    for _ in range(40):
        join(0)
    for action, pick, priority in steps:
        if action == "join" or not limit.waiting:
            join(priority)
        else:
            _, _, name = limit.waiting[pick % len(limit.waiting)]
            view.set_share(name, EMPTY_SHARE)
        expected = set()
        for position, (_, _, name) in enumerate(limit.waiting, start=1):
            written = view.runs[name].snapshot.status.waiting_for[0].position
            if position * 2 <= written:
                expected.add((position, name))
        found = {(position, name) for position, name, _ in view.stale_places("team")}
        assert found == expected
        for position, name in found:  # rewritten, as the engine's refresh does
            view.assume_status(name, waiting_status(position))


FULL_PENDING = {
    "phase": "Pending",
    "observedGeneration": 1,
    "attempt": 1,
    "message": "waiting for team: 2/2 in use, 3rd in line",
    "conditions": [
        {
            "type": "Admitted",
            "status": "False",
            "reason": "Pending",
            "message": "waiting for team: 2/2 in use, 3rd in line",
            "lastTransitionTime": "2026-01-01T00:00:01Z",
            "observedGeneration": 1,
        },
        {"type": "Running", "status": "False", "reason": "Pending", "lastTransitionTime": "2026-01-01T00:00:01Z"},
    ],
    "waitingFor": [{"name": "team", "position": 3, "inUse": 2, "limit": 2}],
}


def test_a_waiting_runs_status_is_packed_and_reads_back_unchanged() -> None:
    view = NamespaceView("ns")
    view.put_run(run("a", 1, FULL_PENDING))
    record = view.runs["a"]
    assert record.packed_status is not None and record.base.status == EMPTY_STATUS
    assert len(record.packed_status) < 1000
    spec, _ = parse_spec(run("a", 1)["spec"])
    # The spec is packed too, its template kept by reference (shared with other runs).
    assert record.packed_spec is not None and record.base.spec is None
    assert record.spec == spec and record.snapshot.spec == spec
    assert record.snapshot.spec is not None and record.spec is not None
    assert record.snapshot.spec.template is record.spec.template is record.packed_spec.templates[0]
    parsed = parse_status(FULL_PENDING)
    assert record.status == parsed and record.snapshot.status == parsed
    assert record.status_api() == parsed.to_api()
    assert view.run_phase("a") == "Pending" and not record.finished
    # Admitted: kept parsed (a handful of runs per limit, read on every event of their Jobs).
    view.assume_status("a", WRITTEN)
    assert record.packed_status is None and record.status == parse_status(WRITTEN)
    assert record.packed_spec is None and record.base.spec == spec
    assert record.status_api() == parse_status(WRITTEN).to_api()
    # The write fails: back to the stored status, packed again.
    view.settle_status("a", WRITTEN, None)
    assert record.packed_status is not None and record.status == parsed
    assert record.packed_spec is not None and record.spec == spec


@given(
    position=st.integers(min_value=1, max_value=10**6),
    message=st.text(max_size=80),
    phase=st.sampled_from(["Pending", "Scheduled", "Running", "Succeeded"]),
)
@settings(max_examples=100, deadline=None)
def test_packed_or_not_a_status_reads_back_as_parsed(position: int, message: str, phase: str) -> None:
    status = {**FULL_PENDING, "phase": phase, "message": message}
    status["waitingFor"] = [{"name": "team", "position": position, "inUse": 2, "limit": 2}]
    view = NamespaceView("ns")
    view.put_run(run("a", 1, status))
    record = view.runs.get("a")
    parsed = parse_status(status)
    if phase == "Succeeded":
        assert record is None and view.run_phase("a") == "Succeeded"  # straight into history
        return
    assert record is not None
    assert (record.packed_status is not None) == (phase in ("Pending", "Scheduled"))
    assert record.status == parsed and record.status_api() == parsed.to_api()


_template = st.fixed_dictionaries(
    {"spec": st.fixed_dictionaries({"containers": st.just([{"name": "main", "image": "busybox"}])})},
    optional={"metadata": st.fixed_dictionaries({"labels": st.dictionaries(st.sampled_from("abc"), st.just("x"))})},
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {"flow": "etl", "parameters": draw(st.dictionaries(st.text(max_size=8), _json, max_size=3))}
    if draw(st.booleans()):
        raw["template"] = draw(_template)
    else:
        names = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True))
        raw["tasks"] = [
            {
                "name": name,
                "template": draw(_template),
                "dependsOn": names[:i][-1:],
                "tags": draw(st.lists(st.sampled_from(["t", "u"]), max_size=2, unique=True)),
                "retries": draw(st.integers(0, 3)),
            }
            for i, name in enumerate(names)
        ]
    for key, values in (
        ("priority", st.integers(-1000, 1000)),
        ("retries", st.integers(0, 5)),
        ("cancel", st.booleans()),
        ("ttlSecondsAfterFinished", st.integers(0, 10**6)),
        ("scheduledStart", st.sampled_from(["2026-12-03T10:00:00Z", "2026-12-03T10:00:00.5+02:00"])),
        ("timeoutSeconds", st.integers(1, 10**5)),
    ):
        if draw(st.booleans()):
            raw[key] = draw(values)
    return raw


@given(raw=specs())
@settings(max_examples=200, deadline=None)
def test_a_packed_spec_unpacks_equal_with_its_templates_shared(raw: dict[str, Any]) -> None:
    spec, error = parse_spec(raw)
    assert error is None and spec is not None
    packed = PackedSpec.of(spec)
    unpacked = packed.unpack()
    assert unpacked == spec
    assert unpacked.template is spec.template
    assert [t.template for t in unpacked.tasks or ()] == [t.template for t in spec.tasks or ()]
    assert all(a.template is b.template for a, b in zip(unpacked.tasks or (), spec.tasks or (), strict=True))
    assert b"template" not in packed.json  # templates are kept by reference, never copied into the JSON


def test_a_new_status_of_the_same_spec_carries_the_packed_spec_over_unparsed() -> None:
    view = NamespaceView("ns")
    first = run("a", 1, waiting_status(3))
    first["spec"]["priority"] = 7
    view.put_run(first)
    packed = view.runs["a"].packed_spec
    assert packed is not None and view.runs["a"].priority == 7
    moved = run("a", 2, waiting_status(2))
    moved["spec"]["priority"] = 7
    assert view.put_run(moved)
    record = view.runs["a"]
    assert record.packed_spec is packed and record.priority == 7 and record.status.waiting_for[0].position == 2
    spec = record.spec
    assert spec is not None and spec.priority == 7
