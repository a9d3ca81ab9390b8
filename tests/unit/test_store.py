from typing import Any

from flowrun_operator.handlers.store import Store
from flowrun_operator.kube.client import Listing


def job(name: str, rv: str, *, run: str = "r") -> dict[str, Any]:
    labels = {"flowrun.io/run": run, "flowrun.io/attempt": "1"}
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "labels": labels}}


def run(name: str, rv: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": "u-" + name, "resourceVersion": rv},
        "spec": {"flow": "f", "template": {"spec": {"containers": []}}},
        "status": status or {},
    }


def test_older_versions_never_replace_newer_ones() -> None:
    store = Store()
    assert store.put_run(run("a", "10", {"phase": "Running"})) == "ns"
    assert store.put_run(run("a", "9", {"phase": "Submitted"})) is None
    assert store.runs["ns"]["a"].status.phase == "Running"


def test_a_new_object_under_a_reused_name_replaces_the_old_one() -> None:
    store = Store()
    store.put_run(run("a", "10"))
    newer = run("a", "5")
    newer["metadata"]["uid"] = "other"
    assert store.put_run(newer) == "ns"
    assert store.runs["ns"]["a"].uid == "other"


def test_jobs_without_the_operators_labels_are_ignored() -> None:
    store = Store()
    assert store.put_job({"metadata": {"name": "x", "namespace": "ns", "labels": {}}}) is None
    assert store.put_job(job("r-1", "3")) == "ns"
    assert [j.name for j in store.jobs_by_run("ns")["r"]] == ["r-1"]


def test_prune_forgets_what_a_fresh_list_no_longer_returns_but_keeps_newer_writes() -> None:
    store = Store()
    store.put_job(job("gone-1", "5", run="gone"))
    store.put_job(job("kept-1", "6", run="kept"))
    store.put_job(job("fresh-1", "50", run="fresh"))  # written after the list was taken
    store.put_run(run("gone", "4"))
    changed = store.prune(
        Listing(flowruns=[], concurrencylimits=[], jobs=[job("kept-1", "6", run="kept")], resource_version=20)
    )
    assert changed == {"ns"}
    assert sorted(store.jobs["ns"]) == ["fresh-1", "kept-1"]
    assert store.runs["ns"] == {}


def test_assumed_status_survives_echoes_until_its_write_settles() -> None:
    store = Store()
    store.put_run(run("a", "10", {"phase": "Pending"}))
    first = {"phase": "Submitted"}
    second = {"phase": "Running"}
    store.assume_run_status("ns", "a", first)
    store.assume_run_status("ns", "a", second)
    # the response to the first write comes back while the second is still being written
    store.settle_run_status("ns", "a", first)
    store.put_run(run("a", "11", first))
    assert store.runs["ns"]["a"].status.phase == "Running"
    # a spec change is recorded, with the assumed status on top
    changed = run("a", "12", first)
    changed["spec"]["priority"] = 5
    store.put_run(changed)
    assert store.runs["ns"]["a"].spec is not None and store.runs["ns"]["a"].spec.priority == 5
    assert store.runs["ns"]["a"].status.phase == "Running"
    store.settle_run_status("ns", "a", second)
    store.put_run(run("a", "13", second))
    assert store.assumed == {}
    store.put_run(run("a", "14", {"phase": "Succeeded"}))
    assert store.runs["ns"]["a"].status.phase == "Succeeded"
