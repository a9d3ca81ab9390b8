"""Small, idempotent helpers for the operator's API calls.

Writes and single reads go from the event loop through `Transport` (aiohttp, with the official client's
credentials). Lists of a namespace go through the official client in a thread pool, since parsing a page of
500 objects would hold the event loop; their bodies travel as plain dicts (`_preload_content=False` skips
the client's slow model deserialization).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import kubernetes
from kubernetes.client.exceptions import ApiException

from flowrun_operator import metrics
from flowrun_operator.api.common import FLOWRUN_PLURAL, GROUP, LIMIT_PLURAL, RUN_LABEL, VERSION, version_of
from flowrun_operator.kube.errors import classify
from flowrun_operator.kube.transport import Transport

log = logging.getLogger(__name__)
T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
# (connect, read) socket timeouts of every request, and an overall bound on a call including its wait
# for a pool thread. Lists of a large namespace take longest, hence their own read timeout.
REQUEST_TIMEOUT = (5.0, 20.0)
LIST_TIMEOUT = (5.0, 120.0)
CALL_TIMEOUT_SECONDS = 150.0
LIST_PAGE = 500


def load_config() -> kubernetes.client.ApiClient:
    """In-cluster credentials when running in a Pod, else $KUBECONFIG / ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    # The official client's connection pool serves only lists (one page at a time); `Transport` keeps its own.
    configuration.connection_pool_maxsize = 4
    return kubernetes.client.ApiClient(configuration)


@dataclass(frozen=True, slots=True)
class ListedPage:
    """One page of a list: objects of one kind (`plural`), already slimmed."""

    plural: str
    items: list[dict[str, Any]]
    # The list's resourceVersion: every page of one list is served from the snapshot of its first page, so
    # an object of this kind missing from all of them and not newer than this was gone when it was taken.
    resource_version: int
    # The namespace listed, or None for all of them (a watch continues the list of the same scope).
    namespace: str | None = None


def event_body(obj: dict[str, Any], event_type: str, reason: str, message: str, component: str) -> dict[str, Any]:
    """A core/v1 Event about `obj` (an object or a reference with apiVersion, kind and metadata)."""
    meta = obj.get("metadata") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now[:19] + "Z",
        "lastTimestamp": now[:19] + "Z",
        "eventTime": now,
        "action": reason,
        "count": 1,
    }


def release(response: Any) -> None:
    """Read a raw (`_preload_content=False`) response of the official client to its end so its connection
    goes back to the pool. An unread response keeps its connection out of the pool until garbage collection,
    so the next call opens a new one: a TLS handshake per call."""
    response.read()
    response.release_conn()


def _read_page(
    fetch: Callable[[str | None], dict[str, Any]], token: str | None, slim: Callable[[dict[str, Any]], Any]
) -> tuple[list[dict[str, Any]], int, str | None]:
    """One page: its slimmed items, its list's resourceVersion and the token of the next page (None: last)."""
    page = fetch(token)
    items = [slim(item) for item in page.get("items") or []]
    return items, version_of(page), (page.get("metadata") or {}).get("continue") or None


def _slim_custom(obj: dict[str, Any]) -> dict[str, Any]:
    """A listed FlowRun or ConcurrencyLimit without its managedFields (often its largest part)."""
    (obj.get("metadata") or {}).pop("managedFields", None)
    return obj


def _slim_job(obj: dict[str, Any]) -> dict[str, Any]:
    """What the engine reads of a listed Job: its metadata (without managedFields) and status; the spec and
    its pod template are most of a Job's size and are never read back."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "status": obj.get("status") or {}}


class Conflict(Exception):
    """The object exists already (409 on create)."""


def _custom_path(plural: str, namespace: str, name: str, subresource: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{plural}/{quote(name)}"
    return f"{path}/{subresource}" if subresource else path


def _job_path(namespace: str, name: str = "") -> str:
    path = f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs"
    return f"{path}/{quote(name)}" if name else path


def _delete_options(propagation: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}


# Events only tell the history: at most this many in flight keeps a burst of them from delaying the writes
# that start work (Job creation) and from crowding a busy API server.
EVENTS_IN_FLIGHT = 4


class Kube:
    """The operator's writes and initial reads."""

    def __init__(self, api: kubernetes.client.ApiClient | None = None, *, threads: int = 8) -> None:
        self.api = api or load_config()
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.batch = kubernetes.client.BatchV1Api(self.api)
        self.transport = Transport(self.api.configuration)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")
        self._events_in_flight = asyncio.Semaphore(EVENTS_IN_FLIGHT)

    async def _call(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
        read_body: bool = True,
    ) -> dict[str, Any] | None:
        # The socket timeouts (REQUEST_TIMEOUT) end a hung connection; the total bound also covers the wait
        # for a pooled connection, so no caller waits for ever.
        started = time.perf_counter()
        try:
            return await self.transport.request(
                method,
                path,
                body=body,
                content_type=content_type,
                socket_seconds=REQUEST_TIMEOUT,
                call_seconds=CALL_TIMEOUT_SECONDS,
                read_body=read_body,
            )
        except Exception as error:
            metrics.API_ERRORS.labels(verb, classify(error).reason).inc()
            raise
        finally:
            metrics.API_REQUESTS.labels(verb).observe(time.perf_counter() - started)

    async def _run(self, fn: Callable[[], T], verb: str = "call") -> T:
        # The socket timeout (REQUEST_TIMEOUT) ends a hung connection; this bound also covers a call
        # queued behind others in the pool, so no caller waits for ever.
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self._pool, fn), CALL_TIMEOUT_SECONDS
            )
        except Exception as error:
            metrics.API_ERRORS.labels(verb, classify(error).reason).inc()
            raise
        finally:
            metrics.API_REQUESTS.labels(verb).observe(time.perf_counter() - started)

    async def close(self) -> None:
        await self.transport.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    # ----------------------------------------------------------------------------------------- reads

    async def list_pages(self, namespaces: Iterable[str] | None) -> AsyncIterator[ListedPage]:
        """ConcurrencyLimits, the operator's Jobs and FlowRuns (in that order), in the given namespaces or all
        of them, one page of LIST_PAGE objects at a time.

        Each page is cut down to what the engine reads in the pool thread that parsed it, and the next page
        is requested only once the caller has taken this one: a re-list of a namespace with tens of
        thousands of runs holds one page, not the namespace."""
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        for ns in scopes:
            sources: list[tuple[str, Callable[[str | None], dict[str, Any]], Callable[[dict[str, Any]], Any]]] = [
                (LIMIT_PLURAL, partial(self._custom_page, ns, LIMIT_PLURAL), _slim_custom),
                ("jobs", partial(self._job_page, ns), _slim_job),
                (FLOWRUN_PLURAL, partial(self._custom_page, ns, FLOWRUN_PLURAL), _slim_custom),
            ]
            for plural, fetch, slim in sources:
                token: str | None = None
                version: int | None = None
                while True:
                    items, version_here, token = await self._run(partial(_read_page, fetch, token, slim), verb="list")
                    version = version_here if version is None else version
                    yield ListedPage(plural, items, version, ns)
                    if token is None:
                        break

    def _custom_page(self, ns: str | None, plural: str, token: str | None) -> dict[str, Any]:
        paging: dict[str, Any] = {"limit": LIST_PAGE, "_request_timeout": LIST_TIMEOUT}
        if token:
            paging["_continue"] = token
        if ns is None:
            response = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, _preload_content=False, **paging)
        else:
            response = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, plural, _preload_content=False, **paging
            )
        page: dict[str, Any] = json.loads(response.data)
        return page

    def _job_page(self, ns: str | None, token: str | None) -> dict[str, Any]:
        paging: dict[str, Any] = {"limit": LIST_PAGE, "_request_timeout": LIST_TIMEOUT, "label_selector": RUN_LABEL}
        if token:
            paging["_continue"] = token
        if ns is None:
            response = self.batch.list_job_for_all_namespaces(_preload_content=False, **paging)
        else:
            response = self.batch.list_namespaced_job(ns, _preload_content=False, **paging)
        page: dict[str, Any] = json.loads(response.data)
        return page

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("get", "GET", _custom_path(plural, namespace, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("get", "GET", _job_path(namespace, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    # ---------------------------------------------------------------------------------------- writes

    async def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Job; raises Conflict when one of that name exists already."""
        try:
            job = await self._call("create", "POST", _job_path(namespace), body=body)
        except ApiException as error:
            if error.status == 409:
                raise Conflict(body["metadata"]["name"]) from error
            raise
        assert job is not None
        return job

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job in the foreground: it stays (with a deletionTimestamp) until its pods are gone, so
        its slots stay held while they terminate. A Job already gone is fine."""
        try:
            await self._call(
                "delete", "DELETE", _job_path(namespace, name), body=_delete_options("Foreground"), read_body=False
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; returns the object as stored. With `resource_version`, the
        patch applies only to that version of the object (409 otherwise): a status decided from a view that
        missed someone else's change is not written over it."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        stored = await self._call(
            "patch", "PATCH", _custom_path(plural, namespace, name, "status"), body=body, content_type=MERGE_PATCH
        )
        assert stored is not None
        return stored

    async def delete_object(self, plural: str, namespace: str, name: str) -> None:
        try:
            await self._call(
                "delete",
                "DELETE",
                _custom_path(plural, namespace, name),
                body=_delete_options("Background"),
                read_body=False,
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def post_event(
        self, obj: dict[str, Any], event_type: str, reason: str, message: str, component: str = "flowrun-operator"
    ) -> None:
        """Record a core/v1 Event about an object, so `kubectl describe` shows its history."""
        meta = obj.get("metadata") or {}
        body = event_body(obj, event_type, reason, message, component)
        path = f"/api/v1/namespaces/{quote(str(meta.get('namespace')))}/events"

        try:
            async with self._events_in_flight:
                await self._call("event", "POST", path, body=body, read_body=False)
            metrics.EVENTS_POSTED.labels(reason).inc()
        except Exception as error:  # Events are best effort: never let one fail a reconcile pass.
            log.debug("could not post event %s on %s: %s", reason, meta.get("name"), error)
