"""Kopf wiring of the FlowSchedule controller (imported by flowrun_operator.main).

Like the admission engine it uses only ``on.event`` handlers: no finalizers or annotations on users' objects.
The handlers only hand the event to the controller; each schedule's own task does the work on its timer. The
scheduled runs come from a watch stream of their own (flowrun_operator.kube.watch), so the busy stream of all
FlowRuns never goes through Kopf.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

import kopf

from flowrun_operator.api.common import FLOWRUN_PLURAL, GROUP, VERSION
from flowrun_operator.api.flowschedule import SCHEDULE_LABEL, SCHEDULE_PLURAL
from flowrun_operator.kube.transport import Transport
from flowrun_operator.kube.watch import WatchStream, stop_streams, watch_path
from flowrun_operator.schedules.controller import ScheduleController
from flowrun_operator.schedules.kube import ScheduleApi

log = logging.getLogger("flowrun_operator.schedules")
MEMO_KEY = "flowschedules"
STREAMS_KEY = "flowschedule-streams"


@kopf.on.startup()
async def start_schedules(memo: kopf.Memo, **_: Any) -> None:
    api = ScheduleApi()
    controller = ScheduleController(api, memo.get("namespaces") or None)
    # Every scheduled run is known before the first schedule acts, so a restart repeats no time.
    versions = await controller.seed()
    controller.start()
    memo[MEMO_KEY] = controller
    # Only the scheduled runs (a server-side label selector), continuing the seeding list.
    transport = Transport(api.api.configuration)
    memo[STREAMS_KEY] = (
        transport,
        [
            asyncio.create_task(
                WatchStream(
                    transport,
                    watch_path(GROUP, VERSION, FLOWRUN_PLURAL, namespace),
                    name="scheduled-flowruns",
                    deliver=controller.on_run,
                    relist=partial(controller.relist, namespace),
                    label_selector=SCHEDULE_LABEL,
                ).run(since),
                name="watch-scheduled-flowruns",
            )
            for namespace, since in versions.items()
        ],
    )


@kopf.on.cleanup()
async def stop_schedules(memo: kopf.Memo, **_: Any) -> None:
    streams: tuple[Transport, list[asyncio.Task[None]]] | None = memo.get(STREAMS_KEY)
    if streams is not None:
        transport, tasks = streams
        await stop_streams(tasks)
        await transport.close()
    controller: ScheduleController | None = memo.get(MEMO_KEY)
    if controller is not None:
        await controller.stop()
        controller.api.close()


@kopf.on.event(GROUP, VERSION, SCHEDULE_PLURAL)
async def flowschedule_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo[MEMO_KEY].on_schedule(event["type"], event["object"])
