"""The inspection CLI (`kubectl-flowrun`, also `kubectl flowrun`) run as a real process against the cluster
under test, with the operator running: list, get, logs, cancel, retry and their errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.flowruns import flowrun, job_of, jobs, status, task, wait_phase
from support.kube import Cluster, Kubectl, kubectl_binary, wait_for
from support.operator import OperatorProcess

pytestmark = pytest.mark.integration

TIMEOUT = 90.0
# Long enough to still run while a test looks at it, short of the test's own timeout.
LONG = 300.0


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script = Path(sys.executable).parent / "kubectl-flowrun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flowrun_operator.cli"]


def run_cli(cluster: Cluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run(
        [*cli_command(), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def rows(text: str) -> dict[str, list[str]]:
    """A table's rows keyed by their first cell (header included)."""
    return {cells[0]: cells for cells in (line.split() for line in text.splitlines()) if cells}


def task_phases(st: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t.get("phase", "") for t in st.get("taskRuns", [])}


def wait_task_phases(kubectl: Kubectl, namespace: str, run: str, expected: dict[str, str]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = status(kubectl, namespace, run)
        return st if task_phases(st) == expected else None

    return wait_for(check, timeout=TIMEOUT, interval=0.2, message=f"task runs of {run} to be {expected}")


def test_list_and_get_show_runs_and_task_rows(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, cluster: Cluster
) -> None:
    kubectl.apply(flowrun("single", duration=LONG, flow="report"), namespace)
    kubectl.apply(
        flowrun("etl", flow="etl", tasks=[task("extract", duration=LONG), task("load", dependsOn=["extract"])]),
        namespace,
    )
    wait_phase(kubectl, namespace, "single", "Running", timeout=TIMEOUT)
    wait_task_phases(kubectl, namespace, "etl", {"extract": "Running", "load": "Scheduled"})

    listed = rows(ok(run_cli(cluster, "list", "-n", namespace)))
    assert listed["NAME"] == ["NAME", "FLOW", "PHASE", "ATTEMPT", "STARTED", "DURATION", "MESSAGE"]
    assert listed["single"][:4] == ["single", "report", "Running", "1"]
    assert listed["etl"][:4] == ["etl", "etl", "Running", "1"]
    assert listed["single"][5] == "ago"  # STARTED "<age> ago", then a DURATION for a running run
    assert listed["single"][6].endswith("s")

    document = json.loads(ok(run_cli(cluster, "list", "-A", "-o", "json", "--phase", "running")))
    mine = {i["name"]: i for i in document["items"] if i["namespace"] == namespace}
    assert sorted(mine) == ["etl", "single"]
    assert mine["single"]["phase"] == "Running"

    none = run_cli(cluster, "list", "-n", namespace, "--phase", "Succeeded")
    assert none.returncode == 0 and none.stdout == ""
    assert f'No flow runs in phase Succeeded found in namespace "{namespace}"' in none.stderr

    # A run with tasks: one row per task run.
    head, _, table = ok(run_cli(cluster, "get", "etl", "-n", namespace)).partition("\n\n")
    assert "Flow:      etl" in head and "Phase:     Running" in head
    tasks = rows(table)
    assert tasks["TASK"] == ["TASK", "STATE", "ATTEMPT", "STARTED", "DURATION", "MESSAGE"]
    assert tasks["extract"][:3] == ["extract", "Running", "1"]
    assert tasks["load"][:5] == ["load", "Scheduled", "-", "-", "-"]

    # A run without tasks: its single Job as the row "main".
    _, _, table = ok(run_cli(cluster, "get", "single", "-n", namespace)).partition("\n\n")
    assert rows(table)["main"][:3] == ["main", "Running", "1"]
    assert job_of(kubectl, namespace, "single") in table  # the message names the Job

    detail = json.loads(ok(run_cli(cluster, "-n", namespace, "-o", "json", "get", "etl")))
    assert [(t["name"], t["phase"], t["attempt"], t["jobName"]) for t in detail["tasks"]] == [
        ("extract", "Running", 1, job_of(kubectl, namespace, "etl", task="extract")),
        ("load", "Scheduled", None, None),
    ]

    # The same program as a kubectl plugin: kubectl finds kubectl-flowrun on PATH.
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{Path(cli_command()[0]).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    plugin = subprocess.run(
        [kubectl_binary(), "flowrun", "get", "etl", "-n", namespace],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert rows(ok(plugin))["extract"][:2] == ["extract", "Running"]


def test_get_of_a_failed_multi_task_run_then_retry_starts_a_new_attempt(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, cluster: Cluster
) -> None:
    tasks = [
        task("extract", duration=0.2),
        task("transform", duration=0.5, exit_code=1, dependsOn=["extract"]),
        task("load", dependsOn=["transform"]),
    ]
    kubectl.apply(flowrun("etl", flow="etl", tasks=tasks), namespace)
    wait_phase(kubectl, namespace, "etl", "Failed", timeout=TIMEOUT)

    head, _, table = ok(run_cli(cluster, "get", "etl", "-n", namespace)).partition("\n\n")
    assert "Phase:     Failed" in head
    assert "task transform" in head  # the run's message names the failed task
    got = rows(table)
    assert got["extract"][:3] == ["extract", "Succeeded", "1"]
    assert got["transform"][:3] == ["transform", "Failed", "1"]
    assert got["load"][:2] == ["load", "Skipped"]

    retried = run_cli(cluster, "retry", "etl", "-n", namespace)
    assert 'flowrun "etl" rerun 1 requested' in ok(retried)
    run = kubectl.json("get", "flowrun", "etl", namespace=namespace)
    assert run["metadata"]["annotations"]["flowrun.io/rerun"] == "1"

    def rerun_started() -> dict[str, Any] | None:
        st = status(kubectl, namespace, "etl")
        runs = {t["name"]: t for t in st.get("taskRuns", [])}
        started = st.get("reruns") == 1 and runs.get("transform", {}).get("attempt") == 2
        return st if started else None

    st = wait_for(rerun_started, timeout=TIMEOUT, interval=0.2, message="rerun 1 with transform attempt 2")
    assert {t["name"]: t["attempt"] for t in st["taskRuns"]}["extract"] == 1  # succeeded tasks are kept
    transform_2 = job_of(kubectl, namespace, "etl", 2, task="transform")
    assert transform_2 in {j["metadata"]["name"] for j in jobs(kubectl, namespace, "etl")}

    # transform fails again: the run ends Failed with reruns 1, shown by get.
    wait_for(
        lambda: (
            status(kubectl, namespace, "etl").get("phase") == "Failed"
            and status(kubectl, namespace, "etl").get("reruns") == 1
        ),
        timeout=TIMEOUT,
        message="the rerun to fail",
    )
    detail = json.loads(ok(run_cli(cluster, "get", "etl", "-n", namespace, "-o", "json")))
    assert detail["reruns"] == 1
    assert {t["name"]: (t["phase"], t["attempt"]) for t in detail["tasks"]}["transform"] == ("Failed", 2)


def test_retry_refuses_runs_that_did_not_fail(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, cluster: Cluster
) -> None:
    kubectl.apply(flowrun("done", duration=0.2), namespace)
    kubectl.apply(flowrun("busy", duration=LONG), namespace)
    wait_phase(kubectl, namespace, "done", "Succeeded", timeout=TIMEOUT)
    wait_phase(kubectl, namespace, "busy", "Running", timeout=TIMEOUT)

    succeeded = run_cli(cluster, "retry", "done", "-n", namespace)
    assert succeeded.returncode == 1
    assert succeeded.stderr == (
        'error: flowrun "done" succeeded; there is nothing to retry (only a Failed run can be retried)\n'
    )
    running = run_cli(cluster, "retry", "busy", "-n", namespace)
    assert running.returncode == 1
    assert 'flowrun "busy" is still Running' in running.stderr
    run = kubectl.json("get", "flowrun", "busy", namespace=namespace)
    assert "flowrun.io/rerun" not in (run["metadata"].get("annotations") or {})


def test_cancel_of_a_running_run(operator: OperatorProcess, kubectl: Kubectl, namespace: str, cluster: Cluster) -> None:
    kubectl.apply(flowrun("long", duration=LONG), namespace)
    wait_phase(kubectl, namespace, "long", "Running", timeout=TIMEOUT)

    out = ok(run_cli(cluster, "cancel", "long", "-n", namespace, "--wait", "--timeout", str(TIMEOUT)))

    assert 'flowrun "long" cancel requested' in out
    assert 'flowrun "long" is Cancelled' in out
    assert status(kubectl, namespace, "long")["phase"] == "Cancelled"
    assert kubectl.json("get", "flowrun", "long", namespace=namespace)["spec"]["cancel"] is True
    wait_for(
        lambda: not [j for j in jobs(kubectl, namespace, "long") if not j["metadata"].get("deletionTimestamp")],
        timeout=TIMEOUT,
        message="the Jobs of the cancelled run to be deleted",
    )

    again = run_cli(cluster, "cancel", "long", "-n", namespace)
    assert again.returncode == 1
    assert again.stderr == 'error: flowrun "long" already finished (Cancelled); nothing to cancel\n'
    retried = run_cli(cluster, "retry", "long", "-n", namespace)
    assert retried.returncode == 1
    assert 'flowrun "long" was cancelled; only a Failed run can be retried' in retried.stderr


def test_logs_finds_the_pod_of_the_task_run(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, cluster: Cluster
) -> None:
    kubectl.apply(
        flowrun("etl", tasks=[task("extract", duration=LONG), task("load", dependsOn=["extract"])]), namespace
    )
    kubectl.apply(flowrun("single", duration=LONG), namespace)
    wait_task_phases(kubectl, namespace, "etl", {"extract": "Running", "load": "Scheduled"})
    wait_phase(kubectl, namespace, "single", "Running", timeout=TIMEOUT)

    no_task = run_cli(cluster, "logs", "etl", "-n", namespace)
    assert no_task.returncode == 2
    assert no_task.stderr == 'error: flowrun "etl" has tasks; name one of them: extract, load\n'

    unknown = run_cli(cluster, "logs", "etl", "nope", "-n", namespace)
    assert unknown.returncode == 1
    assert unknown.stderr == 'error: flowrun "etl" has no task "nope"; its tasks are: extract, load\n'

    waiting = run_cli(cluster, "logs", "etl", "load", "-n", namespace)
    assert waiting.returncode == 1
    assert 'task "load" of flowrun "etl" has no pod yet (state Scheduled)' in waiting.stderr

    other_attempt = run_cli(cluster, "logs", "etl", "extract", "--attempt", "4", "-n", namespace)
    assert other_attempt.returncode == 1
    assert "flowrun.io/attempt=4" in other_attempt.stderr and "the current attempt is 1" in other_attempt.stderr

    (pod,) = kubectl.json("get", "pods", "-l", "flowrun.io/run=etl,flowrun.io/task=extract", namespace=namespace)[
        "items"
    ]
    pod_name = pod["metadata"]["name"]
    bad_container = run_cli(cluster, "logs", "etl", "extract", "-c", "nope", "-n", namespace)
    assert bad_container.returncode == 1
    assert bad_container.stderr == f'error: pod "{pod_name}" has no container "nope"; its containers are: main\n'

    for args, prefix in ((["etl", "extract"], "etl-extract-1-"), (["single"], "single-1-")):
        result = run_cli(cluster, "logs", *args, "-n", namespace)
        if cluster.is_kwok:
            # KWOK's simulated nodes serve no logs: the lookup reached the pod and the API's answer is shown.
            assert result.returncode == 1, result
            assert result.stderr.startswith(f'error: cannot read the logs of pod "{prefix}'), result.stderr
            assert '(container "main")' in result.stderr
            assert "Traceback" not in result.stderr
        else:
            assert result.returncode == 0, result.stderr


def test_unknown_run_is_an_error_for_every_command(crds: None, namespace: str, cluster: Cluster) -> None:
    for args in (["get", "ghost"], ["logs", "ghost"], ["cancel", "ghost"], ["retry", "ghost"]):
        result = run_cli(cluster, *args, "-n", namespace)
        assert result.returncode == 1, (args, result)
        assert result.stderr == f'error: flowrun "ghost" not found in namespace "{namespace}"\n', args
        assert result.stdout == ""

    empty = run_cli(cluster, "list", "-n", namespace)
    assert empty.returncode == 0
    assert f'No flow runs found in namespace "{namespace}"' in empty.stderr
