"""The operator's own API I/O (flowrun_operator.kube.client) against the real API server.

Calls: every kind the operator makes works and its refusals arrive as classified errors; calls whose response
body the operator does not need (Events, Job deletes) must still hand their connection back to the pool, since
a call that opens a new connection pays a TLS handshake on both ends, which once cost the operator more CPU
than the calls themselves. Lists: read in pages, every page, cut down to what the
engine reads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from flowrun_operator.kube import client as kube_client
from flowrun_operator.kube.client import Conflict, Kube, ListedPage
from flowrun_operator.kube.errors import ErrorKind, classify
from flowrun_operator.kube.watch import events, watch_path
from support.flowruns import flowrun
from support.kube import Kubectl

pytestmark = pytest.mark.integration

CALLS = 30


def test_every_call_kind_works_reuses_one_connection_and_raises_classified_errors(
    crds: None, kubeconfig: Path, namespace: str, kubectl: Kubectl
) -> None:
    kubectl.apply(flowrun("io-run", scheduledStart="2099-01-01T00:00:00Z"), namespace=namespace)
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    kube = Kube(api, threads=1)
    target = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": namespace}}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "io-job", "labels": {"flowrun.io/run": "io-run"}},
        "spec": {
            "suspend": True,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}},
        },
    }

    async def calls() -> None:
        try:
            run = await kube.get_object("flowruns", namespace, "io-run")
            assert run is not None and run["metadata"]["name"] == "io-run"
            assert await kube.get_object("flowruns", namespace, "absent") is None
            version = run["metadata"]["resourceVersion"]
            stored = await kube.patch_status("flowruns", namespace, "io-run", {"message": "probe"}, version)
            assert stored["status"]["message"] == "probe"
            with pytest.raises(ApiException) as stale:
                await kube.patch_status("flowruns", namespace, "io-run", {"message": "stale"}, version)
            assert classify(stale.value).kind is ErrorKind.CONFLICT
            created = await kube.create_job(namespace, job)
            assert created["metadata"]["uid"]
            with pytest.raises(Conflict):
                await kube.create_job(namespace, job)
            read = await kube.get_job(namespace, "io-job")
            assert read is not None and read["metadata"]["uid"] == created["metadata"]["uid"]
            for i in range(CALLS):
                await kube.post_event(target, "Normal", "Probe", f"call {i}")
                await kube.delete_job(namespace, f"absent-{i}")  # 404: fine for a delete
            await kube.delete_job(namespace, "io-job")
            await kube.delete_object("flowruns", namespace, "io-run")
        finally:
            await kube.close()

    asyncio.run(calls())
    events = kube_events(api, namespace)
    assert events == CALLS, f"{events} of {CALLS} Events were stored"
    assert kube.transport.connections_opened == 1, f"{kube.transport.connections_opened} connections for one caller"
    assert kubectl.json("get", "flowruns", namespace=namespace)["items"] == []
    job_left = kubectl.json("get", "jobs", namespace=namespace)["items"]
    assert all(j["metadata"].get("deletionTimestamp") for j in job_left), "the Job is deleted (in the foreground)"


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

    async def read_and_close() -> list[ListedPage]:
        try:
            return await read()
        finally:
            await kube.close()

    pages = asyncio.run(read_and_close())
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
    assert {p.namespace for p in pages} == {namespace}


def suspended_job(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "suspend": True,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}},
        },
    }


def test_the_job_stream_continues_a_list_and_carries_only_the_operators_jobs(
    crds: None, kubeconfig: Path, namespace: str, kubectl: Kubectl
) -> None:
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    batch = kubernetes.client.BatchV1Api(api)
    listed = batch.list_namespaced_job(namespace, label_selector="flowrun.io/run")
    since = int(listed.metadata.resource_version)
    # Created after the list, in this order: the stream must deliver the first and the third, and since a
    # watch delivers in the order of the changes, the unlabelled Job would come before "third" if at all.
    kubectl.apply(suspended_job("first", {"flowrun.io/run": "r1"}), namespace=namespace)
    kubectl.apply(suspended_job("unlabelled", {"team": "other"}), namespace=namespace)
    kubectl.apply(suspended_job("third", {"flowrun.io/run": "r3"}), namespace=namespace)
    kube = Kube(api, threads=1)
    path = watch_path("batch", "v1", "jobs", namespace)

    async def read() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        try:
            async with asyncio.timeout(30):
                async for kind, obj in events(kube.transport, path, since, label_selector="flowrun.io/run"):
                    if kind != "BOOKMARK":
                        seen.append((kind, obj["metadata"]["name"]))
                    if obj["metadata"].get("name") == "third":
                        break
        finally:
            await kube.close()
        return seen

    seen = asyncio.run(read())
    assert [name for kind, name in seen if kind == "ADDED"] == ["first", "third"]
    assert {name for _, name in seen} == {"first", "third"}  # the Job controller may update "first" meanwhile
