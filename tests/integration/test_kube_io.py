"""The operator's own API I/O (flowrun_operator.kube.client) against the real API server.

Connections: calls whose response body the operator does not need (Events, Job deletes) must still hand their
connection back to the pool; a call that opens a new connection pays a TLS handshake on both ends, which once
cost the operator more CPU than the calls themselves. Lists: read in pages, every page, cut down to what the
engine reads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kubernetes
import pytest

from flowrun_operator.kube import client as kube_client
from flowrun_operator.kube.client import Kube, ListedPage
from support.flowruns import flowrun
from support.kube import Kubectl

pytestmark = pytest.mark.integration

CALLS = 30


def test_events_and_deletes_reuse_pooled_connections(kubeconfig: Path, namespace: str) -> None:
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    kube = Kube(api, threads=1)
    pool = api.rest_client.pool_manager.connection_from_url(api.configuration.host)
    target = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": namespace}}

    async def calls() -> None:
        for i in range(CALLS):
            await kube.post_event(target, "Normal", "Probe", f"call {i}")
            await kube.delete_job(namespace, f"absent-{i}")  # 404: fine for a delete

    try:
        asyncio.run(calls())
    finally:
        kube.close()
    events = kube_events(api, namespace)
    assert events == CALLS, f"{events} of {CALLS} Events were stored"
    # One thread for the calls and one for the Events: a connection each, however many calls.
    assert pool.num_connections <= 2, f"{pool.num_connections} connections opened for {2 * CALLS} calls"


def kube_events(api: kubernetes.client.ApiClient, namespace: str) -> int:
    listing = kubernetes.client.CoreV1Api(api).list_namespaced_event(namespace, field_selector="reason=Probe")
    return len(listing.items)


def test_list_reads_every_page_and_keeps_only_what_the_engine_reads(
    crds: None, kubeconfig: Path, namespace: str, kubectl: Kubectl, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [f"paged-{i}" for i in range(7)]
    for name in runs:
        kubectl.apply(flowrun(name, scheduledStart="2099-01-01T00:00:00Z"), namespace=namespace)
    jobs = [f"job-{i}" for i in range(5)]
    for name in jobs:
        kubectl.apply(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "labels": {"flowrun.io/run": "paged-0"}},
                "spec": {
                    "suspend": True,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}},
                },
            },
            namespace=namespace,
        )
    monkeypatch.setattr(kube_client, "LIST_PAGE", 2)  # 4 pages of runs, 3 of Jobs
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    kube = Kube(api, threads=1)

    async def read() -> list[ListedPage]:
        return [page async for page in kube.list_pages([namespace])]

    try:
        pages = asyncio.run(read())
    finally:
        kube.close()
    assert [(p.plural, len(p.items)) for p in pages] == [
        ("concurrencylimits", 0),
        *[("jobs", n) for n in (2, 2, 1)],
        *[("flowruns", n) for n in (2, 2, 2, 1)],
    ]
    for plural in ("jobs", "flowruns"):
        versions = {p.resource_version for p in pages if p.plural == plural}
        assert len(versions) == 1 and versions.pop() > 0, "every page of a list is served from one snapshot"
    listed_runs = [r for p in pages if p.plural == "flowruns" for r in p.items]
    listed_jobs = [j for p in pages if p.plural == "jobs" for j in p.items]
    assert sorted(r["metadata"]["name"] for r in listed_runs) == runs
    assert sorted(j["metadata"]["name"] for j in listed_jobs) == jobs
    for obj in [*listed_runs, *listed_jobs]:
        assert "managedFields" not in obj["metadata"]
    for job in listed_jobs:
        assert set(job) == {"apiVersion", "kind", "metadata", "status"}  # no spec, no pod template
        assert job["metadata"]["labels"]["flowrun.io/run"] == "paged-0"
    assert all(run["spec"]["flow"] for run in listed_runs)
