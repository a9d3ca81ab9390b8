"""Runs the real admission engine against the in-memory API on virtual time, and checks its invariants.

One `Harness` runs one `Scenario`: it creates the scenario's objects, starts an operator incarnation (engine
built, `seed()`, `start()`, then watch streams listed as Kopf does), plays the scenario's actions at their
virtual times, lets the scenario quiesce, and returns every invariant violation it saw.

Watch delivery keeps the guarantees Kubernetes gives and no more: events of one object arrive in order (with
`coalesce`, all but the newest of a burst may be skipped), events of different objects and kinds interleave
arbitrarily. As in the operator (flowrun_operator.kube.watch), each stream continues from the version of the
engine's seeding list, every change after it delivered; a dropped stream ("410 Gone") loses its undelivered
events and continues from the version of the fresh list it asks the engine for (`Engine.relist`), so the
deletions of the gap reach the engine only through that list. A crash cancels every task of the incarnation
wherever it awaits; a new one is built and seeded.

The engine under test is `flowrun_operator.engine.Engine`, or the former `Reconciler` with SIM_ENGINE=legacy.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import os
import random
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from flowrun_operator.kube.client import ListedPage
from sim.api import (
    FLOWRUNS,
    JOBS,
    KINDS,
    LIMITS,
    TERMINAL,
    FakeApi,
    JobRecord,
    Key,
    Obj,
    PodScript,
    clone,
    selector_matches,
)
from sim.scenario import Action, RunDef, Scenario
from sim.vloop import OWNER, SimClock, VirtualTimeLoop

# Quiescence: nothing changed in the API for this long and nothing is due (longer than the engine's longest
# backoff, 60 s, so a retry it has scheduled shows up first).
QUIET_SECONDS = 75.0
SETTLE_LIMIT_SECONDS = 3000.0  # a scenario that has not quiesced by then is stuck (liveness)
MAX_CRASHES = 3
STALL_SECONDS = 30.0  # once failures stop, queued work must be processed within this

FAULTS_BY_METHOD = {
    "create_job": ("500", "503", "429", "403quota", "reset", "timeout_before", "timeout_after", "hang"),
    "patch_status": ("500", "503", "429", "409", "reset", "timeout_before", "timeout_after", "hang"),
    "delete_job": ("500", "503", "429", "409", "reset", "timeout_before", "timeout_after", "hang"),
    "delete_object": ("500", "503", "429", "reset", "timeout_before", "timeout_after"),
    "list": ("500", "503", "429", "reset", "timeout_before", "hang"),
    "get": ("500", "503", "429", "reset", "timeout_before"),
    "post_event": ("500", "503", "429", "reset", "timeout_before", "timeout_after"),
}


def variant() -> str:
    return os.environ.get("SIM_ENGINE", "engine")


def ignored() -> set[str]:
    """Invariants switched off with SIM_IGNORE=a,b (to see what else fails behind a known failure)."""
    return {name for name in os.environ.get("SIM_IGNORE", "").split(",") if name}


class SimFaults:
    """Injected failures and latencies, drawn from the scenario's seed in call order (deterministic)."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self.scenario = scenario
        self.rng = rng
        self.enabled = True
        self.crashes = 0
        self.forced: dict[str, list[str]] = {}  # method -> faults for its next calls (hand-written scenarios)

    def pick(self, method: str) -> str | None:
        forced = self.forced.get(method)
        if forced:
            return forced.pop(0) or None
        if not self.enabled:
            return None
        s = self.scenario
        if s.crash_rate and self.crashes < MAX_CRASHES and self.rng.random() < s.crash_rate:
            self.crashes += 1
            return self.rng.choice(("crash_before", "crash_after"))
        if s.fault_rate and self.rng.random() < s.fault_rate:
            allowed = [f for f in s.fault_kinds if f in FAULTS_BY_METHOD.get(method, ())]
            if allowed:
                return self.rng.choice(allowed)
        return None

    def latency(self) -> float:
        base = self.scenario.latency
        return self.rng.choice((0.0, base, base, 3 * base)) if base else 0.0


class Watches:
    """Per-kind watch streams between the API and the current operator incarnation."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.up = dict.fromkeys(KINDS, False)
        self.queues: dict[tuple[str, str, str], deque[tuple[float, str | None, Obj]]] = {}
        self.last_at: dict[tuple[str, str, str], float] = {}
        self.handles: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self.held: set[str] = set()  # kinds whose delivery a hand-written scenario holds back for a while
        # Every change of each kind with the API's version after it: what a watch from a version replays.
        self.history: dict[str, list[tuple[int, str, Obj]]] = {kind: [] for kind in KINDS}

    def on_event(self, kind: str, event: str, obj: Obj) -> None:
        self.history[kind].append((self.h.api.rv, event, obj))
        if self.up[kind]:
            self._enqueue(kind, event, obj)

    def resume(self, kind: str, since: int) -> None:
        """A stream (re)starting from version `since`: every later change of the kind, then live ones."""
        self.drop(kind)
        self.up[kind] = True
        for version, event, obj in self.history[kind]:
            if version > since:
                self._enqueue(kind, event, clone(obj))

    def _enqueue(self, kind: str, event: str | None, obj: Obj) -> None:
        if kind == JOBS and "flowrun.io/run" not in (obj["metadata"].get("labels") or {}):
            return
        h = self.h
        key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        delay = h.rng.uniform(0.0, h.scenario.max_delay) if h.scenario.max_delay else 0.0
        at = max(h.loop.time() + delay, self.last_at.get(key, 0.0) + 1e-6)
        self.last_at[key] = at
        self.queues.setdefault(key, deque()).append((at, event, obj))
        if key not in self.handles:
            self._schedule(key)

    def _schedule(self, key: tuple[str, str, str]) -> None:
        at = self.queues[key][0][0]
        self.handles[key] = self.h.loop.call_at(at, self._fire, key, context=self.h.harness_context.copy())

    def _fire(self, key: tuple[str, str, str]) -> None:
        self.handles.pop(key, None)
        queue = self.queues.get(key)
        if not queue:
            return
        if key[0] in self.held:
            self.handles[key] = self.h.loop.call_later(0.05, self._fire, key, context=self.h.harness_context.copy())
            return
        now = self.h.loop.time()
        due: list[tuple[float, str | None, Obj]] = []
        while queue and queue[0][0] <= now + 1e-9:
            due.append(queue.popleft())
        if self.h.scenario.coalesce and len(due) > 1:
            due = due[-1:]
        for _, event, obj in due:
            self.h.deliver(key[0], event, obj)
        if queue:
            self._schedule(key)
        else:
            del self.queues[key]

    def drop(self, kind: str) -> None:
        self.up[kind] = False
        for key in [k for k in self.queues if k[0] == kind]:
            del self.queues[key]
            handle = self.handles.pop(key, None)
            if handle is not None:
                handle.cancel()

    def relist(self, kind: str) -> None:
        """A Kopf watcher (re)starting (the former engine's wiring): every present object arrives as an event
        of type None."""
        self.up[kind] = True
        for _, obj in sorted(self.h.api.objects[kind].items()):
            self._enqueue(kind, None, clone(obj))

    def pending(self) -> bool:
        return bool(self.queues)


@dataclass
class Incarnation:
    number: int
    engine: Any
    context: contextvars.Context


@dataclass
class Result:
    violations: list[str]
    phases: dict[str, int] = field(default_factory=dict)
    jobs: int = 0
    calls: int = 0
    virtual_seconds: float = 0.0
    incarnations: int = 0


class Harness:
    def __init__(self, scenario: Scenario, *, engine: str | None = None, disabled: set[str] | None = None) -> None:
        self.scenario = scenario
        self.variant = engine or variant()
        self.loop = VirtualTimeLoop()
        self.loop.set_exception_handler(self._loop_error)
        self.rng = random.Random(scenario.seed)
        self.faults = SimFaults(scenario, self.rng)
        self.api = FakeApi(self.loop, self.faults)
        self.api.grace = scenario.grace
        self.api.pod_scripts = self._pod_script
        self.api.known_limits = self._known_limits
        self.api.on_listed_page = self._listed_page
        self.api.on_listed = self._listed
        self.api.on_returned = self._returned
        self.api.on_crash = self.crash
        self.api.default_propagation = client_propagation(self.variant)
        self.api.disabled_checks = set(ignored() if disabled is None else disabled)
        self.api.subscribers.append(self._on_api_event)
        self.harness_context = contextvars.copy_context()
        self.watches = Watches(self)
        self.current: Incarnation | None = None
        self.incarnations = 0
        self.told: dict[int, dict[Key, Obj]] = {}
        self.runs = {r.name: r for r in scenario.runs}
        self.restarting = False
        self.quiesced_at: float | None = None
        self.before_start: Callable[[Harness], None] | None = None

    # ------------------------------------------------------------------------------- running it

    def run(self, script: Callable[[Harness], Any] | None = None) -> Result:
        """Play the scenario (or a hand-written `script(harness)` coroutine) and check it."""
        try:
            with engine_patches(self):
                self.loop.run_until_complete(self._main(script))
        finally:
            self._close()
        violations = list(self.api.violations)
        phases: dict[str, int] = {}
        for run in self.api.objects[FLOWRUNS].values():
            phase = str((run.get("status") or {}).get("phase"))
            phases[phase] = phases.get(phase, 0) + 1
        return Result(violations, phases, len(self.api.jobs), self.api.calls, self.loop.time(), self.incarnations)

    def _close(self) -> None:
        loop = self.loop
        for incarnation in range(1, self.incarnations + 1):
            loop.kill(incarnation)
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.sleep(0))
        for task in asyncio.all_tasks(loop):
            task.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop), return_exceptions=True))
        loop.close()

    async def _main(self, script: Callable[[Harness], Any] | None) -> None:
        if script is not None:
            await script(self)
            return
        actions = sorted(self.scenario.actions, key=lambda a: a.at)
        initial = [a for a in actions if a.at == 0 and a.kind in ("create_run", "create_limit")]
        for action in initial:
            self.apply(action)
        await self.start_operator()
        for action in actions:
            if action in initial:
                continue
            await self.sleep_until(action.at)
            self.apply(action)
            if self.api.violations:
                return
        await self.settle()

    async def sleep_until(self, at: float) -> None:
        while self.loop.time() < at:
            await asyncio.sleep(min(1.0, at - self.loop.time()))
            if self.api.violations:
                return

    async def settle(self) -> bool:
        """Stop injecting failures, let everything finish, then check the end state."""
        self.faults.enabled = False
        deadline = self.loop.time() + SETTLE_LIMIT_SECONDS
        while self.loop.time() < deadline:
            await asyncio.sleep(2.0)
            if self.api.violations:
                return False
            current = self.current
            if current is not None and hasattr(current.engine, "stalled") and current.engine.stalled(STALL_SECONDS):
                self.api.violate("liveness", f"engine.stalled({STALL_SECONDS:.0f}) with no fault injected")
                return False
            if self.quiet():
                self.quiesced_at = self.loop.time()
                self.final_checks()
                return True
        self.api.violate(
            "quiescence",
            f"nothing settled within {SETTLE_LIMIT_SECONDS:.0f} s: "
            + ("operator not running; " if self.current is None else "")
            + ("engine not idle; " if self.current is not None and not self.engine_idle() else "")
            + ("watch events pending; " if self.watches.pending() else "")
            + f"last API change at t={self.api.last_change:.1f}",
        )
        return False

    def quiet(self) -> bool:
        return (
            self.current is not None
            and not self.restarting
            and not self.watches.pending()
            and not self.api.busy_within(QUIET_SECONDS)
            and self.engine_idle()
            and self.loop.time() - self.api.last_change >= QUIET_SECONDS
        )

    # ------------------------------------------------------------------------- the operator's life

    def make_engine(self) -> Any:
        namespaces = sorted({r.namespace for r in self.scenario.runs} | {lim.namespace for lim in self.scenario.limits})
        if self.variant == "legacy":
            # The former engine (removed from the tree): run with PYTHONPATH pointing at an older checkout.
            reconciler = importlib.import_module("flowrun_operator.handlers.reconciler")
            return reconciler.Reconciler(self.api, namespaces=namespaces or None)
        from flowrun_operator.engine import Engine

        engine = Engine(self.api, namespaces=namespaces or None, clock=SimClock(self.loop))
        self._note_admissions(engine)
        return engine

    def _note_admissions(self, engine: Any) -> None:
        """Note the limit versions the incarnation knew when it first decided to admit each run: a run with
        tasks holds its label slots from that decision on, though its first Job (and the status write, held
        briefly) may come later, when a limit created meanwhile is known."""
        submit = engine._submit_status
        number = self.incarnations

        def noted(namespace: str, view: Any, run: str, status: Obj, *rest: Any) -> Any:
            record = view.runs.get(run)
            admitted = any(
                c.get("type") == "Admitted" and c.get("status") == "True" for c in status.get("conditions") or []
            )
            if record is not None and admitted and record.uid not in self.api.admitted_knew:
                self.api.admitted_knew[record.uid] = {
                    key: (o["metadata"]["uid"], int(o["metadata"]["generation"]))
                    for key, o in self._known_limits(number).items()
                }
            return submit(namespace, view, run, status, *rest)

        engine._submit_status = noted

    async def start_operator(self) -> None:
        """Build an incarnation, seed it from a list, start it, then (re)start the watch streams."""
        self.restarting = True
        while True:
            self.incarnations += 1
            number = self.incarnations
            context = contextvars.copy_context()
            context.run(OWNER.set, number)
            engine = context.run(self.make_engine)
            self.told[number] = {}
            if self.before_start is not None:
                self.before_start(self)
            seeding = self.loop.create_task(engine.seed(), context=context)
            try:
                await seeding
            except (Exception, asyncio.CancelledError):
                # Startup failed (its list failed, or it crashed there): the process exits and is restarted.
                self.loop.kill(number)
                await asyncio.sleep(1.0)
                continue
            if number in self.loop.dead:
                await asyncio.sleep(1.0)
                continue
            context.run(engine.start)
            self.current = Incarnation(number, engine, context)
            self.restarting = False
            for kind in KINDS:
                if self.variant == "legacy":
                    self.watches.relist(kind)
                else:
                    self.watches.resume(kind, engine.list_versions[(kind, None)])
            return

    def crash(self, number: int | None = None) -> None:
        """Kill the current incarnation at whatever await its tasks are in; a new one starts shortly."""
        current = self.current
        if current is None or (number is not None and number != current.number):
            if number is not None:
                self.loop.kill(number)
            return
        self.loop.kill(current.number)
        self.current = None
        self.restarting = True
        for kind in KINDS:
            self.watches.drop(kind)
        downtime = self.rng.choice((0.1, 1.0, 3.0))
        self.loop.call_later(downtime, self._restart, context=self.harness_context.copy())

    def _restart(self) -> None:
        self.loop.create_task(self.start_operator(), context=self.harness_context.copy())

    def deliver(self, kind: str, event: str | None, obj: Obj) -> None:
        current = self.current
        if current is None:
            return
        engine = current.engine
        handler = {FLOWRUNS: engine.on_run, JOBS: engine.on_job, LIMITS: engine.on_limit}[kind]
        if kind == LIMITS:
            self._tell(current.number, event, obj)
        if kind == JOBS:
            self._saw_job(current.number, obj)
        try:
            current.context.copy().run(handler, event, obj)
        except Exception as error:
            self.api.violate("engine-error", f"on_{kind} raised {type(error).__name__}: {error}")

    def resync(self) -> None:
        current = self.current
        if current is None:
            return

        async def relist() -> None:
            # The engine's own re-list may fail (an injected fault); its periodic loop would try again.
            engine = current.engine
            with contextlib.suppress(Exception):
                await (engine.seed(prune=True) if self.variant == "legacy" else engine.resync())

        self.loop.create_task(relist(), context=current.context.copy())

    def engine_idle(self) -> bool:
        current = self.current
        if current is None:
            return False
        engine = current.engine
        if self.variant == "legacy":
            # The former Reconciler has no idle(): nothing dirty, no pass about to run, no write or Event pending.
            return (
                not engine._dirty
                and not engine._wakeup.is_set()
                and engine._writer.pending() == 0
                and not engine._background
            )
        return bool(engine.idle())

    def _on_api_event(self, kind: str, event: str, obj: Obj) -> None:
        self.watches.on_event(kind, event, obj)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, asyncio.CancelledError):
            return
        task = context.get("future")
        where = f" in {task.get_coro()!r}" if isinstance(task, asyncio.Task) else ""
        self.api.violate("engine-error", f"{context.get('message')}{where}: {type(error).__name__}: {error}")

    # ---------------------------------------------------------------------------- what it knows

    def _tell(self, number: int, event: str | None, obj: Obj) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        told = self.told.setdefault(number, {})
        if event == "DELETED":
            told.pop(key, None)
            return
        known = told.get(key)
        if known is None or int(known["metadata"]["resourceVersion"]) <= int(obj["metadata"]["resourceVersion"]):
            told[key] = obj

    def _listed_page(self, number: int | None, page: ListedPage) -> None:
        if number is not None and page.plural == LIMITS:
            for obj in page.items:
                self._tell(number, None, obj)
        if page.plural == JOBS and number is not None:
            for obj in page.items:
                self._saw_job(number, obj)

    def _saw_job(self, number: int, obj: Obj) -> None:
        """A version of a Job reached incarnation `number`: note whether it showed the Job finished."""
        finished = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        )
        record = self.api.job_by_uid.get(str(obj["metadata"].get("uid"))) if finished else None
        if record is not None:
            record.outcome_seen_by.add(number)

    def _listed(self, number: int | None, version: int, limits: set[Key]) -> None:
        """The end of a whole list: the operator forgets the limits it lacks that are not newer than it."""
        if number is None:
            return
        told = self.told.setdefault(number, {})
        for key in [k for k, o in told.items() if k not in limits and int(o["metadata"]["resourceVersion"]) <= version]:
            del told[key]

    def _returned(self, number: int | None, kind: str, obj: Obj) -> None:
        if kind == LIMITS and number is not None:
            self._tell(number, None, obj)
        if kind == JOBS and number is not None:
            self._saw_job(number, obj)

    def _known_limits(self, number: int | None) -> dict[Key, Obj]:
        return self.told.get(number, {}) if number is not None else {}

    def _pod_script(self, run: str, task: str | None, attempt: int) -> PodScript:
        definition = self.runs.get(run)
        if definition is None:
            return PodScript()
        return PodScript(
            start_after=definition.start_after,
            run_for=definition.run_for,
            succeed=attempt > definition.failing_attempts,
        )

    # -------------------------------------------------------------------------------- actions

    def run_def(self, index: int | str) -> RunDef:
        runs = self.scenario.runs
        return runs[int(index) % len(runs)]

    def apply(self, action: Action) -> None:
        api, kind = self.api, action.kind
        if kind in ("create_run", "recreate_run"):
            run = self.run_def(action.target)
            if (run.namespace, run.name) not in api.objects[FLOWRUNS]:
                api.create(FLOWRUNS, run.body(self.loop.time()))
        elif kind == "cancel":
            run = self.run_def(action.target)
            api.update_spec(FLOWRUNS, run.namespace, run.name, {"cancel": True})
        elif kind == "delete_run":
            run = self.run_def(action.target)
            api.delete_flowrun(run.namespace, run.name)
        elif kind == "delete_job":
            run = self.run_def(action.target)
            live = [r for r in api.jobs if r.run == run.name and not r.gone and r.key[0] == run.namespace]
            if live:
                api.user_delete_job(*live[-1].key)
        elif kind in ("create_limit", "set_limit", "delete_limit"):
            limits = self.scenario.limits
            if not limits:
                return
            limit = limits[int(action.target) % len(limits)]
            key = (limit.namespace, limit.name)
            if kind == "create_limit" and key not in api.objects[LIMITS]:
                api.create(LIMITS, limit.body())
            elif kind == "set_limit":
                api.update_spec(LIMITS, *key, {"limit": action.value})
            elif kind == "delete_limit":
                api.delete_limit(*key)
        elif kind == "drop_watch":
            stream = str(action.target)
            self.watches.drop(stream)
            gap = self.rng.choice((0.2, 1.0, 5.0))
            context = self.harness_context.copy()
            self.loop.call_later(gap, self._after_gap, stream, context=context)
        elif kind == "resync":
            self.resync()
        elif kind == "crash":
            self.crash()
        elif kind == "quota":
            api.quota_until[str(action.target)] = self.loop.time() + action.value
        else:
            raise ValueError(f"unknown action {kind}")

    def _after_gap(self, stream: str) -> None:
        current = self.current
        if current is None:
            return  # a restart lists every stream anyway
        if self.variant == "legacy":
            self.watches.relist(stream)
            # The deletions the gap swallowed reach the engine through its own re-list.
            self.loop.call_later(self.rng.choice((0.0, 1.0, 5.0)), self.resync, context=self.harness_context.copy())
            return

        async def relist() -> None:
            # What the stream does on 410 Gone: a fresh list through the engine, then on from its version.
            try:
                since = await current.engine.relist(stream, None)
            except Exception:
                self.loop.call_later(1.0, self._after_gap, stream, context=self.harness_context.copy())
                return
            if self.current is current:
                self.watches.resume(stream, since)

        self.loop.create_task(relist(), context=current.context.copy())

    # ------------------------------------------------------------------------ end-state checks

    def final_checks(self) -> None:
        """Once quiet: every run is finished consistently with its Jobs, or legitimately waiting."""
        api = self.api
        now = self.loop.time()
        for (namespace, name), run in sorted(api.objects[FLOWRUNS].items()):
            problem = self._run_problem(namespace, name, run, now)
            if problem:
                api.violate("end-state", problem)

    def _run_problem(self, namespace: str, name: str, run: Obj, now: float) -> str | None:
        api = self.api
        uid = run["metadata"]["uid"]
        spec, status = run.get("spec") or {}, run.get("status") or {}
        phase = status.get("phase")
        jobs = [r for r in api.jobs if r.owner_uid == uid]
        units: list[tuple[str | None, int, tuple[str, ...], tuple[str, ...]]] = []
        if spec.get("tasks"):
            for task in spec["tasks"]:
                retries = task.get("retries", spec.get("retries", 0))
                depends, tags = tuple(task.get("dependsOn") or ()), tuple(task.get("tags") or ())
                units.append((task["name"], 1 + int(retries), depends, tags))
        else:
            units.append((None, 1 + int(spec.get("retries", 0)), (), ()))
        described = ", ".join(
            f"{r.key[1]}:{r.outcome or ('deleted' if r.deleted_unfinished else r.pod.state)}" for r in jobs
        )
        where = f"run {namespace}/{name} phase {phase} ({status.get('message')}); jobs [{described}]"
        last: dict[str | None, JobRecord | None] = {}
        for task, attempts, _, _ in units:
            mine = sorted((r for r in jobs if r.task == task), key=lambda r: r.attempt)
            if len(mine) > attempts:
                return f"{where}: {len(mine)} Jobs for task {task}, at most {attempts} attempts allowed"
            last[task] = mine[-1] if mine else None
        running = [r for r in jobs if api.may_run(r)]
        if phase in TERMINAL:
            if running:
                return f"{where}: finished, but pods of {[r.key[1] for r in running]} may still run"
            if phase == "Succeeded":
                bad = [t for t, r in last.items() if r is None or r.outcome != "Complete"]
                return f"{where}: Succeeded but the last Job of {bad} did not complete" if bad else None
            if phase == "Failed":
                # A Job deleted after it finished, before any version showing its end reached the incarnation that
                # judged the run (deleted while it was down, or within a dropped watch's gap), is as good as deleted
                # unfinished: nothing it can read tells how the Job ended.
                final = next((w for w in reversed(api.writes.get(uid, [])) if w.run_phase == "Failed"), None)
                judge = final.owner if final is not None else None
                explained = any(
                    r is not None
                    and (
                        r.deleted_unfinished
                        or (r.gone and judge not in r.outcome_seen_by)
                        or (r.outcome == "Failed" and r.attempt >= attempts)
                    )
                    for (task, attempts, _, _), r in zip(units, last.values(), strict=True)
                )
                return None if explained else f"{where}: Failed, but no Job failed for good or was deleted"
            return None if spec.get("cancel") else f"{where}: Cancelled without spec.cancel"
        if spec.get("cancel"):
            return f"{where}: cancelled in spec but not Cancelled"
        if running:
            if any(r.pod.state == "Running" for r in running) and phase != "Running":
                return f"{where}: a pod has been running for a while but the phase is not Running"
            return None if phase in ("Submitted", "Running") else f"{where}: its Job runs but phase is {phase}"
        scheduled = spec.get("scheduledStart")
        if scheduled and not jobs and _parse(scheduled) > now:
            return None if phase == "Scheduled" else f"{where}: should be Scheduled until {scheduled}"
        for task, attempts, _, _ in units:
            r = last[task]
            if (
                r is not None
                and r.outcome == "Failed"
                and r.attempt < attempts
                and r.finished_at is not None
                and r.finished_at + int(spec.get("retryDelaySeconds", 0)) > now
            ):
                return None  # awaiting its retry
        if self._blocked(namespace, run, units, last):
            if phase in ("Pending", "Submitted", "Running"):
                return None
            return f"{where}: waits for a full limit but phase is {phase}"
        return f"{where}: not finished and nothing it waits for (no running Job, no full limit, no start time)"

    def _blocked(
        self,
        namespace: str,
        run: Obj,
        units: list[tuple[str | None, int, tuple[str, ...], tuple[str, ...]]],
        last: dict[str | None, JobRecord | None],
    ) -> bool:
        """Whether the run (or a task of it that is ready to start) waits for a limit that is full now."""
        api = self.api
        labels = run["metadata"].get("labels") or {}
        limits = [o for (ns, _), o in sorted(api.objects[LIMITS].items()) if ns == namespace]
        admitted_runs = {
            o["metadata"]["uid"]
            for (ns, _), o in api.objects[FLOWRUNS].items()
            if ns == namespace and (o.get("status") or {}).get("phase") in ("Submitted", "Running")
        }
        for limit in limits:
            spec = limit.get("spec") or {}
            if spec.get("selector") is None or not selector_matches(spec["selector"], labels):
                continue
            holders = api.label_holders(spec, namespace)
            holders |= {
                uid for uid in admitted_runs if selector_matches(spec["selector"], _labels_of(api, namespace, uid))
            }
            holders.discard(run["metadata"]["uid"])
            if len(holders) >= int(spec["limit"]):
                return True
        succeeded = {t for t, r in last.items() if r is not None and r.outcome == "Complete"}
        for task, _, depends, tags in units:
            if task is None or task in succeeded or not all(d in succeeded for d in depends):
                continue
            for limit in limits:
                spec = limit.get("spec") or {}
                if spec.get("tag") in tags and len(api.tag_holders(str(spec["tag"]), namespace)) >= int(spec["limit"]):
                    return True
        return False


def _labels_of(api: FakeApi, namespace: str, uid: str) -> dict[str, str]:
    for (ns, _), o in api.objects[FLOWRUNS].items():
        if ns == namespace and o["metadata"]["uid"] == uid:
            return dict(o["metadata"].get("labels") or {})
    return {}


def _parse(value: str) -> float:
    from sim.vloop import EPOCH

    return (datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) - EPOCH).total_seconds()


def client_propagation(engine_variant: str) -> str:
    """The propagation policy the real client's delete_job uses (the harness mirrors it, it does not choose)."""
    import inspect

    from flowrun_operator.kube.client import Kube

    source = inspect.getsource(Kube.delete_job)
    return "Foreground" if '"Foreground"' in source else "Background"


# ------------------------------------------------------------------------------ engine patches


class _Random(random.Random):
    """random.Random whose unseeded instances are seeded from the scenario: jitter stays deterministic."""

    seed_value = 0

    def __init__(self, x: Any = None) -> None:
        super().__init__(self.seed_value if x is None else x)


@contextlib.contextmanager
def engine_patches(harness: Harness) -> Iterator[None]:
    """Put the engine on the simulation's clock and make its randomness reproducible."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(module: Any, name: str, value: Any) -> None:
        if hasattr(module, name):
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, value)

    loop = harness.loop
    _Random.seed_value = harness.scenario.seed
    shim = SimpleNamespace(**{**random.__dict__, "Random": _Random})
    try:
        if harness.variant == "legacy":
            reconciler = importlib.import_module("flowrun_operator.handlers.reconciler")
            clock = SimClock(loop)

            class FakeDatetime(datetime):
                @classmethod
                def now(cls, tz: Any = None) -> Any:
                    return clock.now()

            patch(reconciler, "time", SimpleNamespace(monotonic=loop.time, perf_counter=loop.time, time=loop.time))
            patch(reconciler, "datetime", FakeDatetime)
            patch(reconciler, "RESYNC_SECONDS", 1e9)
        else:
            engine = importlib.import_module("flowrun_operator.engine")
            patch(engine, "RESYNC_SECONDS", 1e9)
            for name, module in sorted(sys.modules.items()):
                if name.startswith("flowrun_operator.engine") and module is not None:
                    patch(module, "random", shim)
        random.seed(harness.scenario.seed)
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)
