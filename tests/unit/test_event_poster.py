"""Events wait as small records in a bounded queue and are posted in order by a few workers."""

from __future__ import annotations

import asyncio
from typing import Any

from flowrun_operator import metrics
from flowrun_operator.engine.act import EventPoster, ObjectRef


def ref(name: str) -> ObjectRef:
    return ObjectRef("flowrun.io/v1alpha1", "FlowRun", "ns", name, f"uid-{name}", "7")


def dropped(reason: str) -> float:
    value = metrics.EVENTS_DROPPED.labels(reason)._value.get()
    return float(value)


def test_events_are_posted_in_order_by_at_most_the_workers_and_wait_as_records_not_tasks() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        posted: list[str] = []
        started: list[str] = []
        in_flight = 0
        most = 0

        async def post(obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
            nonlocal in_flight, most
            started.append(message)
            in_flight += 1
            most = max(most, in_flight)
            await gate.wait()
            posted.append(obj["metadata"]["name"] + ":" + message)
            in_flight -= 1

        poster = EventPoster(post, workers=3, limit=10_000)
        await asyncio.sleep(0)
        tasks_before = len(asyncio.all_tasks())
        for i in range(1000):
            poster.submit(ref(f"r{i}"), "Normal", "Pending", f"m{i}")
        await asyncio.sleep(0.01)
        assert len(asyncio.all_tasks()) == tasks_before, "a waiting Event must not be a task"
        assert poster.pending() == 1000 and most == 3
        gate.set()
        for _ in range(200):
            if poster.pending() == 0:
                break
            await asyncio.sleep(0.01)
        assert poster.pending() == 0 and most == 3
        assert sorted(posted) == sorted(f"r{i}:m{i}" for i in range(1000))
        assert started == [f"m{i}" for i in range(1000)], "posted in the order they were submitted"
        await poster.close()

    asyncio.run(scenario())


def test_beyond_the_limit_new_events_are_dropped_and_counted_and_a_failed_post_does_not_stop_the_poster() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        posted: list[str] = []

        async def post(obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
            await gate.wait()
            if message == "bad":
                raise RuntimeError("refused")
            posted.append(message)

        poster = EventPoster(post, workers=1, limit=5)
        before = dropped("Overflow")
        poster.submit(ref("a"), "Warning", "Overflow", "bad")
        await asyncio.sleep(0.01)  # "bad" is in flight; five more may wait
        for i in range(8):
            poster.submit(ref("a"), "Normal", "Overflow", f"m{i}")
        assert poster.pending() == 6
        assert dropped("Overflow") - before == 3
        gate.set()
        for _ in range(100):
            if poster.pending() == 0:
                break
            await asyncio.sleep(0.01)
        assert posted == [f"m{i}" for i in range(5)]
        await poster.close()

    asyncio.run(scenario())
