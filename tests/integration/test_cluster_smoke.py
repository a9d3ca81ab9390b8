"""Smoke tests of the cluster under test (embedded control plane or USE_EXISTING_CLUSTER=1), all through the
real kubectl: Jobs succeed, fail, run for a while, and are garbage-collected with their owner."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from support.kube import Cluster, Kubectl, pod_template, wait_for

pytestmark = pytest.mark.integration

# Generous for real clusters (image pulls); on the embedded control plane everything takes seconds.
TIMEOUT = 120.0


def job_manifest(name: str, template: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": template, **spec},
    }


def true_conditions(obj: dict[str, Any]) -> set[str]:
    return {c["type"] for c in obj.get("status", {}).get("conditions") or [] if c.get("status") == "True"}


def get_job(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    job: dict[str, Any] = kubectl.json("get", "job", name, namespace=namespace)
    return job


def job_pods(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kubectl.json("get", "pods", "-l", f"job-name={name}", namespace=namespace)["items"]
    return pods


def wait_job_condition(kubectl: Kubectl, namespace: str, name: str, condition: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = get_job(kubectl, namespace, name)
        return job if condition in true_conditions(job) else None

    return wait_for(reached, timeout=TIMEOUT, interval=0.2, message=f"Job {name} condition {condition}")


def terminated_state(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod["status"].get("containerStatuses") or []
    assert len(statuses) == 1, pod["status"]
    state: dict[str, Any] = statuses[0]["state"]
    assert "terminated" in state, state
    terminated: dict[str, Any] = state["terminated"]
    return terminated


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_server_version(cluster: Cluster, kubectl: Kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]
    if not cluster.is_kwok:
        assert version["major"] == "1"
        pytest.skip(f"existing cluster runs {version['gitVersion']}; the pinned version is checked on KWOK only")
    assert version["gitVersion"] == "v1.36.3"
    assert (version["major"], version["minor"]) == ("1", "36")


def test_fake_node_is_ready(cluster: Cluster, kubectl: Kubectl) -> None:
    if not cluster.is_kwok:
        pytest.skip("only the embedded control plane has KWOK nodes")
    node = kubectl.json("get", "node", "kwok-node-0")
    assert "Ready" in true_conditions(node)
    assert node["metadata"]["labels"]["type"] == "kwok"
    assert node["status"]["allocatable"]["cpu"] == "64"
    assert not node["spec"].get("taints"), node["spec"]


def test_job_succeeds(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(job_manifest("ok", pod_template()), namespace=namespace)

    job = wait_job_condition(kubectl, namespace, "ok", "Complete")

    assert job["status"].get("succeeded") == 1
    assert "Failed" not in true_conditions(job)
    (pod,) = job_pods(kubectl, namespace, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    assert terminated_state(pod)["exitCode"] == 0


def test_job_fails_with_exit_code(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(job_manifest("bad", pod_template(exit_code=3)), namespace=namespace)

    job = wait_job_condition(kubectl, namespace, "bad", "Failed")

    assert "Complete" not in true_conditions(job)
    assert job["status"].get("failed") == 1
    (pod,) = job_pods(kubectl, namespace, "bad")
    assert pod["status"]["phase"] == "Failed"
    terminated = terminated_state(pod)
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"


def test_pod_runs_for_its_duration_before_completing(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(job_manifest("slow", pod_template(duration=2)), namespace=namespace)

    def running_and_ready() -> dict[str, Any] | None:
        for pod in job_pods(kubectl, namespace, "slow"):
            if pod["status"].get("phase") == "Running" and "Ready" in true_conditions(pod):
                return pod
        return None

    pod = wait_for(running_and_ready, timeout=TIMEOUT, message="the Job's pod Running and Ready")
    assert pod["spec"]["nodeName"], "the pod was bound to a node by the scheduler"
    assert "Complete" not in true_conditions(get_job(kubectl, namespace, "slow"))
    assert get_job(kubectl, namespace, "slow")["status"].get("active") == 1

    wait_job_condition(kubectl, namespace, "slow", "Complete")
    (pod,) = job_pods(kubectl, namespace, "slow")
    terminated = terminated_state(pod)
    assert terminated["exitCode"] == 0
    ran_for = parse_time(terminated["finishedAt"]) - parse_time(terminated["startedAt"])
    assert ran_for >= dt.timedelta(seconds=1), terminated  # 2 s, at one-second timestamp resolution


def test_deleting_the_owner_garbage_collects_the_job(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "configmap", "owner", namespace=namespace)
    owner = kubectl.json("get", "configmap", "owner", namespace=namespace)
    job = job_manifest("owned", pod_template(duration=300))
    job["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    kubectl.apply(job, namespace=namespace)
    wait_for(
        lambda: any(p["status"].get("phase") == "Running" for p in job_pods(kubectl, namespace, "owned")),
        timeout=TIMEOUT,
        message="the owned Job's pod Running",
    )

    kubectl("delete", "configmap", "owner", namespace=namespace)

    wait_for(
        lambda: kubectl("get", "job", "owned", namespace=namespace, check=False).returncode != 0,
        timeout=TIMEOUT,
        message="Job 'owned' garbage-collected after its owner was deleted",
    )
    missing = kubectl("get", "job", "owned", namespace=namespace, check=False)
    assert "NotFound" in missing.stderr, missing.stderr
    wait_for(
        lambda: not job_pods(kubectl, namespace, "owned"),
        timeout=TIMEOUT,
        message="the owned Job's running pod deleted",
    )


def test_many_pods_at_once(cluster: Cluster, kubectl: Kubectl, namespace: str) -> None:
    if not cluster.is_kwok:
        pytest.skip("sized for the KWOK node's capacity")
    count = 100
    kubectl.apply(
        job_manifest("wide", pod_template(duration=1), completions=count, parallelism=count),
        namespace=namespace,
    )

    job = wait_job_condition(kubectl, namespace, "wide", "Complete")

    assert job["status"]["succeeded"] == count
