"""The operator's API client keeps its connections: calls whose response body the operator does not need
(Events, Job deletes) must still hand their connection back to the pool. A call that opens a new connection
pays a TLS handshake on both ends, which once cost the operator more CPU than the calls themselves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kubernetes
import pytest

from flowrun_operator.kube.client import Kube

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
