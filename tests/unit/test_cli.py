"""Unit tests of the inspection CLI (`kubectl-flowrun`): summaries, tables, action checks and exit codes, all
with plain API objects as the API server returns them. No cluster, no mocked client."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flowrun_operator.cli import app
from flowrun_operator.cli.render import (
    OutputFormat,
    dump,
    plain_text,
    runs_document,
    runs_table,
    summary_fields,
    summary_grid,
    tasks_table,
)
from flowrun_operator.cli.views import (
    MAIN_TASK,
    CliError,
    ago,
    api_error_message,
    api_error_names_object,
    check_cancel,
    choose_container,
    choose_pod,
    current_attempt,
    elapsed,
    filter_by_phase,
    human_age,
    log_error,
    next_rerun,
    pod_selector,
    resolve_task,
    sort_runs,
    summarize,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


POD_TEMPLATE: dict[str, Any] = {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}


def flowrun(
    name: str = "hello",
    *,
    namespace: str = "demo",
    flow: str = "hello",
    tasks: list[str] | None = None,
    status: dict[str, Any] | None = None,
    cancel: bool = False,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"flow": flow}
    if tasks is None:
        spec["template"] = POD_TEMPLATE
    else:
        spec["tasks"] = [{"name": t, "template": POD_TEMPLATE} for t in tasks]
    if cancel:
        spec["cancel"] = True
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    obj: dict[str, Any] = {"apiVersion": "flowrun.io/v1alpha1", "kind": "FlowRun", "metadata": meta, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def running_single() -> dict[str, Any]:
    return flowrun(
        status={
            "phase": "Running",
            "attempt": 1,
            "startTime": ts(75),
            "jobName": "hello-1",
            "message": "Job hello-1 running",
        }
    )


def failed_dag(reruns: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Failed",
        "attempt": 1,
        "startTime": ts(600),
        "completionTime": ts(590),
        "duration": "10s",
        "message": "task transform attempt 1 failed (BackoffLimitExceeded): "
        "Job has reached the specified backoff limit",
        "taskRuns": [
            {
                "name": "extract",
                "phase": "Succeeded",
                "attempt": 1,
                "jobName": "etl-extract-1",
                "startTime": ts(600),
                "completionTime": ts(597),
                "message": "Job etl-extract-1 completed",
            },
            {
                "name": "transform",
                "phase": "Failed",
                "attempt": 1,
                "jobName": "etl-transform-1",
                "startTime": ts(597),
                "completionTime": ts(590),
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            },
            {"name": "load", "phase": "Skipped", "attempt": 0, "message": "transform failed"},
        ],
    }
    if reruns is not None:
        status["reruns"] = reruns
    return flowrun("etl", flow="etl", tasks=["extract", "transform", "load"], status=status)


def pod(name: str, attempt: int, created: str, containers: tuple[str, ...] = ("main",)) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": {"flowrun.io/run": "etl", "flowrun.io/attempt": str(attempt)},
        },
        "spec": {"containers": [{"name": c} for c in containers]},
    }


# ------------------------------------------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (200, "3m20s"),
        (300, "5m"),
        (17 * 60 + 5, "17m"),
        (5 * 3600 + 3 * 60, "5h3m"),
        (6 * 3600, "6h"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (90 * 86400, "90d"),
        (3 * 365 * 86400 + 10 * 86400, "3y10d"),
        (10 * 365 * 86400, "10y"),
    ],
)
def test_human_age_follows_kubectl(seconds: float, expected: str) -> None:
    assert human_age(timedelta(seconds=seconds)) == expected


def test_ago() -> None:
    assert ago(NOW - timedelta(seconds=75), NOW) == "75s ago"
    assert ago(None, NOW) is None


def test_elapsed() -> None:
    start = NOW - timedelta(seconds=63.7)
    # Unfinished: time since start, truncated to whole seconds like the STARTED age.
    assert elapsed(start, None, "Running", NOW) == "1m3s"
    assert elapsed(start, NOW - timedelta(seconds=3.7), "Succeeded", NOW) == "1m0s"
    assert elapsed(start, None, "Failed", NOW) is None  # finished without a completion time
    assert elapsed(None, None, "Pending", NOW) is None
    assert elapsed(start, None, "Running", NOW, recorded="9s") == "9s"


# ---------------------------------------------------------------------------------------------- summary


def test_summary_of_a_running_run_without_tasks_has_a_main_row() -> None:
    summary = summarize(running_single(), NOW)

    assert (summary.name, summary.namespace, summary.flow, summary.phase) == ("hello", "demo", "hello", "Running")
    assert summary.attempt == 1
    assert summary.duration == "1m15s"
    assert not summary.has_tasks
    assert not summary.finished
    (row,) = summary.tasks
    assert row.name == MAIN_TASK
    assert (row.phase, row.attempt, row.job_name, row.duration) == ("Running", 1, "hello-1", "1m15s")
    assert row.message == "Job hello-1 running"


def test_summary_of_a_dag_run_lists_its_task_runs_in_spec_order() -> None:
    summary = summarize(failed_dag(), NOW)

    assert summary.has_tasks
    assert summary.finished
    assert summary.duration == "10s"
    assert [(t.name, t.phase, t.attempt, t.duration) for t in summary.tasks] == [
        ("extract", "Succeeded", 1, "3s"),
        ("transform", "Failed", 1, "7s"),
        ("load", "Skipped", None, None),
    ]
    assert summary.tasks[1].reason == "BackoffLimitExceeded"


def test_summary_shows_spec_tasks_missing_from_the_status() -> None:
    obj = flowrun("etl", tasks=["a", "b"], status={"phase": "Running", "taskRuns": [{"name": "a", "phase": "Running"}]})

    summary = summarize(obj, NOW)

    assert [(t.name, t.phase) for t in summary.tasks] == [("a", "Running"), ("b", None)]
    assert summary.tasks[1].message == "no task run reported in the status"


def test_summary_of_a_new_run_without_status() -> None:
    summary = summarize(flowrun(), NOW)

    assert summary.phase is None
    assert summary.attempt is None
    assert summary.duration is None
    assert summary.tasks[0].phase is None


def test_summary_survives_a_malformed_status() -> None:
    obj = flowrun(status={"phase": "Exploded", "attempt": "many"})

    summary = summarize(obj, NOW)

    assert summary.phase is None
    assert summary.status_error is not None
    assert dict(summary_fields(summary, NOW))["Warning"] == summary.status_error


def test_summary_to_dict_is_json_ready() -> None:
    data = summarize(failed_dag(reruns=1), NOW).to_dict()

    assert data["reruns"] == 1
    assert data["startTime"] == ts(600)
    assert [t["name"] for t in data["tasks"]] == ["extract", "transform", "load"]
    assert data["tasks"][0]["jobName"] == "etl-extract-1"
    json.dumps(data)


def test_filter_by_phase_is_case_insensitive_and_sort_by_namespace_then_name() -> None:
    runs = [
        summarize(flowrun("b", namespace="x", status={"phase": "Running"}), NOW),
        summarize(flowrun("a", namespace="y", status={"phase": "Failed"}), NOW),
        summarize(flowrun("a", namespace="x", status={"phase": "Succeeded"}), NOW),
        summarize(flowrun("c", namespace="x"), NOW),
    ]

    assert [s.name for s in filter_by_phase(runs, ["running", "FAILED"])] == ["b", "a"]
    assert len(filter_by_phase(runs, [])) == 4
    assert [(s.namespace, s.name) for s in sort_runs(runs)] == [("x", "a"), ("x", "b"), ("x", "c"), ("y", "a")]


# ----------------------------------------------------------------------------------------------- render


def test_list_table() -> None:
    runs = [summarize(running_single(), NOW), summarize(failed_dag(), NOW)]

    lines = plain_text(runs_table(runs, NOW)).splitlines()

    assert lines[0].split() == ["NAME", "FLOW", "PHASE", "ATTEMPT", "STARTED", "DURATION", "MESSAGE"]
    assert lines[1].split() == ["hello", "hello", "Running", "1", "75s", "ago", "1m15s", "Job", "hello-1", "running"]
    assert lines[2].split()[:7] == ["etl", "etl", "Failed", "1", "10m", "ago", "10s"]
    assert lines[2].endswith("Job has reached the specified backoff limit")  # long messages stay on one line
    assert all(line == line.rstrip() for line in lines)


def test_list_table_all_namespaces_and_missing_values() -> None:
    lines = plain_text(runs_table([summarize(flowrun("new"), NOW)], NOW, all_namespaces=True)).splitlines()

    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert lines[1].split() == ["demo", "new", "hello", "-", "-", "-", "-"]


def test_get_output_summary_and_task_rows() -> None:
    summary = summarize(failed_dag(reruns=2), NOW)

    text = plain_text(summary_grid(summary, NOW), tasks_table(summary.tasks, NOW))

    head, _, table = text.partition("\n\n")
    fields = dict(line.split(":", 1) for line in head.splitlines())
    assert fields["Name"].strip() == "etl"
    assert fields["Phase"].strip() == "Failed"
    assert fields["Attempt"].strip() == "1 (reruns: 2)"
    assert fields["Started"].strip() == f"{ts(600)} (10m ago)"
    assert fields["Duration"].strip() == "10s"
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["TASK", "STATE", "ATTEMPT", "STARTED", "DURATION", "MESSAGE"]
    assert rows[1][:6] == ["extract", "Succeeded", "1", "10m", "ago", "3s"]
    assert rows[2][:6] == ["transform", "Failed", "1", "9m57s", "ago", "7s"]
    assert rows[3] == ["load", "Skipped", "-", "-", "-", "transform", "failed"]


def test_summary_fields_waiting_and_cancel() -> None:
    obj = flowrun(
        cancel=True,
        status={
            "phase": "Pending",
            "waitingFor": [{"name": "gpu", "position": 3, "inUse": 2, "limit": 2}],
        },
    )

    fields = dict(summary_fields(summarize(obj, NOW), NOW))

    assert fields["Waiting for"] == "gpu (position 3, 2/2 in use)"
    assert fields["Cancel"] == "requested (spec.cancel is true)"
    assert fields["Started"] == "-"
    assert "Completed" not in fields


def test_json_and_yaml_documents() -> None:
    runs = [summarize(running_single(), NOW)]
    document = runs_document(runs)

    assert json.loads(dump(document, OutputFormat.JSON)) == document
    assert yaml.safe_load(dump(document, OutputFormat.YAML)) == document
    assert "tasks" not in document["items"][0]
    assert document["items"][0]["duration"] == "1m15s"


# ---------------------------------------------------------------------------------------------- actions


def test_cancel_only_unfinished_runs() -> None:
    assert check_cancel(summarize(running_single(), NOW)) is True
    assert check_cancel(summarize(flowrun(), NOW)) is True  # not picked up by the operator yet
    already = running_single()
    already["spec"]["cancel"] = True
    assert check_cancel(summarize(already, NOW)) is False

    with pytest.raises(CliError) as caught:
        check_cancel(summarize(failed_dag(), NOW))
    assert caught.value.code == 1
    assert caught.value.message == 'flowrun "etl" already finished (Failed); nothing to cancel'


def test_retry_gives_the_next_rerun_number() -> None:
    assert next_rerun(summarize(failed_dag(), NOW)) == 1
    assert next_rerun(summarize(failed_dag(reruns=2), NOW)) == 3


@pytest.mark.parametrize(
    ("phase", "words"),
    [
        ("Cancelled", "was cancelled"),
        ("Succeeded", "succeeded"),
        ("Running", "is still Running"),
        ("Pending", "is still Pending"),
        (None, "has not started yet"),
    ],
)
def test_retry_refuses_runs_that_did_not_fail(phase: str | None, words: str) -> None:
    obj = flowrun(status={"phase": phase} if phase else None)

    with pytest.raises(CliError) as caught:
        next_rerun(summarize(obj, NOW))

    assert caught.value.code == 1
    assert words in caught.value.message
    assert "only a Failed run can be retried" in caught.value.message


def test_retry_refuses_a_failed_run_with_cancel_set() -> None:
    obj = failed_dag()
    obj["spec"]["cancel"] = True

    with pytest.raises(CliError, match="cannot be retried"):
        next_rerun(summarize(obj, NOW))


def test_resolve_task() -> None:
    dag = summarize(failed_dag(), NOW)
    single = summarize(running_single(), NOW)

    assert resolve_task(dag, "transform") == "transform"
    assert resolve_task(single, None) is None
    assert resolve_task(single, MAIN_TASK) is None

    with pytest.raises(CliError) as missing:
        resolve_task(dag, None)
    assert missing.value.code == 2
    assert missing.value.message == 'flowrun "etl" has tasks; name one of them: extract, transform, load'

    with pytest.raises(CliError) as unknown:
        resolve_task(dag, "nope")
    assert unknown.value.code == 1
    assert unknown.value.message == 'flowrun "etl" has no task "nope"; its tasks are: extract, transform, load'

    with pytest.raises(CliError) as no_tasks:
        resolve_task(single, "extract")
    assert no_tasks.value.code == 1
    assert "has no tasks" in no_tasks.value.message


def test_current_attempt_and_pod_selector() -> None:
    dag = summarize(failed_dag(), NOW)

    assert current_attempt(dag, "transform") == 1
    assert current_attempt(dag, "load") is None
    assert current_attempt(summarize(running_single(), NOW), None) == 1
    assert pod_selector("etl", "transform", 2) == "flowrun.io/run=etl,flowrun.io/task=transform,flowrun.io/attempt=2"
    assert pod_selector("hello", None, 1) == "flowrun.io/run=hello,!flowrun.io/task,flowrun.io/attempt=1"
    assert pod_selector("hello", None, None) == "flowrun.io/run=hello,!flowrun.io/task"


def test_choose_pod_prefers_the_latest_attempt_then_the_newest_pod() -> None:
    pods = [
        pod("etl-1-a", 1, "2026-03-01T11:00:05Z"),
        pod("etl-2-b", 2, "2026-03-01T11:00:01Z"),
        pod("etl-2-c", 2, "2026-03-01T11:00:09Z"),
    ]

    chosen = choose_pod(pods)

    assert chosen is not None
    assert chosen["metadata"]["name"] == "etl-2-c"
    assert choose_pod([]) is None


def test_choose_container() -> None:
    one = pod("p", 1, "", containers=("main",))
    two = pod("q", 1, "", containers=("sidecar", "work"))

    assert choose_container(one, None) == "main"
    assert choose_container(two, None) == "sidecar"
    two["metadata"]["annotations"] = {"kubectl.kubernetes.io/default-container": "work"}
    assert choose_container(two, None) == "work"
    assert choose_container(two, "sidecar") == "sidecar"
    with pytest.raises(CliError, match='pod "q" has no container "nope"; its containers are: sidecar, work'):
        choose_container(two, "nope")


def test_api_error_messages() -> None:
    not_found = json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "message": 'flowruns.flowrun.io "x" not found',
            "reason": "NotFound",
            "details": {"name": "x", "group": "flowrun.io", "kind": "flowruns"},
            "code": 404,
        }
    )
    assert api_error_message(not_found) == 'flowruns.flowrun.io "x" not found'
    assert api_error_names_object(not_found.encode())
    assert not api_error_names_object("404 page not found")
    assert api_error_message(b"404 page not found\n") == "404 page not found"
    assert api_error_message(None, "Not Found") == "Not Found"


def test_log_error_explains_a_node_without_logs() -> None:
    error = log_error("etl-1-x", "main", 404, "the server could not find the requested resource")

    assert error.code == 1
    assert error.message.startswith('cannot read the logs of pod "etl-1-x" (container "main"): the server could')
    assert "did not serve its logs" in error.message
    assert "did not serve" not in log_error("p", "main", 400, "container is waiting to start").message


# ------------------------------------------------------------------------------------------- exit codes


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_usage_errors_exit_2() -> None:
    assert invoke("get").exit_code == 2  # RUN missing
    assert invoke("list", "-o", "xml").exit_code == 2
    assert invoke("list", "--phase", "Sleeping").exit_code == 2
    assert invoke("logs", "x", "--attempt", "0").exit_code == 2
    assert invoke("frobnicate").exit_code == 2


def test_missing_kubeconfig_is_a_clean_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"

    result = invoke("get", "x", "--kubeconfig", str(missing))

    assert result.exit_code == 1
    assert result.stderr == f'error: kubeconfig "{missing}" does not exist\n'
    assert "Traceback" not in result.output


def test_unreachable_api_server_is_a_clean_error(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                # Port 1 on loopback: nothing listens there, the connection is refused at once.
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
                "current-context": "x",
            }
        )
    )

    # Global options before the command work as well as after it.
    result = invoke("--kubeconfig", str(kubeconfig), "list")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the Kubernetes API server at http://127.0.0.1:1: ")
    assert "Traceback" not in result.output
