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


def test_background_events_take_one_worker_and_only_when_no_other_event_waits() -> None:
    async def scenario() -> None:
        gates: dict[str, asyncio.Event] = {}
        started: list[str] = []
        in_flight: set[str] = set()
        most_background = 0

        async def post(obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
            nonlocal most_background
            started.append(message)
            in_flight.add(message)
            most_background = max(most_background, sum(m.startswith("wait") for m in in_flight))
            gate = gates.setdefault(message, asyncio.Event())
            await gate.wait()
            in_flight.discard(message)

        def release(*messages: str) -> None:
            for message in messages:
                gates.setdefault(message, asyncio.Event()).set()

        poster = EventPoster(post, workers=3, background_workers=1, limit=1000)
        for i in range(50):
            poster.submit(ref(f"w{i}"), "Normal", "Pending", f"wait{i}", background=True)
        await asyncio.sleep(0.01)
        # Three workers, fifty waiting background Events: one is posted at a time.
        assert started == ["wait0"] and most_background == 1
        for i in range(5):
            poster.submit(ref(f"r{i}"), "Normal", "Succeeded", f"done{i}")
        await asyncio.sleep(0.01)
        assert started == ["wait0", "done0", "done1"], "the other workers take the run's Events at once"
        release("wait0")
        await asyncio.sleep(0.01)
        assert started[3:] == ["done2"], "a freed worker takes a waiting transition's Event before a background one"
        release(*(f"done{i}" for i in range(5)))
        await asyncio.sleep(0.01)
        assert started[3:6] == ["done2", "done3", "done4"] and started[6] == "wait1"
        release(*(f"wait{i}" for i in range(50)))
        for _ in range(100):
            if poster.pending() == 0:
                break
            await asyncio.sleep(0.01)
        assert poster.pending() == 0 and most_background == 1
        assert [m for m in started if m.startswith("wait")] == [f"wait{i}" for i in range(50)]
        await poster.close()

    asyncio.run(scenario())
