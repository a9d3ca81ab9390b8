"""Reliability on the real control plane: the API server restarting under the operator, pods and the operator
dying mid-run, and bad objects next to good ones. An independent watcher (its own watch stream on Jobs, which
re-lists after a broken stream) checks the limits at every instant it can observe."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.flowruns import flowrun, job_of, jobs, selector_limit, status, tag_limit, task, wait_phase
from support.kube import Cluster, Kubectl, wait_for
from support.operator import JobWatcher, OperatorProcess

pytestmark = pytest.mark.integration


def labelled(key: str, value: str) -> Any:
    return lambda job: job["metadata"].get("labels", {}).get(key) == value


def tagged(tag: str) -> Any:
    return lambda job: tag in (job["metadata"].get("annotations") or {}).get("flowrun.io/tags", "").split(",")


@pytest.fixture
def watcher(cluster: Cluster, namespace: str) -> Iterator[JobWatcher]:
    with JobWatcher(
        cluster.kubeconfig, namespace, {"team-a": labelled("team", "a"), "db": tagged("db"), "all": lambda job: True}
    ) as watching:
        yield watching
        assert watching.error is None, watching.error


def all_phases(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    items = kubectl.json("get", "flowruns", namespace=namespace)["items"]
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in items}


def wait_all(
    kubectl: Kubectl, namespace: str, names: list[str], phase: str, operator: OperatorProcess, timeout: float = 60
) -> None:
    """Wait until every run in ``names`` is in ``phase``; on timeout, name the stragglers and show the
    operator's log."""
    last: dict[str, str] = {}

    def done() -> bool:
        nonlocal last
        last = all_phases(kubectl, namespace)
        return all(last.get(n) == phase for n in names)

    try:
        wait_for(done, timeout=timeout, interval=0.2, message=f"all of {names} to be {phase}")
    except AssertionError:
        behind = {n: last.get(n) for n in names if last.get(n) != phase}
        raise AssertionError(
            f"runs not {phase} after {timeout:g}s: {behind}\noperator log (tail):\n{operator.logs()[-6000:]}"
        ) from None


def job_names(kubectl: Kubectl, namespace: str, run: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in jobs(kubectl, namespace, run))


def finished_reason(st: dict[str, Any]) -> str:
    return str({c["type"]: c["reason"] for c in st.get("conditions", [])}.get("Finished"))


@pytest.mark.skipif(
    os.environ.get("USE_EXISTING_CLUSTER") == "1",
    reason="kills and restarts the embedded control plane's kube-apiserver; not possible on an existing cluster",
)
def test_api_server_restart_mid_flight(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, cluster: Cluster, watcher: JobWatcher
) -> None:
    devcluster = cluster.devcluster
    assert devcluster is not None, "needs the embedded control plane (cluster.devcluster)"
    kubectl.apply(selector_limit("team-a", {"team": "a"}, 2), namespace)
    names = [f"r{i}" for i in range(8)]
    kubectl.apply([flowrun(n, duration=2, labels={"team": "a"}) for n in names], namespace)
    wait_for(lambda: watcher.count("team-a") == 2, timeout=30, message="two team-a Jobs running")
    before = len(watcher.created_order)

    devcluster.restart_component("kube-apiserver", kill=True)  # SIGKILL, same port and certificates

    # The runs still waiting can only start if the operator's watches came back (Job completions,
    # FlowRun updates): nothing else wakes it up.
    wait_all(kubectl, namespace, names, "Succeeded", operator, timeout=90)
    assert before < len(names), "every run had started before the restart: the test proved nothing"
    assert watcher.reconnects >= 1, f"the watcher never saw the API server go away: {watcher.stream_errors}"
    assert watcher.max_seen["team-a"] == 2
    for name in names:
        assert job_names(kubectl, namespace, name) == [job_of(kubectl, namespace, name)]
    # A run created after the restart is seen and run too (the FlowRun watch is back, not just the Job one).
    kubectl.apply(flowrun("after-restart", duration=0.2, labels={"team": "a"}), namespace)
    wait_all(kubectl, namespace, ["after-restart"], "Succeeded", operator, timeout=30)
    assert watcher.max_seen["team-a"] == 2


def _delete_pod_of(kubectl: Kubectl, namespace: str, job: str) -> str:
    pods = wait_for(
        lambda: kubectl.json("get", "pods", "-l", f"job-name={job}", namespace=namespace)["items"] or None,
        timeout=20,
        message=f"a pod of Job {job}",
    )
    [pod] = pods
    assert pod["status"].get("phase") == "Running", pod["status"]
    name = str(pod["metadata"]["name"])
    kubectl("delete", "pod", name, "--wait=true", "--timeout=30s", namespace=namespace)
    return name


def test_deleted_pod_fails_the_attempt_and_a_retry_recovers(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(
        [
            flowrun("with-retry", duration=6, retries=1, retryDelaySeconds=1),
            flowrun("no-retry", duration=300),
        ],
        namespace,
    )
    for name in ("with-retry", "no-retry"):
        wait_phase(kubectl, namespace, name, "Running", timeout=30)
        _delete_pod_of(kubectl, namespace, job_of(kubectl, namespace, name))

    st = wait_phase(kubectl, namespace, "no-retry", "Failed", timeout=60)
    [job] = jobs(kubectl, namespace, "no-retry")
    failed = {c["type"]: c for c in job["status"].get("conditions", [])}["Failed"]
    assert failed["status"] == "True"
    assert finished_reason(st) == failed["reason"]
    assert failed["reason"] in st["message"]
    assert st["attempt"] == 1

    st = wait_phase(kubectl, namespace, "with-retry", "Succeeded", timeout=60)
    retry_jobs = [job_of(kubectl, namespace, "with-retry", n) for n in (1, 2)]
    assert st["attempt"] == 2 and st["jobName"] == retry_jobs[1]
    assert job_names(kubectl, namespace, "with-retry") == sorted(retry_jobs)
    first = next(j for j in jobs(kubectl, namespace, "with-retry") if j["metadata"]["name"] == retry_jobs[0])
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in first["status"]["conditions"])


def test_operator_killed_repeatedly_while_dags_run(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, watcher: JobWatcher
) -> None:
    kubectl.apply(tag_limit("db", "db", 1), namespace)
    names = ["dag-1", "dag-2", "dag-3"]
    tasks = [
        task("prep", duration=0.5),
        task("load", duration=1, tags=["db"], dependsOn=["prep"]),
        task("compute", duration=1, dependsOn=["prep"]),
        task("store", duration=0.5, tags=["db"], dependsOn=["load", "compute"]),
    ]
    kubectl.apply([flowrun(n, tasks=tasks) for n in names], namespace)
    total = len(names) * len(tasks)

    def progress_past(seen: int) -> Callable[[], bool]:
        return lambda: len(watcher.created_order) > seen

    for _ in range(4):
        # kill at a different point each time: only once more Jobs exist than at the last kill
        seen = len(watcher.created_order)
        if seen >= total:
            break
        wait_for(progress_past(seen), timeout=30, message=f"progress past {seen} Jobs")
        operator.kill()
        operator.start()
    assert operator.starts >= 3, "the runs finished before the operator was killed twice"

    wait_all(kubectl, namespace, names, "Succeeded", operator, timeout=90)
    assert watcher.max_seen["db"] == 1
    for name in names:
        assert job_names(kubectl, namespace, name) == sorted(
            job_of(kubectl, namespace, name, task=t["name"]) for t in tasks
        )
        runs = {t["name"]: t for t in status(kubectl, namespace, name)["taskRuns"]}
        assert {n: (t["phase"], t["attempt"]) for n, t in runs.items()} == {t["name"]: ("Succeeded", 1) for t in tasks}


def test_bad_objects_never_hurt_other_runs(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, watcher: JobWatcher
) -> None:
    kubectl.apply(selector_limit("team-a", {"team": "a"}, 2), namespace)
    rejected = flowrun("rejected", duration=1, labels={"team": "a"})
    rejected["spec"]["template"]["spec"]["containers"][0]["name"] = "Not_A_Valid_Name"
    cycle = flowrun(
        "cycle",
        labels={"team": "a"},
        tasks=[task("a", dependsOn=["c"]), task("b", dependsOn=["a"]), task("c", dependsOn=["b"])],
    )
    good = [f"good-{i}" for i in range(6)]
    # the bad ones first, so they are first in line for the limit
    kubectl.apply([rejected, cycle], namespace)
    kubectl.apply([flowrun(n, duration=1, labels={"team": "a"}) for n in good], namespace)

    st = wait_phase(kubectl, namespace, "rejected", "Failed", timeout=30)
    assert finished_reason(st) == "JobRejected"
    assert "containers[0].name" in st["message"]
    st = wait_phase(kubectl, namespace, "cycle", "Failed", timeout=30)
    assert finished_reason(st) == "InvalidSpec"
    assert "dependency cycle" in st["message"]

    wait_all(kubectl, namespace, good, "Succeeded", operator, timeout=60)
    assert watcher.max_seen["team-a"] == 2
    assert jobs(kubectl, namespace, "rejected") == [] and jobs(kubectl, namespace, "cycle") == []
    assert not [j for j in watcher.created_order if j.startswith("rejected-")]
    for name in good:
        assert job_names(kubectl, namespace, name) == [job_of(kubectl, namespace, name)]
    limit = wait_for(
        lambda: (
            s
            if (s := kubectl.json("get", "cl", "team-a", namespace=namespace).get("status") or {}).get("inUse") == 0
            else None
        ),
        timeout=20,
        message="team-a limit empty",
    )
    assert limit["pending"] == 0
