"""Flow runs with tasks: a small DAG of Jobs, task runs in status, and tag concurrency."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from support.flowruns import flowrun, job_of, jobs, status, tag_limit, task, wait_phase
from support.kube import Cluster, Kubectl, wait_for
from support.operator import JobWatcher, OperatorProcess

pytestmark = pytest.mark.integration


def task_runs(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in st.get("taskRuns", [])}


def created_at(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def job_by_task(kubectl: Kubectl, namespace: str, run: str) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["labels"]["flowrun.io/task"]: j for j in jobs(kubectl, namespace, run)}


def test_dag_runs_in_dependency_order_with_parallel_branches(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, cluster: Cluster
) -> None:
    tasks = [
        task("extract", duration=1),
        task("clean", duration=2, dependsOn=["extract"]),
        task("enrich", duration=2, dependsOn=["extract"]),
        task("load", duration=0.5, dependsOn=["clean", "enrich"]),
    ]
    with JobWatcher(cluster.kubeconfig, namespace, {"all": lambda job: True}) as watcher:
        kubectl.apply(flowrun("etl", tasks=tasks), namespace)
        st = wait_phase(kubectl, namespace, "etl", "Succeeded", timeout=90)
    runs = task_runs(st)
    assert {n: t["phase"] for n, t in runs.items()} == dict.fromkeys(
        ["extract", "clean", "enrich", "load"], "Succeeded"
    )
    assert all(t["attempt"] == 1 and t["jobName"] == job_of(kubectl, namespace, "etl", task=n) for n, t in runs.items())
    assert watcher.created_order[0] == job_of(kubectl, namespace, "etl", task="extract")
    assert watcher.created_order[-1] == job_of(kubectl, namespace, "etl", task="load")
    assert watcher.max_seen["all"] >= 2  # clean and enrich ran side by side
    by_task = job_by_task(kubectl, namespace, "etl")
    # a dependent starts only after its upstream finished
    assert created_at(by_task["clean"]) >= datetime.fromisoformat(
        runs["extract"]["completionTime"].replace("Z", "+00:00")
    )
    assert created_at(by_task["load"]) >= max(
        datetime.fromisoformat(runs[n]["completionTime"].replace("Z", "+00:00")) for n in ("clean", "enrich")
    )
    env = {e["name"]: e["value"] for e in by_task["load"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLOWRUN_TASK"] == "load"


def test_failed_task_skips_downstream_and_fails_the_run(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    tasks = [
        task("flaky", duration=0.3, exit_code=2, retries=1),
        task("after", dependsOn=["flaky"]),
        task("independent", duration=1),
    ]
    kubectl.apply(flowrun("partial", tasks=tasks, retryDelaySeconds=1), namespace)
    st = wait_phase(kubectl, namespace, "partial", "Failed", timeout=90)
    runs = task_runs(st)
    assert runs["flaky"]["phase"] == "Failed" and runs["flaky"]["attempt"] == 2
    assert runs["after"]["phase"] == "Skipped" and runs["after"]["reason"] == "UpstreamFailed"
    assert runs["independent"]["phase"] == "Succeeded"
    assert st["message"].startswith("task flaky")
    assert sorted(job_by_task(kubectl, namespace, "partial")) == ["flaky", "independent"]
    assert len(jobs(kubectl, namespace, "partial")) == 3  # flaky-1, flaky-2, independent-1


def test_rerun_of_a_failed_run_reruns_failed_and_skipped_tasks(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    tasks = [task("ok"), task("bad", exit_code=1), task("next", dependsOn=["bad"])]
    kubectl.apply(flowrun("again", tasks=tasks), namespace)
    wait_phase(kubectl, namespace, "again", "Failed")
    kubectl("annotate", "flowrun", "again", "flowrun.io/rerun=1", namespace=namespace)
    wait_for(lambda: status(kubectl, namespace, "again").get("reruns") == 1, timeout=20, message="rerun started")
    st = wait_phase(kubectl, namespace, "again", "Failed", timeout=60)
    runs = task_runs(st)
    assert runs["ok"]["attempt"] == 1  # not re-run
    assert runs["bad"]["attempt"] == 2
    assert {j["metadata"]["name"] for j in jobs(kubectl, namespace, "again")} == {
        job_of(kubectl, namespace, "again", task="ok"),
        job_of(kubectl, namespace, "again", task="bad"),
        job_of(kubectl, namespace, "again", 2, task="bad"),
    }


def test_tag_limit_holds_across_flow_runs(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, cluster: Cluster
) -> None:
    def tagged_db(job: dict[str, Any]) -> bool:
        return "db" in (job["metadata"].get("annotations") or {}).get("flowrun.io/tags", "").split(",")

    kubectl.apply(tag_limit("db", "db", 1), namespace)
    with JobWatcher(cluster.kubeconfig, namespace, {"db": tagged_db}) as watcher:
        for run in ("one", "two"):
            tasks = [
                task("query", duration=1.5, tags=["db"]),
                task("compute", duration=0.5),
                task("store", duration=1, tags=["db", "io"], dependsOn=["compute"]),
            ]
            kubectl.apply(flowrun(run, tasks=tasks), namespace)
        pending = wait_for(
            lambda: (
                [
                    t
                    for r in ("one", "two")
                    for t in status(kubectl, namespace, r).get("taskRuns", [])
                    if t["phase"] == "Pending"
                ]
                or None
            ),
            timeout=30,
            message="a task run pending on the tag limit",
        )
        assert pending[0]["waitingFor"][0]["name"] == "db"
        assert "waiting for db" in pending[0]["message"]
        for run in ("one", "two"):
            wait_phase(kubectl, namespace, run, "Succeeded", timeout=120)
    assert watcher.error is None
    assert watcher.max_seen["db"] == 1


def test_cancel_mid_dag_cancels_every_unfinished_task(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    tasks = [task("quick"), task("long", duration=300, dependsOn=["quick"]), task("last", dependsOn=["long"])]
    kubectl.apply(flowrun("mid", tasks=tasks), namespace)
    wait_for(
        lambda: task_runs(status(kubectl, namespace, "mid")).get("long", {}).get("phase") == "Running",
        timeout=30,
        message="long task running",
    )
    kubectl("patch", "flowrun", "mid", "--type=merge", "-p", '{"spec":{"cancel":true}}', namespace=namespace)
    st = wait_phase(kubectl, namespace, "mid", "Cancelled")
    assert {n: t["phase"] for n, t in task_runs(st).items()} == {
        "quick": "Succeeded",
        "long": "Cancelled",
        "last": "Cancelled",
    }
    wait_for(lambda: "long" not in job_by_task(kubectl, namespace, "mid"), timeout=30, message="long job deleted")


def test_dependency_cycle_is_reported_in_status(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    tasks = [task("a", dependsOn=["c"]), task("b", dependsOn=["a"]), task("c", dependsOn=["b"])]
    kubectl.apply([flowrun("loop", tasks=tasks), flowrun("fine", duration=0.2)], namespace)
    st = wait_phase(kubectl, namespace, "loop", "Failed")
    assert "dependency cycle" in st["message"]
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Finished"] == "InvalidSpec"
    assert jobs(kubectl, namespace, "loop") == []
    wait_phase(kubectl, namespace, "fine", "Succeeded")  # other runs are unaffected
    events = kubectl.json("get", "events", "--field-selector", "involvedObject.name=loop", namespace=namespace)["items"]
    assert any(e["type"] == "Warning" and "cycle" in e["message"] for e in events)
