"""Kopf wiring of the FlowSchedule controller (imported by flowrun_operator.main).

Like the admission engine it uses only ``on.event`` handlers: no finalizers or annotations on users' objects.
The handlers only hand the event to the controller; each schedule's own task does the work on its timer.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from flowrun_operator.api.common import FLOWRUN_PLURAL, GROUP, VERSION
from flowrun_operator.api.flowschedule import SCHEDULE_LABEL, SCHEDULE_PLURAL
from flowrun_operator.schedules.controller import ScheduleController
from flowrun_operator.schedules.kube import ScheduleApi

log = logging.getLogger("flowrun_operator.schedules")
MEMO_KEY = "flowschedules"


@kopf.on.startup()
async def start_schedules(memo: kopf.Memo, **_: Any) -> None:
    controller = ScheduleController(ScheduleApi(), memo.get("namespaces") or None)
    # Every scheduled run is known before the first schedule acts, so a restart repeats no time.
    await controller.seed()
    controller.start()
    memo[MEMO_KEY] = controller


@kopf.on.cleanup()
async def stop_schedules(memo: kopf.Memo, **_: Any) -> None:
    controller: ScheduleController | None = memo.get(MEMO_KEY)
    if controller is not None:
        await controller.stop()
        controller.api.close()


@kopf.on.event(GROUP, VERSION, SCHEDULE_PLURAL)
async def flowschedule_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo[MEMO_KEY].on_schedule(event["type"], event["object"])


@kopf.on.event(GROUP, VERSION, FLOWRUN_PLURAL, labels={SCHEDULE_LABEL: kopf.PRESENT})
async def scheduled_run_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo[MEMO_KEY].on_run(event["type"], event["object"])
