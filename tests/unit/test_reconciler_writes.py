"""The reconciler's write path, with an in-memory stand-in for the Kube helper (no API server involved:
this checks which status goes with which run, not what the API server does with it)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from flowrun_operator.api.flowrun import FlowRunPhase, FlowRunStatus, WaitingFor
from flowrun_operator.handlers.reconciler import Reconciler
from flowrun_operator.scheduling.runstate import RunPlan


class RecordingKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((name, status))
        return {"metadata": {"name": name, "namespace": namespace, "uid": "u-" + name, "resourceVersion": "99"},
                "spec": {"flow": "f", "template": {"spec": {"containers": []}}}, "status": status}  # fmt: skip

    async def post_event(self, *args: Any) -> None:
        return None


def run(name: str, position: int) -> dict[str, Any]:
    waiting = [{"name": "l", "position": position, "inUse": 1, "limit": 1}]
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": "u-" + name, "resourceVersion": "1"},
        "spec": {"flow": "f", "template": {"spec": {"containers": []}}},
        "status": {"phase": "Pending", "message": f"{position} in line", "waitingFor": waiting},
    }


def pending(position: int) -> FlowRunStatus:
    return FlowRunStatus(
        phase=FlowRunPhase.PENDING,
        message=f"{position} in line",
        waiting_for=[WaitingFor(name="l", position=position, in_use=1, limit=1)],
    )


def test_each_refreshed_and_transitioned_run_gets_its_own_status() -> None:
    async def scenario() -> tuple[Reconciler, RecordingKube, dict[str, FlowRunStatus]]:
        kube = RecordingKube()
        reconciler = Reconciler(kube)  # type: ignore[arg-type]
        for name, position in (("a", 5), ("b", 6), ("c", 7)):
            reconciler.store.put_run(run(name, position))
        plans = {
            # a transition, then two place-in-line refreshes (due: never written before)
            "a": RunPlan(status=FlowRunStatus(phase=FlowRunPhase.SUBMITTED, attempt=1, job_name="a-1")),
            "b": RunPlan(status=pending(2)),
            "c": RunPlan(status=pending(3)),
        }
        await reconciler._write("ns", plans, datetime.now(UTC))
        # what the next pass would see while the writes are still on their way
        assumed = {name: reconciler.store.runs["ns"][name].status for name in ("a", "b", "c")}
        await reconciler._writer.close(grace=2.0)
        return reconciler, kube, assumed

    reconciler, kube, statuses = asyncio.run(scenario())
    assert statuses["a"].job_name == "a-1" and statuses["a"].phase == FlowRunPhase.SUBMITTED
    assert statuses["b"].job_name is None and statuses["b"].waiting_for[0].position == 2
    assert statuses["c"].job_name is None and statuses["c"].waiting_for[0].position == 3
    final = {name: reconciler.store.runs["ns"][name].status for name in ("a", "b", "c")}
    assert final == statuses
    sent = dict(kube.patches)
    assert sent["b"]["waitingFor"][0]["position"] == 2 and sent["b"]["jobName"] is None
    assert sent["c"]["waitingFor"][0]["position"] == 3
