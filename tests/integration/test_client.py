"""The typed client (`flowrun_operator.client`) against the cluster under test, with the operator running:
create, list with server-side selectors, watch-based wait, cancel, retry, events, attempts, logs and errors."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowrun_operator.api.common import GROUP, VERSION
from flowrun_operator.client import (
    ConcurrencyLimits,
    Connection,
    FlowRuns,
    FlowRunView,
    Forbidden,
    Invalid,
    InvalidState,
    NoLogs,
    NotFound,
    NotInstalled,
    Timeout,
)
from support.flowruns import flowrun, selector_limit, task
from support.kube import Cluster, Kubectl, pod_template, wait_for
from support.operator import OperatorProcess

pytestmark = pytest.mark.integration

TIMEOUT = 90.0
LONG = 300.0


def spec(duration: float = 0, exit_code: int = 0, **fields: Any) -> dict[str, Any]:
    return {"flow": fields.pop("flow", "test-flow"), "template": pod_template(duration, exit_code), **fields}


class CountingCustomApi:
    """The real CustomObjectsApi, counting which list calls pass through it (watches apart)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls["watch" if kwargs.get("watch") else name] += 1
            return method(*args, **kwargs)

        return call


@pytest.fixture
def client(cluster: Cluster, namespace: str) -> Iterator[FlowRuns]:
    connection = Connection(str(cluster.kubeconfig))
    try:
        yield FlowRuns(namespace, connection)
    finally:
        connection.close()


def test_create_and_list_with_server_side_selectors(
    operator: OperatorProcess, client: FlowRuns, kubectl: Kubectl, namespace: str
) -> None:
    client.create("etl-a", spec(LONG, flow="etl"))
    client.create("etl-b", spec(0, flow="etl"))
    client.create("report", spec(0, flow="report"), labels={"team": "ml"})
    with pytest.raises(Invalid, match=r"exactly one of spec\.template or spec\.tasks"):
        client.create("bad", {"flow": "x"})

    done = client.wait("etl-b", until="Succeeded", timeout=TIMEOUT)
    assert done.phase == "Succeeded" and done.task_runs[0].job_name
    client.wait("report", timeout=TIMEOUT)
    client.wait("etl-a", until="Running", timeout=TIMEOUT)

    assert [r.name for r in client.list(flow="etl")] == ["etl-a", "etl-b"]
    assert [r.name for r in client.list(phase="Succeeded")] == ["etl-b", "report"]
    assert [r.name for r in client.list(flow="etl", phase="Running")] == ["etl-a"]
    assert [r.name for r in client.list(phase=["Running", "Succeeded"])] == ["etl-a", "etl-b", "report"]
    assert [r.name for r in client.list(labels={"team": "ml"})] == ["report"]
    assert client.list(flow="nothing") == []

    # The selectors are the API server's: kubectl sends them as they are, and a field the CRD does not
    # declare selectable is refused by the server.
    got = kubectl.json("get", "fr", "--field-selector", "spec.flow=etl", namespace=namespace)
    assert sorted(i["metadata"]["name"] for i in got["items"]) == ["etl-a", "etl-b"]
    got = kubectl.json("get", "fr", "--field-selector", "status.phase=Running", namespace=namespace)
    assert [i["metadata"]["name"] for i in got["items"]] == ["etl-a"]
    refused = kubectl("get", "fr", "--field-selector", "spec.priority=0", namespace=namespace, check=False)
    assert refused.returncode != 0 and "field label not supported" in refused.stderr
    crd = kubectl.json("get", "crd", "flowruns.flowrun.io")
    assert crd["spec"]["versions"][0]["selectableFields"] == [{"jsonPath": ".spec.flow"}, {"jsonPath": ".status.phase"}]


def test_wait_follows_a_watch_and_returns_on_the_change(
    operator: OperatorProcess, client: FlowRuns, cluster: Cluster, namespace: str
) -> None:
    counting = CountingCustomApi(client.connection.custom)
    watched = FlowRuns(namespace, client.connection)
    watched._custom = counting
    client.create("slow", spec(3))
    client.wait("slow", until="Running", timeout=TIMEOUT)

    # An independent watch records the resourceVersion at which the run became Succeeded.
    seen: list[str] = []
    snapshot = client.snapshot()
    stop = threading.Event()

    def observe() -> None:
        for event in client.watch(snapshot.resource_version, name="slow", timeout=60, stop=stop):
            if event.run.phase == "Succeeded":
                seen.append(event.run.resource_version)
                return

    observer = threading.Thread(target=observe, daemon=True)
    observer.start()
    started = time.monotonic()
    run = watched.wait("slow", until="Succeeded", timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    observer.join(timeout=30)
    stop.set()

    assert run.phase == "Succeeded"
    assert seen == [run.resource_version]  # returned with the very change, not a later read
    # One list to start from, then the watch: a poller would have made a request every fraction of a second.
    assert counting.calls["list_namespaced_custom_object"] == 1, counting.calls
    assert counting.calls["watch"] >= 1
    assert elapsed > 1.0  # it did wait for the pod's 3 s


def test_wait_times_out_and_reports_deleted_runs(operator: OperatorProcess, client: FlowRuns, namespace: str) -> None:
    client.create("long", spec(LONG))
    client.wait("long", until="Running", timeout=TIMEOUT)

    started = time.monotonic()
    with pytest.raises(Timeout, match='waiting for flowrun "long" \\(phase Running\\)') as caught:
        client.wait("long", until="Succeeded", timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 10
    assert isinstance(caught.value.last, FlowRunView) and caught.value.last.phase == "Running"

    with pytest.raises(NotFound, match=f'flowrun "ghost" not found in namespace "{namespace}"'):
        client.wait("ghost", timeout=5)

    def delete_soon() -> None:
        time.sleep(1.0)
        client.delete("long")

    threading.Thread(target=delete_soon, daemon=True).start()
    with pytest.raises(NotFound, match="deleted while waiting"):
        client.wait("long", timeout=TIMEOUT)


def test_cancel_retry_events_and_attempts(operator: OperatorProcess, client: FlowRuns) -> None:
    client.create("long", spec(LONG))
    client.create("flaky", spec(0.2, exit_code=3, retries=1))
    client.wait("long", until="Running", timeout=TIMEOUT)

    client.cancel("long")
    client.cancel("long")  # idempotent while unfinished
    cancelled = client.wait("long", timeout=TIMEOUT)
    assert cancelled.phase == "Cancelled" and cancelled.cancel_requested
    with pytest.raises(InvalidState, match="already finished \\(Cancelled\\)"):
        client.cancel("long")
    with pytest.raises(InvalidState, match="was cancelled"):
        client.retry("long")

    failed = client.wait("flaky", timeout=TIMEOUT)
    assert failed.phase == "Failed" and failed.attempt == 2
    rerun = client.retry("flaky")
    assert rerun == 1
    again = client.wait("flaky", until=lambda r: r.reruns >= 1 and r.finished, timeout=TIMEOUT)
    # The rerun starts a new attempt with the run's retries again: attempts 3 and 4.
    assert again.phase == "Failed" and again.attempt == 4

    attempts = client.attempts("flaky")
    assert [(a.task, a.attempt, a.outcome) for a in attempts] == [("main", n, "Failed") for n in (1, 2, 3, 4)]
    assert attempts[-1].job_name == again.status.job_name
    reasons = [e.reason for e in client.events("flaky")]
    assert reasons, "the operator posts an Event for every transition"
    assert all(e.first_time is not None for e in client.events("flaky"))
    assert client.events("ghost") == []
    with pytest.raises(NotFound):
        client.retry("ghost")


def test_logs_error_paths(operator: OperatorProcess, client: FlowRuns, cluster: Cluster) -> None:
    client.create(
        "etl",
        {"flow": "etl", "tasks": [task("extract", duration=LONG), task("load", dependsOn=["extract"])]},
    )
    client.wait("etl", until=lambda r: (r.task("extract") or r).phase == "Running", timeout=TIMEOUT)

    with pytest.raises(NoLogs, match="has tasks; name one of them: extract, load") as usage:
        client.logs("etl")
    assert usage.value.code == 2
    with pytest.raises(NoLogs, match='has no task "nope"'):
        client.logs("etl", "nope")
    with pytest.raises(NoLogs, match='task "load" of flowrun "etl" has no pod yet \\(state Scheduled\\)'):
        client.logs("etl", "load")
    with pytest.raises(NoLogs, match="the current attempt is 1"):
        client.logs("etl", "extract", attempt=4)
    with pytest.raises(NoLogs, match='has no container "nope"; its containers are: main'):
        client.logs("etl", "extract", container="nope")

    stream = client.logs("etl", "extract")
    assert stream.pod.startswith("etl-extract-1-") and stream.container == "main"
    if cluster.is_kwok:
        # KWOK's simulated nodes serve no logs: the API server's answer is explained.
        with pytest.raises(NoLogs, match="did not serve its logs"):
            stream.text()
    else:
        assert isinstance(stream.text(), str)


def test_limits_holders_and_waiting_line(
    operator: OperatorProcess, client: FlowRuns, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(selector_limit("gpu", {"team": "ml"}, 1), namespace)
    ml = {"team": "ml"}
    kubectl.apply(flowrun("holder", duration=LONG, labels=ml), namespace)
    client.wait("holder", until="Running", timeout=TIMEOUT)
    for name, priority in (("a", 0), ("b", 5), ("c", 0)):
        kubectl.apply(flowrun(name, duration=LONG, labels=ml, priority=priority), namespace)
        time.sleep(1.1)  # distinct creation seconds: FIFO among equal priorities

    limits = ConcurrencyLimits(namespace, client.connection)

    def line() -> list[tuple[str, int]] | None:
        view = limits.get("gpu")
        got = [(w.run, w.position) for w in view.waiting]
        return got if [run for run, _ in got] == ["b", "a", "c"] else None

    # Admission order, whatever the pace at which the operator refreshes the positions in the statuses.
    got = wait_for(line, timeout=TIMEOUT, interval=0.3, message="the waiting line b, a, c")
    positions = [p for _, p in got]
    assert positions == sorted(positions) and positions[0] == 1, got
    view = limits.get("gpu")
    assert (view.limit, view.in_use, view.holders) == (1, 1, ["holder"])
    assert [v.name for v in limits.list()] == ["gpu"]
    with pytest.raises(NotFound, match='concurrencylimit "nope" not found'):
        limits.get("nope")


def test_forbidden_and_not_installed_are_named(
    crds: None, cluster: Cluster, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    # A ServiceAccount without any role: every call is forbidden by RBAC.
    kubectl("create", "serviceaccount", "nobody", namespace=namespace)
    token = kubectl("create", "token", "nobody", namespace=namespace).stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster_entry = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": "nobody", "user": {"token": token}}],
        "contexts": [
            {"name": "nobody", "context": {"cluster": cluster_entry["name"], "user": "nobody", "namespace": namespace}}
        ],
        "current-context": "nobody",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    with Connection(str(path)) as connection:
        runs = FlowRuns(None, connection)
        assert runs.namespace == namespace
        with pytest.raises(Forbidden, match='cannot list resource "flowruns"'):
            runs.list()
        with pytest.raises(Forbidden):
            runs.wait("x", timeout=5)

    # A resource the API server does not serve answers 404 without an object name: the CRDs are missing.
    with (
        Connection(str(cluster.kubeconfig)) as connection,
        pytest.raises(NotInstalled, match="install the CRDs first"),
        connection.errors(namespace),
    ):
        connection.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "nosuchkinds")
