"""Pod deletion on the embedded control plane honours the termination grace period, as on real nodes.

Without the operator: a bare Job's pod is deleted (directly, or through its Job) and an independent pod watch,
started before the delete, sees the pod stay Running until its grace period has run out, then go. A pod that
already finished goes at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.kube import Cluster, Kubectl, pod_template, wait_for
from support.pods import PodWatcher

pytestmark = pytest.mark.integration

GRACE = 5
# deletionTimestamp has whole seconds, so the pod may go up to a second before delete + GRACE.
EARLIEST = GRACE - 1.2
# Still generous on a loaded 2-core machine: KWOK's delete plus the watch's delivery.
LATEST = GRACE + 5.0


def job(name: str, duration: float) -> dict[str, Any]:
    template = pod_template(duration)
    template["spec"]["terminationGracePeriodSeconds"] = GRACE
    template["metadata"]["labels"] = {"grace-test": name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": template},
    }


@pytest.fixture
def pods(cluster: Cluster, namespace: str) -> Iterator[PodWatcher]:
    with PodWatcher(cluster.kubeconfig, namespace) as watching:
        yield watching
        assert watching.error is None, watching.error


def pod_of(pods: PodWatcher, job_name: str) -> str:
    def find() -> str | None:
        for name in pods.names():
            pod = pods.current(name)
            if pod and (pod["metadata"].get("labels") or {}).get("grace-test") == job_name:
                return name
        return None

    return wait_for(find, timeout=30, message=f"a pod of Job {job_name}")


def wait_running(pods: PodWatcher, name: str) -> None:
    wait_for(
        lambda: (p := pods.current(name)) is not None and (p.get("status") or {}).get("phase") == "Running",
        timeout=30,
        message=f"pod {name} Running",
    )


def removed_at(pods: PodWatcher, name: str, timeout: float) -> float:
    return wait_for(
        lambda: next((e.t for e in pods.history(name) if e.kind == "DELETED"), None),
        timeout=timeout,
        interval=0.05,
        message=f"pod {name} to be removed",
    )


@pytest.mark.parametrize("deleted", ["pod", "job"])
def test_a_deleted_running_pod_runs_out_its_grace_period(
    kubectl: Kubectl, namespace: str, pods: PodWatcher, deleted: str
) -> None:
    kubectl.apply(job("slow", duration=300), namespace)
    name = pod_of(pods, "slow")
    wait_running(pods, name)

    before = time.monotonic()
    if deleted == "pod":
        kubectl("delete", "pod", name, "--wait=false", namespace=namespace)
    else:  # what a background cascade (kubectl's default) does: the Job goes now, its pods through the GC
        kubectl("delete", "job", "slow", "--cascade=background", "--wait=false", namespace=namespace)
    after = time.monotonic()

    # Two seconds on, per the watch: the pod is still there, terminating but Running with its container running.
    time.sleep(max(0.0, after + 2.0 - time.monotonic()))
    pod = pods.current(name)
    assert pod is not None, "the pod vanished within 2 s of its deletion"
    assert pod["metadata"].get("deletionTimestamp"), pod["metadata"]
    assert pod["metadata"].get("deletionGracePeriodSeconds") == GRACE
    assert pod["status"]["phase"] == "Running"
    [container] = pod["status"]["containerStatuses"]
    assert "running" in container["state"], container

    gone = removed_at(pods, name, timeout=LATEST + 5)
    assert gone - before >= EARLIEST, f"removed {gone - before:.2f}s after the delete, before its grace period"
    assert gone - after <= LATEST, f"removed only {gone - after:.2f}s after the delete"
    # Over the whole window the pod was never seen finished: it was Running from the delete until it went.
    window = [e for e in pods.history(name) if e.t >= before and e.kind != "DELETED"]
    assert window and all(e.phase == "Running" for e in window), [(e.kind, e.phase) for e in window]


def test_a_deleted_finished_pod_goes_at_once(kubectl: Kubectl, namespace: str, pods: PodWatcher) -> None:
    kubectl.apply(job("quick", duration=0), namespace)
    name = pod_of(pods, "quick")
    wait_for(
        lambda: (p := pods.current(name)) is not None and (p.get("status") or {}).get("phase") == "Succeeded",
        timeout=30,
        message=f"pod {name} Succeeded",
    )
    kubectl("delete", "job", "quick", "--cascade=background", "--wait=false", namespace=namespace)
    after = time.monotonic()
    gone = removed_at(pods, name, timeout=LATEST + 5)
    assert gone - after < EARLIEST, f"a finished pod took {gone - after:.2f}s to go, as if it ran out its grace"
