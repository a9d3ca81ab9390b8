"""The Kopf wiring's assumptions: only event handlers are registered, which is what lets every event get a
fresh per-object record (EventMemories) instead of one kept per object for its lifetime."""

from __future__ import annotations

import asyncio

import kopf

import flowrun_operator.main  # noqa: F401  (registers every handler, the FlowSchedule controller's too)
from flowrun_operator.handlers.operator import EventMemories


def test_only_event_handlers_are_registered() -> None:
    registry = kopf.get_default_registry()
    # Daemons and timers (spawning), change detection (create/update/resume/delete), indexes and webhooks
    # keep per-object state in Kopf's memories across events; EventMemories keeps none.
    assert registry._spawning.get_all_handlers() == []
    assert registry._changing.get_all_handlers() == []
    assert registry._indexing.get_all_handlers() == []
    assert registry._webhooks.get_all_handlers() == []
    # FlowRuns, Jobs and limits come from the operator's own streams; Kopf watches only the FlowSchedules.
    assert [h.selector.any_name for h in registry._watching.get_all_handlers()] == ["flowschedules"]


def test_event_memories_keep_nothing_between_events_and_hand_out_the_memo() -> None:
    async def recall_many() -> None:
        memories = EventMemories()
        memobase = kopf.Memo(engine="the engine")
        for i in range(1000):
            body = {"metadata": {"uid": f"uid-{i}", "name": f"r{i}", "namespace": "ns"}}
            memory = await memories.recall(body, memobase=memobase, noticed_by_listing=i % 2 == 0)
            assert memory.memo["engine"] == "the engine"
            assert memory.noticed_by_listing == (i % 2 == 0)
        assert list(memories.iter_all_memories()) == []

    asyncio.run(recall_many())
