"""The engine against a small in-memory API: admission order, slots held until work is gone, and recovery
from failed calls without any other event arriving."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

import flowrun_operator.engine as engine_module
from flowrun_operator.engine import Engine
from flowrun_operator.kube.client import ListedPage
from support.fakekube import FakeKube, flowrun, limit


def scenario(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), 30))

    return run


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "PROGRESS_WRITE_DELAY", 0.0)
    monkeypatch.setattr(engine_module, "HOUSEKEEPING_SECONDS", 0.05)
    monkeypatch.setattr("flowrun_operator.engine.act.BACKOFF_BASE_SECONDS", 0.05)


async def settle(engine: Engine, kube: FakeKube, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    quiet = 0
    while loop.time() < deadline:
        kube.deliver(engine)
        await asyncio.sleep(0.03)
        if not kube.watch and engine.idle():
            quiet += 1
            if quiet >= 3:
                return
        else:
            quiet = 0
    raise AssertionError("engine did not settle")


async def until(condition: Callable[[], bool], engine: Engine, kube: FakeKube, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        kube.deliver(engine)
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def started(kube: FakeKube) -> Engine:
    engine = Engine(kube)
    await engine.seed()
    engine.start()
    return engine


def status(kube: FakeKube, name: str) -> dict[str, Any]:
    return dict(kube.objects[("run", "ns", name)].get("status") or {})


def job_names(kube: FakeKube) -> list[str]:
    return [j["metadata"]["name"] for j in kube.jobs()]


def jobs_of(kube: FakeKube, run: str) -> list[str]:
    return [j["metadata"]["name"] for j in kube.jobs() if j["metadata"]["labels"]["flowrun.io/run"] == run]


@scenario
async def test_admits_in_order_and_refills_a_freed_slot() -> None:
    kube = FakeKube()
    kube.add("limit", limit("gpu", 1, {"team": "ml"}))
    for name in ("a", "b", "c"):
        kube.add("run", flowrun(name, {"team": "ml"}))
    engine = await started(kube)
    try:
        await settle(engine, kube)
        assert jobs_of(kube, "a") and not jobs_of(kube, "b") and not jobs_of(kube, "c")
        assert status(kube, "b")["phase"] == "Pending"
        assert [w["position"] for w in status(kube, "b")["waitingFor"]] == [1]
        assert [w["position"] for w in status(kube, "c")["waitingFor"]] == [2]
        kube.finish_job(jobs_of(kube, "a")[0])
        await settle(engine, kube)
        assert status(kube, "a")["phase"] == "Succeeded"
        assert jobs_of(kube, "b") and not jobs_of(kube, "c")
        assert kube.objects[("limit", "ns", "gpu")]["status"]["inUse"] == 1
    finally:
        await engine.stop()


@scenario
async def test_a_cancelled_run_holds_its_slot_until_its_job_is_gone() -> None:
    kube = FakeKube()
    kube.add("limit", limit("one", 1, {"q": "x"}))
    kube.add("run", flowrun("a", {"q": "x"}))
    engine = await started(kube)
    try:
        await settle(engine, kube)
        kube.add("run", flowrun("b", {"q": "x"}))
        await settle(engine, kube)
        (a_job,) = jobs_of(kube, "a")
        kube.start_job(a_job)
        kube.update("run", "a", lambda r: r["spec"].__setitem__("cancel", True))
        await settle(engine, kube)
        assert status(kube, "a")["phase"] == "Cancelled"
        assert ("delete", a_job) in kube.calls
        # The Job is being deleted but its pods may still run: b must wait.
        assert not jobs_of(kube, "b")
        assert status(kube, "b")["phase"] == "Pending"
        kube.remove("job", a_job)
        await settle(engine, kube)
        assert jobs_of(kube, "b")
    finally:
        await engine.stop()


@scenario
async def test_a_failed_job_create_is_retried_without_another_event() -> None:
    kube = FakeKube()
    kube.fail["create"] = [ApiException(status=500, reason="boom"), ApiException(status=429, reason="slow")]
    kube.add("run", flowrun("a"))
    engine = await started(kube)
    try:
        await until(lambda: bool(jobs_of(kube, "a")), engine, kube)
        await settle(engine, kube)
        assert status(kube, "a")["phase"] == "Submitted"
        assert len(jobs_of(kube, "a")) == 1
    finally:
        await engine.stop()


@scenario
async def test_a_failed_status_write_leaves_no_phantom_and_events_follow_the_stored_write() -> None:
    kube = FakeKube()
    kube.add("run", flowrun("a"))
    engine = await started(kube)
    try:
        await settle(engine, kube)
        (job,) = jobs_of(kube, "a")
        kube.fail["patch"] = [ApiException(status=503, reason="unavailable")]
        kube.finish_job(job)
        await until(lambda: status(kube, "a").get("phase") == "Succeeded", engine, kube)
        await settle(engine, kube)
        succeeded = [e for e in kube.events if e[0] == "a" and e[1] == "Succeeded"]
        assert len(succeeded) == 1
    finally:
        await engine.stop()


@scenario
async def test_a_quota_refusal_waits_as_pending_and_then_runs() -> None:
    kube = FakeKube()
    quota = ApiException(status=403, reason="Forbidden")
    quota.body = json.dumps(
        {"message": 'jobs.batch "x" is forbidden: exceeded quota: q, requested: count/jobs.batch=1'}
    )
    kube.fail["create"] = [quota]
    kube.add("run", flowrun("a"))
    engine = await started(kube)
    try:
        await until(lambda: status(kube, "a").get("phase") == "Pending", engine, kube)
        admitted = next(c for c in status(kube, "a")["conditions"] if c["type"] == "Admitted")
        assert admitted["reason"] == "QuotaExceeded" and "exceeded quota" in admitted["message"]
        await until(lambda: bool(jobs_of(kube, "a")), engine, kube)
        await settle(engine, kube)
        assert status(kube, "a")["phase"] == "Submitted"
    finally:
        await engine.stop()


@scenario
async def test_job_names_of_different_runs_never_collide() -> None:
    kube = FakeKube()
    dag = flowrun("etl")
    del dag["spec"]["template"]
    dag["spec"]["tasks"] = [{"name": "load", "template": {"spec": {"containers": [{"name": "m", "image": "b"}]}}}]
    kube.add("run", dag)
    kube.add("run", flowrun("etl-load"))
    engine = await started(kube)
    try:
        await settle(engine, kube)
        assert len(jobs_of(kube, "etl")) == 1 and len(jobs_of(kube, "etl-load")) == 1
        assert status(kube, "etl-load")["phase"] == "Submitted"
    finally:
        await engine.stop()


@scenario
async def test_a_relist_does_not_resurrect_what_was_deleted_during_it() -> None:
    kube = FakeKube()
    kube.add("limit", limit("one", 1, {"q": "x"}))
    kube.add("run", flowrun("a", {"q": "x"}))
    kube.add("run", flowrun("b", {"q": "x"}))
    engine = await started(kube)
    try:
        await settle(engine, kube)
        (a_job,) = jobs_of(kube, "a")
        snapshot = [page async for page in FakeKube.list_pages(kube, None)]  # taken before the deletion
        real_list = kube.list_pages

        async def slow_list(namespaces: Any) -> AsyncIterator[ListedPage]:
            kube.remove("job", a_job)
            kube.deliver(engine)  # the DELETED event arrives while the list is in flight
            for page in snapshot:
                yield page

        kube.list_pages = slow_list  # type: ignore[method-assign]
        await engine.resync()
        kube.list_pages = real_list  # type: ignore[method-assign]
        await settle(engine, kube)
        assert a_job not in engine.views["ns"].jobs
        assert jobs_of(kube, "b"), "the freed slot went to b"
    finally:
        await engine.stop()


def runs_in_pages_of_two(count: int) -> FakeKube:
    kube = FakeKube()
    kube.page_size = 2
    for i in range(count):
        kube.add("run", flowrun(f"r{i}", {"q": "x"}))
    return kube


@scenario
async def test_a_list_is_applied_page_by_page_so_only_one_page_is_held() -> None:
    kube = runs_in_pages_of_two(7)
    engine = Engine(kube)
    known_before_each_run_page: list[int] = []

    def observe(page: ListedPage) -> None:
        if page.plural == "flowruns":
            view = engine.views.get("ns")
            known_before_each_run_page.append(len(view.runs) if view is not None else 0)

    kube.on_page = observe
    await engine.seed()
    assert known_before_each_run_page == [0, 2, 4, 6]
    assert sorted(engine.views["ns"].runs) == [f"r{i}" for i in range(7)]


@scenario
async def test_a_list_that_fails_part_way_drops_nothing_and_the_next_one_drops_what_is_gone() -> None:
    kube = runs_in_pages_of_two(5)
    engine = Engine(kube)
    await engine.seed()
    del kube.objects[("run", "ns", "r4")]  # gone without a watch event reaching the engine

    def fail_after_the_first_run_page(page: ListedPage) -> None:
        if page.plural == "flowruns" and page.items[0]["metadata"]["name"] != "r0":
            raise ApiException(status=500, reason="Internal Server Error")

    kube.on_page = fail_after_the_first_run_page
    with pytest.raises(ApiException):
        await engine.resync()
    assert sorted(engine.views["ns"].runs) == [f"r{i}" for i in range(5)]
    kube.on_page = None
    await engine.resync()
    assert sorted(engine.views["ns"].runs) == [f"r{i}" for i in range(4)]


@scenario
async def test_a_deleted_limit_releases_its_waiters() -> None:
    kube = FakeKube()
    kube.add("limit", limit("zero", 0, {"q": "x"}))
    kube.add("run", flowrun("a", {"q": "x"}))
    engine = await started(kube)
    try:
        await settle(engine, kube)
        assert status(kube, "a")["phase"] == "Pending"
        kube.remove("limit", "zero")
        await settle(engine, kube)
        assert jobs_of(kube, "a")
    finally:
        await engine.stop()


@scenario
async def test_tagged_tasks_wait_for_their_tag_limit() -> None:
    kube = FakeKube()
    kube.add("limit", limit("db", 1, tag="db"))
    for name in ("x", "y"):
        run = flowrun(name)
        del run["spec"]["template"]
        tpl = {"spec": {"containers": [{"name": "m", "image": "b"}]}}
        run["spec"]["tasks"] = [{"name": "load", "template": tpl, "tags": ["db"]}]
        kube.add("run", run)
    engine = await started(kube)
    try:
        await settle(engine, kube)
        assert len(kube.jobs()) == 1
        first = kube.jobs()[0]["metadata"]["labels"]["flowrun.io/run"]
        other = "y" if first == "x" else "x"
        task = status(kube, other)["taskRuns"][0]
        assert task["phase"] == "Pending" and task["waitingFor"][0]["name"] == "db"
        kube.finish_job(kube.jobs()[0]["metadata"]["name"])
        await settle(engine, kube)
        assert jobs_of(kube, other)
        assert status(kube, first)["phase"] == "Succeeded"
    finally:
        await engine.stop()


@scenario
async def test_finished_runs_go_to_history_and_expire_by_ttl() -> None:
    kube = FakeKube()
    done = flowrun("old", ttlSecondsAfterFinished=1)
    done["status"] = {"phase": "Succeeded", "completionTime": "2020-01-01T00:00:00Z"}
    kept = flowrun("kept")
    kept["status"] = {"phase": "Failed", "completionTime": "2020-01-01T00:00:00Z"}
    kube.add("run", done)
    kube.add("run", kept)
    engine = await started(kube)
    try:
        await settle(engine, kube)
        view = engine.views["ns"]
        assert "kept" in view.finished and not view.runs
        assert ("run", "ns", "old") not in kube.objects, "expired by its TTL"
        assert not kube.jobs() and not [c for c in kube.calls if c[0] == "patch" and c[1] == "kept"]
    finally:
        await engine.stop()


@scenario
async def test_a_status_written_by_someone_else_meanwhile_is_not_overwritten() -> None:
    kube = FakeKube()
    engine = await started(kube)
    try:
        kube.add("run", flowrun("later", scheduledStart="2099-01-01T00:00:00Z"))
        added = kube.watch[:]
        kube.watch.clear()
        # Another writer finishes the run before the operator has seen that change.
        kube.update("run", "later", lambda r: r.__setitem__("status", {"phase": "Succeeded"}))
        modified, kube.watch = kube.watch[:], added
        kube.deliver(engine)
        await until(lambda: ("patch", "later") in kube.calls, engine, kube)
        assert status(kube, "later")["phase"] == "Succeeded", "the stale Scheduled write was refused (409)"
        kube.watch = modified
        await settle(engine, kube)
        assert status(kube, "later")["phase"] == "Succeeded"
        assert "later" in engine.views["ns"].finished
    finally:
        await engine.stop()


@scenario
async def test_the_wait_of_a_marked_key_for_its_round_is_observed() -> None:
    def observed() -> tuple[float, float]:
        count = REGISTRY.get_sample_value("flowrun_engine_queue_latency_seconds_count") or 0.0
        total = REGISTRY.get_sample_value("flowrun_engine_queue_latency_seconds_sum") or 0.0
        return count, total

    kube = FakeKube()
    engine = await started(kube)
    try:
        await settle(engine, kube)
        count_before, sum_before = observed()
        kube.add("run", flowrun("a", {}))
        await settle(engine, kube)
        assert jobs_of(kube, "a")
        count_after, sum_after = observed()
        assert count_after > count_before
        # A round starts BATCH_SECONDS after the first mark at the earliest.
        assert sum_after - sum_before >= engine_module.BATCH_SECONDS * 0.9
    finally:
        await engine.stop()


@scenario
async def test_stalled_while_a_marked_key_waits_behind_a_hung_call_and_not_after() -> None:
    kube = FakeKube()
    engine = await started(kube)
    release = asyncio.Event()
    create_job = kube.create_job

    async def hung_create(namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return await create_job(namespace, body)

    kube.create_job = hung_create  # type: ignore[method-assign]
    try:
        await settle(engine, kube)
        assert not engine.stalled(0.05)
        kube.add("run", flowrun("a", {}))
        kube.deliver(engine)
        await asyncio.sleep(0.1)  # the round for "a" is now waiting in its Job create
        kube.add("run", flowrun("b", {}))
        kube.deliver(engine)
        await asyncio.sleep(0.2)
        assert engine.stalled(0.15)
        release.set()
        await settle(engine, kube)
        assert jobs_of(kube, "a") and jobs_of(kube, "b")
        assert not engine.stalled(0.15)
    finally:
        release.set()
        await engine.stop()


@scenario
async def test_watches_that_lose_their_version_at_once_share_one_fresh_list_and_continue_from_it() -> None:
    kube = FakeKube()
    kube.add("run", flowrun("a", {"q": "x"}))
    engine = await started(kube)
    try:
        seeded = dict(engine.list_versions)
        assert set(seeded) == {("concurrencylimits", None), ("jobs", None), ("flowruns", None)}
        lists_before = kube.calls.count(("list", ""))
        real_list = kube.list_pages

        async def slow_list(namespaces: Any) -> AsyncIterator[ListedPage]:
            async for page in real_list(namespaces):
                await asyncio.sleep(0.01)  # a list takes a while: the other watches ask meanwhile
                yield page

        kube.list_pages = slow_list  # type: ignore[method-assign]
        versions = await asyncio.gather(
            engine.relist("jobs", None), engine.relist("flowruns", None), engine.relist("jobs", None)
        )
        assert kube.calls.count(("list", "")) == lists_before + 1
        assert versions[0] == versions[1] == versions[2] > seeded[("jobs", None)]
        assert engine.list_versions[("jobs", None)] == versions[0]
        await engine.relist("jobs", None)  # asked after that list ended: a list of its own
        assert kube.calls.count(("list", "")) == lists_before + 2
    finally:
        await engine.stop()


@pytest.mark.parametrize(("budget", "rewrites"), [("0.25", [("r4", 1)]), ("0", [])])
def test_a_place_in_line_is_rewritten_once_halved_within_the_budget_earned_by_departures(
    monkeypatch: pytest.MonkeyPatch, budget: str, rewrites: list[tuple[str, int]]
) -> None:
    monkeypatch.setenv("POSITION_REFRESHES_PER_DEPARTURE", budget)
    places: list[tuple[str, int]] = []  # every place in line written, in order

    async def scenario() -> None:
        kube = FakeKube()
        real_patch = kube.patch_status

        async def patch_status(
            plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
        ) -> dict[str, Any]:
            for waiting in status.get("waitingFor") or []:
                places.append((name, int(waiting["position"])))
            return await real_patch(plural, namespace, name, status, resource_version)

        kube.patch_status = patch_status  # type: ignore[method-assign]
        kube.add("limit", limit("one", 1, {"q": "x"}))
        for i in range(9):
            kube.add("run", flowrun(f"r{i}", {"q": "x"}))
        engine = await started(kube)
        try:
            await settle(engine, kube)
            assert places == [(f"r{i}", i) for i in range(1, 9)]
            # r0 took the slot out of the line: with each finish one more run leaves it, 0.25 refreshes each.
            for i in range(3):
                kube.finish_job(jobs_of(kube, f"r{i}")[0])
                await settle(engine, kube)
                await asyncio.sleep(0.2)  # housekeeping plans refreshes every 0.05 s here
                await settle(engine, kube)
            assert jobs_of(kube, "r3") and not jobs_of(kube, "r4")
            # Four departures earned one rewrite; r4..r7 stand 1st..4th, written as 4th..7th: the front's
            # place had halved (as had r5's and r6's), r7's had not.
            assert places[8:] == rewrites
        finally:
            await engine.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
