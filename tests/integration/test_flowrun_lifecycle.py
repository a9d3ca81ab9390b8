"""A FlowRun through its phases on the real control plane, with the operator as a real process."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from support.flowruns import event_reasons, flowrun, job_of, jobs, status, task, wait_phase
from support.kube import Kubectl, wait_for
from support.operator import OperatorProcess

pytestmark = pytest.mark.integration


def conditions(st: dict) -> dict[str, str]:
    return {c["type"]: f"{c['status']}/{c['reason']}" for c in st.get("conditions", [])}


def test_run_succeeds_through_submitted_and_running(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(flowrun("hello", duration=1.5, parameters={"who": "world", "n": 3}, labels={"team": "a"}), namespace)
    st = wait_phase(kubectl, namespace, "hello", "Succeeded")
    assert st["attempt"] == 1
    assert st["jobName"] == job_of(kubectl, namespace, "hello")
    assert st["observedGeneration"] == 1
    assert st["startTime"] and st["completionTime"] and st["duration"]
    assert conditions(st) == {
        "Admitted": "True/Admitted",
        "Running": "False/Succeeded",
        "Finished": "True/Succeeded",
    }
    # Admission and the outcome leave Events (the pod's own Events tell when it started running).
    reasons = wait_for(
        lambda: r if "Succeeded" in (r := event_reasons(kubectl, namespace, "hello")) else None,
        timeout=10,
        message="Succeeded event",
    )
    assert reasons == ["Submitted", "Succeeded"]

    [job] = jobs(kubectl, namespace, "hello")
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("FlowRun", "hello", True)
    labels = job["metadata"]["labels"]
    assert labels["flowrun.io/run"] == "hello" and labels["flowrun.io/flow"] == "test-flow"
    assert labels["team"] == "a"
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLOWRUN_NAME"] == "hello"
    assert json.loads(env["FLOWRUN_PARAMETERS"]) == {"who": "world", "n": 3}

    table = kubectl("get", "flowruns", namespace=namespace).stdout
    header = table.splitlines()[0].split()
    assert header[:7] == ["NAME", "FLOW", "PHASE", "ATTEMPT", "STARTED", "DURATION", "MESSAGE"]
    assert "Succeeded" in table.splitlines()[1]
    assert "hello" in kubectl("get", "fr", namespace=namespace).stdout


def test_failed_job_fails_the_run_with_its_reason(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(flowrun("broken", duration=0.5, exit_code=3), namespace)
    st = wait_phase(kubectl, namespace, "broken", "Failed")
    assert "BackoffLimitExceeded" in st["message"]
    assert conditions(st)["Finished"] == "True/BackoffLimitExceeded"
    assert "Failed" in event_reasons(kubectl, namespace, "broken")


def test_timeout_becomes_the_jobs_deadline(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(flowrun("slow", duration=60, timeoutSeconds=2), namespace)
    st = wait_phase(kubectl, namespace, "slow", "Failed", timeout=60)
    assert "DeadlineExceeded" in st["message"]
    [job] = jobs(kubectl, namespace, "slow")
    assert job["spec"]["activeDeadlineSeconds"] == 2


def test_retries_start_new_attempts_after_the_delay(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(flowrun("flaky", duration=0.2, exit_code=1, retries=2, retryDelaySeconds=1), namespace)
    st = wait_phase(kubectl, namespace, "flaky", "Failed", timeout=90)
    assert st["attempt"] == 3
    names = sorted(j["metadata"]["name"] for j in jobs(kubectl, namespace, "flaky"))
    assert names == [job_of(kubectl, namespace, "flaky", n) for n in (1, 2, 3)]
    created = sorted(
        datetime.fromisoformat(j["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        for j in jobs(kubectl, namespace, "flaky")
    )
    # each retry waited for its delay after the previous failure (timestamps have 1 s precision)
    assert all(b - a >= timedelta(seconds=1) for a, b in itertools.pairwise(created))
    # Events are posted after the writes they tell about, the waiting ones ("Scheduled") in a background lane,
    # so the last may arrive after the Failed phase is stored.
    reasons = wait_for(
        lambda: (found := event_reasons(kubectl, namespace, "flaky")).count("Submitted") == 3 and found,
        timeout=20,
        message="the Submitted Event of each attempt",
    )
    reasons = wait_for(
        lambda: (found := event_reasons(kubectl, namespace, "flaky")).count("Scheduled") >= 2 and found,
        timeout=20,
        message="a Scheduled Event for each retry",
    )
    assert reasons.count("Scheduled") == 2 and reasons.count("Failed") == 1


def test_scheduled_start_holds_the_run_until_its_time(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    start = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    kubectl.apply(flowrun("later", scheduledStart=start.strftime("%Y-%m-%dT%H:%M:%SZ")), namespace)
    st = wait_phase(kubectl, namespace, "later", "Scheduled", timeout=10)
    assert conditions(st)["Admitted"] == "False/ScheduledStartPending"
    assert jobs(kubectl, namespace, "later") == []
    wait_phase(kubectl, namespace, "later", "Succeeded", timeout=30)
    [job] = jobs(kubectl, namespace, "later")
    created = datetime.fromisoformat(job["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert created >= start


def test_cancel_deletes_the_job_and_ends_cancelled(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(flowrun("stop-me", duration=120), namespace)
    wait_phase(kubectl, namespace, "stop-me", "Running")
    kubectl("patch", "flowrun", "stop-me", "--type=merge", "-p", '{"spec":{"cancel":true}}', namespace=namespace)
    st = wait_phase(kubectl, namespace, "stop-me", "Cancelled")
    assert st["completionTime"]
    wait_for(lambda: jobs(kubectl, namespace, "stop-me") == [], timeout=30, message="job deleted")
    # cancel cannot be undone
    undo = kubectl(
        "patch",
        "flowrun",
        "stop-me",
        "--type=merge",
        "-p",
        '{"spec":{"cancel":false}}',
        namespace=namespace,
        check=False,
    )
    assert undo.returncode != 0
    assert "spec.cancel" in undo.stderr


def test_deleted_job_fails_the_run(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(flowrun("orphaned", duration=120), namespace)
    wait_phase(kubectl, namespace, "orphaned", "Running")
    orphaned_job = job_of(kubectl, namespace, "orphaned")
    kubectl("delete", "job", orphaned_job, "--wait=false", namespace=namespace)
    st = wait_phase(kubectl, namespace, "orphaned", "Failed")
    assert conditions(st)["Finished"] == "True/JobDeleted"
    assert orphaned_job in st["message"]
    # no replacement Job was started
    assert all(j["metadata"]["name"] == orphaned_job for j in jobs(kubectl, namespace, "orphaned"))


def test_deleting_the_run_garbage_collects_its_job(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(flowrun("gone", duration=120), namespace)
    wait_phase(kubectl, namespace, "gone", "Running")
    kubectl("delete", "flowrun", "gone", "--wait=false", namespace=namespace)
    wait_for(lambda: jobs(kubectl, namespace, "gone") == [], timeout=60, message="job garbage collected")


def test_ttl_deletes_the_finished_run(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(flowrun("short-lived", ttlSecondsAfterFinished=2), namespace)
    wait_phase(kubectl, namespace, "short-lived", "Succeeded")
    wait_for(
        lambda: kubectl("get", "flowrun", "short-lived", namespace=namespace, check=False).returncode != 0,
        timeout=30,
        message="run deleted after its TTL",
    )


def test_operator_killed_mid_run_recovers_without_a_second_job(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(flowrun("survivor", duration=4), namespace)
    wait_phase(kubectl, namespace, "survivor", "Running")
    operator.kill()
    operator.start()
    st = wait_phase(kubectl, namespace, "survivor", "Succeeded", timeout=60)
    assert st["attempt"] == 1
    assert [j["metadata"]["name"] for j in jobs(kubectl, namespace, "survivor")] == [
        job_of(kubectl, namespace, "survivor")
    ]


def test_operator_down_at_creation_catches_up(operator: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    operator.stop()
    kubectl.apply(flowrun("while-away", duration=0.5), namespace)
    assert status(kubectl, namespace, "while-away") == {}
    operator.start()
    wait_phase(kubectl, namespace, "while-away", "Succeeded")


def test_invalid_pod_template_fails_the_run_without_harming_others(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    bad = flowrun("bad-template")
    bad["spec"]["template"]["spec"]["containers"][0]["name"] = "Not_A_Valid_Name"
    kubectl.apply([bad, flowrun("good", duration=0.5)], namespace)
    st = wait_phase(kubectl, namespace, "bad-template", "Failed")
    assert conditions(st)["Finished"] == "True/JobRejected"
    assert "containers[0].name" in st["message"]
    wait_phase(kubectl, namespace, "good", "Succeeded")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s.pop("template"), "exactly one of spec.template or spec.tasks"),
        (lambda s: s.update(tasks=[task("a")]), "exactly one of spec.template or spec.tasks"),
        (lambda s: s.update(timeoutSeconds=0), "spec.timeoutSeconds"),
        (lambda s: s.update(retries=99), "spec.retries"),
        (lambda s: s.pop("flow"), "spec.flow"),
        (lambda s: s.update(priority="high"), "spec.priority"),
    ],
    ids=["neither", "both", "timeout-zero", "too-many-retries", "no-flow", "priority-type"],
)
def test_invalid_flowruns_are_refused_naming_the_field(
    crds: None, kubectl: Kubectl, namespace: str, mutate, expected: str
) -> None:
    obj = flowrun("invalid")
    mutate(obj["spec"])
    result = kubectl("apply", "-f", "-", input=obj, namespace=namespace, check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_task_validation_is_refused_by_the_api_server(crds: None, kubectl: Kubectl, namespace: str) -> None:
    duplicate = flowrun("dup", tasks=[task("a"), task("a")])
    result = kubectl("apply", "-f", "-", input=duplicate, namespace=namespace, check=False)
    assert result.returncode != 0 and "spec.tasks" in result.stderr
    unknown = flowrun("unknown-dep", tasks=[task("a", dependsOn=["nope"])])
    result = kubectl("apply", "-f", "-", input=unknown, namespace=namespace, check=False)
    assert result.returncode != 0 and "dependsOn" in result.stderr
