"""A watch stream of one kind in one scope, continued from a list's resourceVersion.

The operator lists everything once before it starts (the engine's seed) and then watches from the versions
that list returned, so nothing is listed twice and no change between the list and the watch is missed. The
stream reconnects from the last version it delivered (bookmarks keep that recent while nothing of the kind
changes); when the API server no longer has that version (410 Gone) it asks its owner for a fresh list and
continues from the version of that.

Every event costs the operator only the parse of its line and the engine's projection of the object: the
Jobs are the busiest stream (some six events per run), and a label selector keeps other Jobs off it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes.client.exceptions import ApiException

from flowrun_operator import metrics
from flowrun_operator.api.common import version_of
from flowrun_operator.kube.errors import classify
from flowrun_operator.kube.transport import Transport

log = logging.getLogger(__name__)

# The API server ends a watch after this long; the stream is then continued from its last version.
SERVER_TIMEOUT_SECONDS = 300
# Silence longer than this on an open stream means a dead connection (bookmarks arrive about every minute).
READ_TIMEOUT_SECONDS = SERVER_TIMEOUT_SECONDS + 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0

Deliver = Callable[[str, dict[str, Any]], None]
Relist = Callable[[], Awaitable[int]]


class Gone(Exception):
    """The version to watch from is older than the API server keeps (410): a fresh list is needed."""


def watch_path(group: str, version: str, plural: str, namespace: str | None) -> str:
    """The collection path of a kind, in one namespace or (None) in all of them."""
    base = "/api/v1" if not group else f"/apis/{group}/{version}"
    return f"{base}/namespaces/{quote(namespace)}/{plural}" if namespace else f"{base}/{plural}"


async def json_lines(content: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The JSON documents of a newline-delimited stream, however its chunks cut the lines."""
    pending = b""
    async for chunk in content.iter_any():
        pending += chunk
        if b"\n" not in chunk:
            continue
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)


async def events(
    transport: Transport, path: str, since: int, *, label_selector: str | None = None
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """One watch request from resourceVersion `since`: (type, object) pairs until the server ends it.
    Raises Gone when `since` is too old, ApiException for another refusal."""
    query: dict[str, str] = {
        "watch": "true",
        "resourceVersion": str(since),
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(SERVER_TIMEOUT_SECONDS),
    }
    if label_selector:
        query["labelSelector"] = label_selector
    timeouts = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=READ_TIMEOUT_SECONDS)
    async with contextlib.AsyncExitStack() as stack:
        try:
            content = await stack.enter_async_context(transport.stream(f"{path}?{urlencode(query)}", timeouts))
        except ApiException as error:
            if error.status == 410:
                raise Gone(str(error.reason)) from error
            raise
        async for event in json_lines(content):
            kind = str(event.get("type", ""))
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(obj.get("message", "too old resource version"))
                raise ApiException(status=int(obj.get("code") or 500), reason=str(obj.get("reason") or "watch error"))
            yield kind, obj


async def stop_streams(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks running `WatchStream.run` and wait until they have ended."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class WatchStream:
    """Keeps one kind of one scope flowing into `deliver`, from `since` on, until cancelled."""

    def __init__(
        self,
        transport: Transport,
        path: str,
        *,
        name: str,
        deliver: Deliver,
        relist: Relist,
        label_selector: str | None = None,
    ) -> None:
        self.transport = transport
        self.path = path
        self.name = name
        self.deliver = deliver
        self.relist = relist
        self.label_selector = label_selector
        self.version = 0
        self._random = random.Random()
        self._events = metrics.WATCH_EVENTS.labels(name)

    def _deliver(self, kind: str, obj: dict[str, Any]) -> None:
        # A failure of the receiver must not end the stream (the next events would wait for a reconnect);
        # what this event would have told comes again with the object's next event or the next re-list.
        try:
            self.deliver(kind, obj)
        except Exception:
            metrics.WATCH_ERRORS.labels(self.name, "DeliveryFailed").inc()
            meta = obj.get("metadata") or {}
            log.exception(
                "watch of %s: handling %s of %s/%s failed", self.name, kind, meta.get("namespace"), meta.get("name")
            )

    async def run(self, since: int) -> None:
        self.version = since
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            opened = loop.time()
            delivered = False
            try:
                async for kind, obj in events(
                    self.transport, self.path, self.version, label_selector=self.label_selector
                ):
                    delivered = True
                    failures = 0
                    self.version = version_of(obj) or self.version
                    if kind != "BOOKMARK":
                        self._events.inc()
                        self._deliver(kind, obj)
                if delivered or loop.time() - opened > 1.0:
                    continue  # the server's timeout ended it: continue from the last version at once
                metrics.WATCH_ERRORS.labels(self.name, "ClosedAtOnce").inc()
            except asyncio.CancelledError:
                raise
            except Gone as gone:
                metrics.WATCH_ERRORS.labels(self.name, "Gone").inc()
                log.info("watch of %s: %s; listing afresh", self.name, gone)
                try:
                    self.version = await self.relist()
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning("watch of %s: the re-list failed (%s): %s", self.name, classify(error).reason, error)
            except Exception as error:
                reason = classify(error).reason
                metrics.WATCH_ERRORS.labels(self.name, reason).inc()
                log.warning("watch of %s interrupted (%s): %s", self.name, reason, error)
            failures += 1
            ceiling = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (failures - 1))
            await asyncio.sleep(ceiling / 2 + self._random.uniform(0, ceiling / 2))
