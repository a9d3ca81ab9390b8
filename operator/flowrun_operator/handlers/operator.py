"""Kopf wiring. The handlers are thin on purpose: each watch event updates the engine's view and marks the
keys it affects (flowrun_operator.engine), where all decisions are made.

The engine's FlowRuns, Jobs and ConcurrencyLimits do not go through Kopf's event processing: a stream per
kind and scope (flowrun_operator.kube.watch) continues the engine's seeding list, so nothing is listed twice
and nothing between the list and the watch is missed, and hands each event to the engine for the cost of
parsing it. Kopf runs the startup and cleanup, the probes and the FlowSchedule watch, with `on.event`
handlers only: they add no finalizers and no annotations to users' objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import kopf
from kopf._core.reactor.inventory import ResourceMemories, ResourceMemory

from flowrun_operator.api.common import FLOWRUN_PLURAL, GROUP, LIMIT_PLURAL, RUN_LABEL, VERSION
from flowrun_operator.engine import Engine
from flowrun_operator.kube.client import Kube
from flowrun_operator.kube.watch import WatchStream, stop_streams, watch_path

log = logging.getLogger("flowrun_operator")


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf computes a "last handled" essence of every object on every event (a deep copy of the whole
    body) for change-detection handlers. This operator has none, so that work is skipped."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        # Equal to what `build` returns, so Kopf's per-event diff of the two is empty at once.
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class NoProgress(kopf.ProgressStorage):
    """Kopf's progress storage records the state of change-detection handlers (and copies every event's
    essence to clean it of that record). Only event handlers run here, which have no progress."""

    def fetch(self, *, key: Any, body: kopf.Body) -> None:
        return None

    def store(self, *, key: Any, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return essence


class EventMemories(ResourceMemories):
    """Kopf keeps a record per object it has seen until the object is deleted (a copy of the memo, an error
    throttler, daemon and index state): about 0.8 KB each, some 50 MB with 60,000 finished runs kept. This
    operator has no daemons, timers, indexes or change-detection handlers, and its event handlers keep all
    state in the engine, so each event gets a fresh record that goes with it. (Kopf's memories are not part
    of its exported API; `kopf.operator(memories=...)` is, and the pinned version is tested.)"""

    async def recall(
        self,
        raw_body: kopf.RawBody,
        *,
        memobase: Any = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> ResourceMemory:
        return await super().recall(raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=True)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.persistence.finalizer = "flowrun.io/finalizer"  # never added: only on.event handlers exist
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.progress_storage = NoProgress()
    # The watched resources are fixed, so Kopf needs no CRD or namespace watches (nor the RBAC for them).
    settings.scanning.disabled = True
    # Kopf keeps a worker task per object while its events flow; with tens of thousands of runs they should
    # not linger after a burst (the handlers are instant, so nothing waits on them).
    settings.queueing.idle_timeout = 1.0
    kube = Kube()
    engine = Engine(kube, namespaces=memo.get("namespaces") or None)
    # Read every run, Job and limit before the first admission, so a restart never over-admits.
    await engine.seed()
    engine.start()
    memo["kube"] = kube
    memo["engine"] = engine
    memo["watches"] = [
        asyncio.create_task(stream.run(since), name=f"watch-{stream.name}") for stream, since in _streams(kube, engine)
    ]
    scope = ", ".join(memo.get("namespaces") or []) or "all namespaces"
    log.info("flowrun-operator watching FlowRuns, ConcurrencyLimits and Jobs in %s", scope)


def _streams(kube: Kube, engine: Engine) -> list[tuple[WatchStream, int]]:
    """A stream per kind and watched scope, each continuing the engine's seeding list of that kind."""
    kinds: list[tuple[str, str, str, Callable[[str, dict[str, Any]], None], str | None]] = [
        (GROUP, VERSION, LIMIT_PLURAL, engine.on_limit, None),
        ("batch", "v1", "jobs", engine.on_job, RUN_LABEL),
        (GROUP, VERSION, FLOWRUN_PLURAL, engine.on_run, None),
    ]
    scopes: list[str | None] = list(engine.namespaces) if engine.namespaces else [None]
    streams = []
    for namespace in scopes:
        for group, version, plural, deliver, selector in kinds:
            stream = WatchStream(
                kube.transport,
                watch_path(group, version, plural, namespace),
                name=plural,
                deliver=deliver,
                relist=partial(engine.relist, plural, namespace),
                label_selector=selector,
            )
            streams.append((stream, engine.list_versions[(plural, namespace)]))
    return streams


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await stop_streams(memo.get("watches") or [])
    engine: Engine | None = memo.get("engine")
    if engine is not None:
        await engine.stop()
    kube: Kube | None = memo.get("kube")
    if kube is not None:
        await kube.close()


@kopf.on.probe(id="engine")
async def engine_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    engine: Engine | None = memo.get("engine")
    if engine is None:
        return {"ready": False}
    return {"ready": True, "rounds": engine.rounds, "jobsCreated": engine.jobs_created, "errors": engine.errors}
