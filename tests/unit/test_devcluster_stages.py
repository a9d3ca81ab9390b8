"""The KWOK pod stages as KWOK v0.8 plays them, evaluated without a cluster.

The jq expressions in the rendered ``kwok --config`` are run with a real jq (the ``jq`` package, libjq), and the
surrounding rules are KWOK's own (``pkg/utils/expression``: a query's non-null outputs, an error meaning no
output; ``pkg/utils/lifecycle``: a duration read from a time string is that time minus now). Which stage a pod
matches and how long KWOK waits before playing it follow from that; the integration tests check the same on
the embedded control plane.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jq  # type: ignore[import-not-found]  # libjq bindings without type stubs
import pytest
import yaml

from flowrun_operator.devcluster.stages import kwok_config

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _pod_stages() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all(kwok_config()))
    return {d["metadata"]["name"]: d for d in docs[1:] if d["spec"]["resourceRef"]["kind"] == "Pod"}


def _query(expression: str, value: Any) -> list[Any]:
    """KWOK's ``Query.Execute``: the non-null outputs; a jq error (e.g. iterating null) yields none."""
    try:
        outputs = jq.compile(expression).input_value(value).all()
    except ValueError:
        return []
    return [o for o in outputs if o is not None]


def _matches(stage: dict[str, Any], pod: dict[str, Any]) -> bool:
    for requirement in stage["spec"]["selector"]["matchExpressions"]:
        found = _query(requirement["key"], pod)
        values = requirement.get("values") or []
        operator = requirement["operator"]
        if operator == "In":
            ok = any(isinstance(v, str) and v in values for v in found)
        elif operator == "NotIn":
            ok = not any(isinstance(v, str) and v in values for v in found)
        elif operator == "Exists":
            ok = bool(found)
        elif operator == "DoesNotExist":
            ok = not found
        else:
            raise AssertionError(f"operator {operator!r} not modelled")
        if not ok:
            return False
    return True


def _go_duration(text: str) -> timedelta:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return timedelta(seconds=float(text[: -len(suffix)]) * units[suffix])
    raise ValueError(text)


def _delay(stage: dict[str, Any], pod: dict[str, Any], now: datetime) -> timedelta:
    """KWOK's ``Stage.Delay`` for a stage without jitter; a stage without ``delay`` plays at once."""
    delay = stage["spec"].get("delay")
    if delay is None:
        return timedelta(0)
    default = timedelta(milliseconds=delay.get("durationMilliseconds", 0))
    source = delay.get("durationFrom")
    if source is None:
        return default
    found = _query(source["jq"]["expression"], pod)
    if not found or not isinstance(found[0], str):
        return default
    if found[0] == "":
        return timedelta(0)
    try:
        return datetime.fromisoformat(found[0].replace("Z", "+00:00")) - now
    except ValueError:
        return _go_duration(found[0])


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod(phase: str, *, grace: int = 5, deleted_ago: float | None = None, sim: str = "2s") -> dict[str, Any]:
    ready = "True" if phase == "Running" else "False"
    pod: dict[str, Any] = {
        "metadata": {
            "name": "p",
            "annotations": {"flowrun.io/sim-duration": sim, "flowrun.io/sim-exit-code": "0"},
            "finalizers": ["batch.kubernetes.io/job-tracking"],
        },
        "spec": {
            "nodeName": "kwok-node-0",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "main", "image": "busybox:1.36"}],
        },
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
    }
    if deleted_ago is not None:
        # What the API server stores on a graceful delete: the delete's time plus the grace period.
        pod["metadata"]["deletionTimestamp"] = _stamp(NOW - timedelta(seconds=deleted_ago) + timedelta(seconds=grace))
        pod["metadata"]["deletionGracePeriodSeconds"] = grace
    return pod


def _matching(pod: dict[str, Any]) -> list[str]:
    return sorted(name for name, stage in _pod_stages().items() if _matches(stage, pod))


def test_live_pods_follow_the_ready_and_finish_stages() -> None:
    assert _matching(_pod("Pending")) == ["pod-ready"]
    running = _pod("Running", sim="2s")
    assert _matching(running) == ["pod-finish"]
    assert _delay(_pod_stages()["pod-finish"], running, NOW) == timedelta(seconds=2)


@pytest.mark.parametrize("phase", ["Running", "Pending"])
def test_a_deleted_unfinished_pod_is_removed_only_when_its_grace_period_ends(phase: str) -> None:
    stages = _pod_stages()
    just_deleted = _pod(phase, grace=5, deleted_ago=0)
    # Only the delete stage applies: a terminating pod neither becomes ready nor finishes meanwhile.
    assert _matching(just_deleted) == ["pod-delete"]
    assert _delay(stages["pod-delete"], just_deleted, NOW) == timedelta(seconds=5)

    # Re-evaluated on a later change of the pod (say the Job controller removing its finalizer), KWOK aims at
    # the same instant, not a fresh full grace period.
    two_seconds_on = _pod(phase, grace=5, deleted_ago=2)
    two_seconds_on["metadata"]["finalizers"] = []
    assert _delay(stages["pod-delete"], two_seconds_on, NOW) == timedelta(seconds=3)

    overdue = _pod(phase, grace=5, deleted_ago=9)
    assert _delay(stages["pod-delete"], overdue, NOW) <= timedelta(0)


def test_a_long_grace_period_is_honoured_in_full() -> None:
    pod = _pod("Running", grace=30, deleted_ago=0)
    assert _delay(_pod_stages()["pod-delete"], pod, NOW) == timedelta(seconds=30)


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_deleted_finished_pod_is_removed_at_once(phase: str) -> None:
    pod = _pod(phase, grace=30, deleted_ago=0)
    assert _matching(pod) == ["pod-delete"]
    assert _delay(_pod_stages()["pod-delete"], pod, NOW) == timedelta(0)


def test_the_delete_stage_deletes() -> None:
    assert _pod_stages()["pod-delete"]["spec"]["next"] == {"delete": True}
