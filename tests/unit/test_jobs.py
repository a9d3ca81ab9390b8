import hashlib

from flowrun_operator.engine.view import run_snapshot
from flowrun_operator.kube.jobs import build_job
from flowrun_operator.scheduling.jobs import JobOutcome, job_info_from, job_name
from flowrun_operator.scheduling.runstate import units_of


def test_job_names_are_deterministic_and_fit_a_label_value() -> None:
    digest = hashlib.sha256(b"uid-1").hexdigest()[:5]
    assert job_name("hello", None, 1, "uid-1") == f"hello-1-{digest}"
    assert job_name("hello", "extract", 2, "uid-1") == f"hello-extract-2-{digest}"
    # Run `etl` task `load` and run `etl-load` (another uid) never share a Job name.
    assert job_name("etl", "load", 1, "uid-1") != job_name("etl-load", None, 1, "uid-2")
    # Nor does a new run with the name of a deleted one whose Jobs are still being collected.
    assert job_name("etl", None, 1, "uid-1") != job_name("etl", None, 1, "uid-2")
    long = job_name("r" * 60, "task-with-a-long-name", 3, "uid-1")
    assert len(long) <= 63
    assert long.endswith("-3")
    assert long == job_name("r" * 60, "task-with-a-long-name", 3, "uid-1")
    assert long != job_name("r" * 60, "task-with-a-long-namf", 3, "uid-1")


def test_job_info_reads_final_conditions_only() -> None:
    base = {"metadata": {"name": "r-1", "labels": {"flowrun.io/run": "r", "flowrun.io/attempt": "1"}}}
    target = job_info_from({**base, "status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}})
    assert target is not None and target.outcome is None and target.unfinished
    failed = job_info_from(
        {**base, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    )
    assert failed is not None and failed.outcome is JobOutcome.FAILED and failed.reason == "DeadlineExceeded"
    assert job_info_from({"metadata": {"name": "x", "labels": {}}}) is None


def test_build_job() -> None:
    run = run_snapshot(
        {
            "metadata": {"name": "r", "namespace": "ns", "uid": "u1", "labels": {"team": "a"}},
            "spec": {
                "flow": "etl",
                "parameters": {"day": "2026-01-01"},
                "timeoutSeconds": 30,
                "template": {
                    "spec": {"containers": [{"name": "c", "image": "busybox", "env": [{"name": "X", "value": "1"}]}]}
                },
            },
        }
    )
    assert run.spec is not None
    job = build_job(run, units_of(run.spec)[0], 1, "r-1")
    assert job["metadata"]["labels"] == {
        "team": "a",
        "flowrun.io/run": "r",
        "flowrun.io/flow": "etl",
        "flowrun.io/attempt": "1",
    }
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("FlowRun", "u1", True)
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 30
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["X"] == "1"
    assert env["FLOWRUN_NAME"] == "r"
    assert env["FLOWRUN_PARAMETERS"] == '{"day": "2026-01-01"}'
