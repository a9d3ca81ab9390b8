"""A cancelled run's slot is free only once its pods are gone, counted on the pods themselves.

On real nodes a deleted pod's containers may run for the whole termination grace period; the embedded control
plane plays that too (see ``flowrun_operator.devcluster.stages``). With a ConcurrencyLimit of 1, run ``first``
running with a grace period of several seconds and ``second``, ``third`` waiting, ``first`` is cancelled. An
independent pod watch, started before anything else exists, counts at every instant the pods of these runs
that hold a slot (Pending or Running, terminating ones included): never more than one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support.flowruns import flowrun, selector_limit, wait_phase
from support.kube import Cluster, Kubectl, wait_for
from support.operator import OperatorProcess
from support.pods import PodWatcher, holds_slot

pytestmark = pytest.mark.integration

RUNS = ("first", "second", "third")
GRACE = 4
RUN_LABEL = "flowrun.io/run"


def run_of(pod: dict[str, Any]) -> str:
    return str((pod["metadata"].get("labels") or {}).get(RUN_LABEL) or "")


def running(pods: PodWatcher, run: str) -> bool:
    found = (pods.current(name) for name in pods.holders("serial"))
    return any(p is not None and run_of(p) == run and p["status"].get("phase") == "Running" for p in found)


@pytest.fixture
def pods(cluster: Cluster, namespace: str) -> Iterator[PodWatcher]:
    with PodWatcher(cluster.kubeconfig, namespace, {"serial": lambda pod: run_of(pod) in RUNS}) as watching:
        yield watching
        assert watching.error is None, watching.error


def test_cancel_frees_the_slot_only_when_the_pod_is_gone(
    pods: PodWatcher, operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(selector_limit("serial", {"team": "a"}, 1), namespace)
    first = flowrun("first", duration=300, labels={"team": "a"})
    first["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = GRACE
    kubectl.apply(first, namespace)
    wait_phase(kubectl, namespace, "first", "Running")
    wait_for(lambda: running(pods, "first"), timeout=30, message="the pod of first Running")
    kubectl.apply([flowrun(name, duration=1, labels={"team": "a"}) for name in RUNS[1:]], namespace)
    for name in RUNS[1:]:
        wait_phase(kubectl, namespace, name, "Pending")

    kubectl("patch", "flowrun", "first", "--type=merge", "-p", '{"spec":{"cancel":true}}', namespace=namespace)
    wait_phase(kubectl, namespace, "first", "Cancelled", timeout=60)
    wait_phase(kubectl, namespace, "second", "Succeeded", timeout=90)
    wait_phase(kubectl, namespace, "third", "Succeeded", timeout=90)
    wait_for(lambda: not pods.holders("serial"), timeout=30, message="no pod of the runs holding a slot")

    timeline = [(round(t, 2), n) for t, group, n in pods.holders_timeline if group == "serial"]
    assert pods.max_seen["serial"] <= 1, f"pods holding a slot of a limit of 1 over time: {timeline}"

    # Every run's pod was seen, and the waiting runs ran one after the other, in their order.
    started: dict[str, float] = {}
    finished: dict[str, str] = {}
    for event in pods.events:
        run = run_of(event.pod)
        if event.phase == "Running":
            started.setdefault(run, event.t)
        if not holds_slot(event.pod):
            finished[run] = event.phase
    assert set(started) == set(RUNS), started
    assert started["first"] < started["second"] < started["third"]
    assert finished == {"second": "Succeeded", "third": "Succeeded"}
    # first's pod never finished by itself: it ran out its grace period and was removed while Running.
    assert [e.kind for e in pods.events if run_of(e.pod) == "first"][-1] == "DELETED"
