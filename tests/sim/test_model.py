"""The simulated cluster itself: the behaviours the invariants rely on, and invariants that do fire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flowrun_operator.kube.client import Conflict
from sim.api import FLOWRUNS, JOBS, LIMITS, FakeApi, Obj, PodScript
from sim.scenario import LimitDef, RunDef
from sim.vloop import OWNER, Deadlock, VirtualTimeLoop


def run(body: Callable[[FakeApi, VirtualTimeLoop], Awaitable[Any]]) -> Any:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(body(FakeApi(loop), loop))
    finally:
        loop.close()


def job_body(run_obj: Obj, attempt: int = 1, labels: dict[str, str] | None = None) -> Obj:
    meta = run_obj["metadata"]
    return {
        "metadata": {
            "name": f"{meta['name']}-{attempt}",
            "labels": {"flowrun.io/run": meta["name"], "flowrun.io/attempt": str(attempt), **(labels or {})},
            "ownerReferences": [{"kind": "FlowRun", "name": meta["name"], "uid": meta["uid"], "controller": True}],
        },
        "spec": {"template": {"spec": {}}},
    }


def test_virtual_time_costs_no_wall_time_and_a_deadlock_is_reported() -> None:
    loop = VirtualTimeLoop()
    started = time.perf_counter()
    loop.run_until_complete(asyncio.sleep(86400.0))
    assert loop.time() == pytest.approx(86400.0)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(Deadlock):
        loop.run_until_complete(loop.create_future())
    loop.close()


def test_a_job_completes_only_after_its_pod_and_foreground_deletion_waits_for_the_pod() -> None:
    async def body(api: FakeApi, loop: VirtualTimeLoop) -> None:
        api.pod_scripts = lambda r, t, a: PodScript(start_after=1.0, run_for=4.0, succeed=True)
        api.grace = 10.0
        a = api.create(FLOWRUNS, RunDef("a").body(0.0))
        b = api.create(FLOWRUNS, RunDef("b").body(0.0))
        await api.create_job("ns-a", job_body(a))
        await api.create_job("ns-a", job_body(b))
        with pytest.raises(Conflict):
            await api.create_job("ns-a", job_body(a))
        await asyncio.sleep(2.0)
        assert api.objects[JOBS][("ns-a", "a-1")]["status"]["ready"] == 1
        await asyncio.sleep(3.1)  # the pod ended at 5.0; the controller noticed 50 ms later
        status = api.objects[JOBS][("ns-a", "a-1")]["status"]
        assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
        assert status["completionTime"] == "2026-01-01T00:00:05Z"
        api.default_propagation = "Foreground"
        api.pod_scripts = lambda r, t, a: PodScript(start_after=0.0, run_for=100.0)
        c = api.create(FLOWRUNS, RunDef("c").body(0.0))
        await api.create_job("ns-a", job_body(c))
        await asyncio.sleep(1.0)
        await api.delete_job("ns-a", "c-1")
        stored = api.objects[JOBS][("ns-a", "c-1")]
        assert stored["metadata"]["deletionTimestamp"] and stored["metadata"]["finalizers"] == ["foregroundDeletion"]
        await asyncio.sleep(9.0)
        assert ("ns-a", "c-1") in api.objects[JOBS]  # its pod is still terminating
        assert api.may_run(api.jobs[-1])
        await asyncio.sleep(1.5)
        assert ("ns-a", "c-1") not in api.objects[JOBS]
        assert not api.may_run(api.jobs[-1]) and api.jobs[-1].deleted_unfinished

    run(body)


def test_deadline_and_backoff_failures_carry_batch_v1_reasons() -> None:
    async def body(api: FakeApi, loop: VirtualTimeLoop) -> None:
        api.pod_scripts = lambda r, t, a: PodScript(start_after=0.0, run_for=30.0, succeed=r == "slow")
        api.grace = 2.0
        slow = api.create(FLOWRUNS, RunDef("slow").body(0.0))
        body_ = job_body(slow)
        body_["spec"]["activeDeadlineSeconds"] = 5
        await api.create_job("ns-a", body_)
        failing = api.create(FLOWRUNS, RunDef("failing").body(0.0))
        await api.create_job("ns-a", job_body(failing))
        await asyncio.sleep(6.0)
        conditions = api.objects[JOBS][("ns-a", "slow-1")]["status"]["conditions"]
        assert [(c["type"], c["reason"]) for c in conditions] == [("FailureTarget", "DeadlineExceeded")]
        await asyncio.sleep(2.0)  # Failed only once the pod has terminated
        conditions = api.objects[JOBS][("ns-a", "slow-1")]["status"]["conditions"]
        assert ("Failed", "DeadlineExceeded") in [(c["type"], c["reason"]) for c in conditions]
        await asyncio.sleep(30.0)
        conditions = api.objects[JOBS][("ns-a", "failing-1")]["status"]["conditions"]
        assert ("Failed", "BackoffLimitExceeded") in [(c["type"], c["reason"]) for c in conditions]

    run(body)


def test_status_merge_patch_and_garbage_collection() -> None:
    async def body(api: FakeApi, loop: VirtualTimeLoop) -> None:
        seen: list[tuple[str, str]] = []
        api.subscribers.append(lambda kind, event, obj: seen.append((kind, event)))
        a = api.create(FLOWRUNS, RunDef("a").body(0.0))
        stored = await api.patch_status(FLOWRUNS, "ns-a", "a", {"phase": "Pending", "message": "m"})
        version = stored["metadata"]["resourceVersion"]
        again = await api.patch_status(FLOWRUNS, "ns-a", "a", {"phase": "Pending"})
        assert again["metadata"]["resourceVersion"] == version  # no change, no write
        cleared = await api.patch_status(FLOWRUNS, "ns-a", "a", {"message": None})
        assert cleared["status"] == {"phase": "Pending"} and cleared["metadata"]["generation"] == 1
        await api.create_job("ns-a", job_body(a))
        api.delete_flowrun("ns-a", "a")
        await asyncio.sleep(1.0)
        assert ("ns-a", "a-1") not in api.objects[JOBS]
        assert not api.jobs[0].pod.counted  # a cascade the operator did not ask for
        assert (JOBS, "DELETED") in seen and (FLOWRUNS, "DELETED") in seen

    run(body)


def test_over_admission_and_a_second_job_for_an_attempt_are_reported() -> None:
    """The invariants fire: a Job created beyond a known limit, and a second Job for one attempt."""

    async def body(api: FakeApi, loop: VirtualTimeLoop) -> list[str]:
        api.pod_scripts = lambda r, t, a: PodScript(start_after=0.0, run_for=100.0)
        limit = api.create(LIMITS, LimitDef("red", "ns-a", 1, team="red").body())
        api.known_limits = lambda owner: {("ns-a", "red"): limit}
        a = api.create(FLOWRUNS, RunDef("a", team="red").body(0.0))
        b = api.create(FLOWRUNS, RunDef("b", team="red").body(0.0))
        OWNER.set(1)
        await api.create_job("ns-a", job_body(a, labels={"team": "red"}))
        assert api.violations == []
        await api.create_job("ns-a", job_body(b, labels={"team": "red"}))
        second = job_body(a, labels={"team": "red"})
        second["metadata"]["name"] = "a-1-other"
        await api.create_job("ns-a", second)
        return api.violations

    violations = run(body)
    assert any("holders<=limit" in v and "makes 2 holders of limit red" in v for v in violations)
    assert any("one-job-per-attempt" in v for v in violations)
