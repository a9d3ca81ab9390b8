"""ConcurrencyLimits on the real control plane. An independent watcher (its own watch stream on Jobs)
checks that no limit is exceeded at any instant of each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support.flowruns import flowrun, get, job_of, jobs, selector_limit, status, wait_phase
from support.kube import Cluster, Kubectl, wait_for
from support.operator import JobWatcher, OperatorProcess

pytestmark = pytest.mark.integration


def labelled(key: str, value: str) -> Any:
    return lambda job: job["metadata"].get("labels", {}).get(key) == value


@pytest.fixture
def watcher(cluster: Cluster, namespace: str) -> Iterator[JobWatcher]:
    with JobWatcher(
        cluster.kubeconfig,
        namespace,
        {"team-a": labelled("team", "a"), "gpu": labelled("gpu", "true"), "team-b": labelled("team", "b")},
    ) as watching:
        yield watching
        assert watching.error is None, watching.error


def all_phases(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    items = kubectl.json("get", "flowruns", namespace=namespace)["items"]
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in items}


def wait_all(kubectl: Kubectl, namespace: str, names: list[str], phase: str, timeout: float = 120) -> None:
    wait_for(
        lambda: all(all_phases(kubectl, namespace).get(n) == phase for n in names),
        timeout=timeout,
        message=f"all of {names} to be {phase}",
    )


def limit_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get(kubectl, namespace, name, "concurrencylimit").get("status") or {}
    return found


def test_quota_holds_and_waiting_runs_start_by_themselves(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, watcher: JobWatcher
) -> None:
    kubectl.apply(selector_limit("team-a", {"team": "a"}, 2), namespace)
    names = [f"a{i}" for i in range(6)]
    kubectl.apply([flowrun(n, duration=1.5, labels={"team": "a"}) for n in names], namespace)
    pending = wait_for(
        lambda: [n for n, p in all_phases(kubectl, namespace).items() if p == "Pending"] or None,
        timeout=30,
        message="some runs pending",
    )
    st = status(kubectl, namespace, pending[0])
    admitted = {c["type"]: c for c in st["conditions"]}["Admitted"]
    assert admitted["status"] == "False" and admitted["reason"] == "ConcurrencyLimitReached"
    assert "waiting for team-a: 2/2 in use" in st["message"]
    assert st["waitingFor"][0]["name"] == "team-a" and st["waitingFor"][0]["position"] >= 1
    cl = wait_for(lambda: s if (s := limit_status(kubectl, namespace, "team-a")).get("inUse") == 2 else None, 30)
    assert len(cl["active"]) == 2
    wait_all(kubectl, namespace, names, "Succeeded")
    assert watcher.max_seen["team-a"] == 2
    final = wait_for(lambda: s if (s := limit_status(kubectl, namespace, "team-a")).get("inUse") == 0 else None, 30)
    assert final["pending"] == 0 and final.get("active", []) == []
    assert {c["type"]: c["reason"] for c in final["conditions"]}["Ready"] == "Enforced"
    table = kubectl("get", "cl", namespace=namespace).stdout.splitlines()[0].split()
    assert table[:4] == ["NAME", "LIMIT", "IN-USE", "PENDING"]


def test_priority_then_fifo_order(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, watcher: JobWatcher
) -> None:
    kubectl.apply(selector_limit("serial", {"team": "a"}, 1), namespace)
    kubectl.apply(flowrun("blocker", duration=3, labels={"team": "a"}), namespace)
    wait_phase(kubectl, namespace, "blocker", "Running")
    # created one by one, so creation order is well defined
    for name, priority in [("low-1", 0), ("low-2", 0), ("high", 10), ("low-3", 0), ("mid", 5)]:
        kubectl.apply(flowrun(name, duration=0.3, labels={"team": "a"}, priority=priority), namespace)
        wait_phase(kubectl, namespace, name, "Pending")
    assert status(kubectl, namespace, "low-1")["waitingFor"][0]["position"] >= 1
    wait_all(kubectl, namespace, ["high", "mid", "low-1", "low-2", "low-3"], "Succeeded", timeout=120)
    order = [n.rsplit("-", 2)[0] for n in watcher.created_order]  # <run>-<attempt>-<uid digest>
    assert order == ["blocker", "high", "mid", "low-1", "low-2", "low-3"]
    assert watcher.max_seen["team-a"] == 1


def test_run_matching_two_limits_needs_both(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, watcher: JobWatcher
) -> None:
    kubectl.apply([selector_limit("team-a", {"team": "a"}, 2), selector_limit("gpu", {"gpu": "true"}, 1)], namespace)
    kubectl.apply(flowrun("gpu-b", duration=3, labels={"team": "b", "gpu": "true"}), namespace)
    wait_phase(kubectl, namespace, "gpu-b", "Running")
    # both-a needs team-a (free) and gpu (taken); plain-a needs only team-a and is not held up
    kubectl.apply(flowrun("both-a", duration=0.5, labels={"team": "a", "gpu": "true"}), namespace)
    st = wait_phase(kubectl, namespace, "both-a", "Pending")
    assert [w["name"] for w in st["waitingFor"]] == ["gpu"]
    kubectl.apply(flowrun("plain-a", duration=0.5, labels={"team": "a"}), namespace)
    wait_phase(kubectl, namespace, "plain-a", "Succeeded")
    assert all_phases(kubectl, namespace)["both-a"] in ("Pending", "Submitted", "Running")
    wait_all(kubectl, namespace, ["gpu-b", "both-a"], "Succeeded")
    assert watcher.max_seen["gpu"] == 1
    assert watcher.max_seen["team-a"] <= 2


def test_limit_raised_lowered_and_deleted_while_runs_wait(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, watcher: JobWatcher
) -> None:
    kubectl.apply(selector_limit("team-a", {"team": "a"}, 0), namespace)  # paused
    names = [f"w{i}" for i in range(4)]
    kubectl.apply([flowrun(n, duration=4, labels={"team": "a"}) for n in names], namespace)
    wait_all(kubectl, namespace, names, "Pending", timeout=30)
    assert all(jobs(kubectl, namespace, n) == [] for n in names)

    kubectl("patch", "cl", "team-a", "--type=merge", "-p", '{"spec":{"limit":3}}', namespace=namespace)
    wait_for(lambda: watcher.count("team-a") == 3, timeout=10, message="three admitted after raising the limit")

    kubectl("patch", "cl", "team-a", "--type=merge", "-p", '{"spec":{"limit":1}}', namespace=namespace)
    cl = wait_for(
        lambda: s if (s := limit_status(kubectl, namespace, "team-a")).get("observedGeneration") == 3 else None, 10
    )
    assert cl["inUse"] == 3  # lowering never kills running work
    assert {c["type"]: c["reason"] for c in cl["conditions"]}["Ready"] == "OverLimit"
    assert watcher.count("team-a") == 3

    assert watcher.max_seen["team-a"] == 3  # the raised limit held while it existed
    kubectl("delete", "cl", "team-a", namespace=namespace)
    # with the limit gone, the last waiting run starts at once, without waiting for a slot
    wait_for(lambda: jobs(kubectl, namespace, "w3") or None, timeout=10, message="w3 admitted after limit deletion")
    wait_all(kubectl, namespace, names, "Succeeded", timeout=60)


def test_slot_freed_by_deleting_a_run_or_its_job(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, watcher: JobWatcher
) -> None:
    kubectl.apply(selector_limit("team-a", {"team": "a"}, 1), namespace)
    kubectl.apply(flowrun("first", duration=300, labels={"team": "a"}), namespace)
    wait_phase(kubectl, namespace, "first", "Running")
    kubectl.apply([flowrun(n, duration=300, labels={"team": "a"}) for n in ("second", "third")], namespace)
    wait_phase(kubectl, namespace, "third", "Pending")
    kubectl("delete", "job", job_of(kubectl, namespace, "first"), "--wait=false", namespace=namespace)
    wait_phase(kubectl, namespace, "first", "Failed")
    wait_phase(kubectl, namespace, "second", "Running")
    kubectl("delete", "flowrun", "second", "--wait=false", namespace=namespace)
    wait_phase(kubectl, namespace, "third", "Running", timeout=60)
    kubectl("patch", "flowrun", "third", "--type=merge", "-p", '{"spec":{"cancel":true}}', namespace=namespace)
    wait_phase(kubectl, namespace, "third", "Cancelled")
    assert watcher.max_seen["team-a"] == 1


def test_operator_killed_during_a_burst_never_over_admits(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, watcher: JobWatcher
) -> None:
    kubectl.apply(selector_limit("team-a", {"team": "a"}, 3), namespace)
    names = [f"b{i:02d}" for i in range(15)]
    kubectl.apply([flowrun(n, duration=1, labels={"team": "a"}) for n in names], namespace)
    for _ in range(3):
        wait_for(lambda: watcher.count("team-a") >= 1, timeout=30, message="admissions in progress")
        operator.kill()
        operator.start()
    wait_all(kubectl, namespace, names, "Succeeded", timeout=180)
    assert watcher.max_seen["team-a"] == 3
    for name in names:
        assert [j["metadata"]["name"] for j in jobs(kubectl, namespace, name)] == [job_of(kubectl, namespace, name)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"selector": {"matchLabels": {"a": "b"}}, "limit": -1}, "spec.limit"),
        ({"selector": {"matchLabels": {"a": "b"}}, "tag": "x", "limit": 1}, "exactly one of spec.selector or spec.tag"),
        ({"limit": 1}, "exactly one of spec.selector or spec.tag"),
        ({"tag": "x"}, "spec.limit"),
    ],
    ids=["negative", "both", "neither", "no-limit"],
)
def test_bad_limits_are_refused(crds: None, kubectl: Kubectl, namespace: str, spec: dict, expected: str) -> None:
    obj = {"apiVersion": "flowrun.io/v1alpha1", "kind": "ConcurrencyLimit", "metadata": {"name": "bad"}, "spec": spec}
    result = kubectl("apply", "-f", "-", input=obj, namespace=namespace, check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
