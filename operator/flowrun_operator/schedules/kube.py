"""The API calls of the FlowSchedule controller, each in a small thread pool of its own (the official client
is synchronous), so schedule work never queues behind the admission engine's writes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from flowrun_operator.api.common import FLOWRUN_PLURAL, GROUP, VERSION
from flowrun_operator.api.flowschedule import SCHEDULE_LABEL, SCHEDULE_PLURAL
from flowrun_operator.kube.client import event_body, release

log = logging.getLogger(__name__)
T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "flowrun-operator"
# Every call is bounded: (connect, read) seconds.
TIMEOUT = (5, 30)


class AlreadyExists(Exception):
    """409 on create: an object of that name exists."""


class Rejected(Exception):
    """400/422 on create: the API server refuses the object; retrying would not help."""


def load_config() -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = 8
    return kubernetes.client.ApiClient(configuration)


class ScheduleApi:
    def __init__(self, api: kubernetes.client.ApiClient | None = None, *, threads: int = 6) -> None:
        self.api = api or load_config()
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="schedules")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    async def list_runs(self, namespaces: Iterable[str] | None, schedule: str | None = None) -> list[dict[str, Any]]:
        """FlowRuns labelled with a schedule (that one, or any) in these namespaces (None: all)."""
        items, _ = await self.list_runs_at(namespaces, schedule)
        return items

    async def list_runs_at(
        self, namespaces: Iterable[str] | None, schedule: str | None = None
    ) -> tuple[list[dict[str, Any]], dict[str | None, int]]:
        """`list_runs`, and the resourceVersion of each namespace's list (None: all namespaces), from which a
        watch of them continues."""
        selector = f"{SCHEDULE_LABEL}={schedule}" if schedule else SCHEDULE_LABEL
        scopes: list[str | None] = list(namespaces) if namespaces else [None]

        def read() -> tuple[list[dict[str, Any]], dict[str | None, int]]:
            items: list[dict[str, Any]] = []
            versions: dict[str | None, int] = {}
            for ns in scopes:
                if ns is None:
                    response = self.custom.list_cluster_custom_object(
                        GROUP, VERSION, FLOWRUN_PLURAL, label_selector=selector, _request_timeout=TIMEOUT
                    )
                else:
                    response = self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, ns, FLOWRUN_PLURAL, label_selector=selector, _request_timeout=TIMEOUT
                    )
                items.extend(response["items"])
                version = str((response.get("metadata") or {}).get("resourceVersion") or "0")
                versions[ns] = int(version) if version.isdigit() else 0
            return items, versions

        return await self._run(read)

    async def create_run(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        def write() -> dict[str, Any]:
            try:
                response = self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, FLOWRUN_PLURAL, body, _request_timeout=TIMEOUT, _preload_content=False
                )
            except ApiException as error:
                if error.status == 409:
                    raise AlreadyExists(body["metadata"]["name"]) from error
                if error.status in (400, 422):
                    raise Rejected(_api_message(error)) from error
                raise
            created: dict[str, Any] = json.loads(response.data)
            return created

        return await self._run(write)

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, FLOWRUN_PLURAL, name, _request_timeout=TIMEOUT
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return found

        return await self._run(read)

    async def cancel_run(self, namespace: str, name: str) -> None:
        """Set spec.cancel on a run (a run already gone is fine)."""

        def write() -> None:
            try:
                self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    FLOWRUN_PLURAL,
                    name,
                    {"spec": {"cancel": True}},
                    _content_type=MERGE_PATCH,
                    _request_timeout=TIMEOUT,
                )
            except ApiException as error:
                if error.status != 404:
                    raise

        await self._run(write)

    async def delete_run(self, namespace: str, name: str, uid: str) -> None:
        """Delete a run (its Jobs go by garbage collection); the uid precondition spares a run recreated under
        the same name since it was seen."""

        def write() -> None:
            try:
                self.custom.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    FLOWRUN_PLURAL,
                    name,
                    body={"preconditions": {"uid": uid}, "propagationPolicy": "Background"},
                    _request_timeout=TIMEOUT,
                )
            except ApiException as error:
                if error.status not in (404, 409):
                    raise

        await self._run(write)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the schedule's status; None when the schedule is gone."""

        def write() -> dict[str, Any] | None:
            try:
                result: dict[str, Any] = self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    SCHEDULE_PLURAL,
                    name,
                    {"status": status},
                    _content_type=MERGE_PATCH,
                    _request_timeout=TIMEOUT,
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return result

        return await self._run(write)

    async def post_event(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        """A core/v1 Event about the schedule; best effort (an Event lost is history lost, nothing else)."""
        meta = obj.get("metadata") or {}
        body = event_body(obj, event_type, reason, message, COMPONENT)

        def write() -> None:
            release(
                self.core.create_namespaced_event(
                    meta.get("namespace"), body, _request_timeout=TIMEOUT, _preload_content=False
                )
            )

        try:
            await self._run(write)
        except Exception as error:
            log.debug("could not post event %s on %s: %s", reason, meta.get("name"), error)


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except (ValueError, AttributeError):
        return str(error.reason)
