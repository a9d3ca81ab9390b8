"""Per-key decisions (no I/O): which runs changed, which queue heads are admitted, what to write.

A round gets the runs and limits that events touched. Each touched run is evaluated (`observe`, pure) into
its share of the limits (slots held, places in lines); a limit where a slot freed or the line changed has
its heads considered for admission; every run evaluated or admitted is planned (`plan`, pure) into the
status to write and the Jobs to create or delete. The work of a round is proportional to the keys it got,
never to the namespace.

Admission is work-conserving: heads are taken in order (priority desc, creation time, name), and a head
that also waits for another limit without room is passed over, so a run waiting for limit A never blocks
a run that needs only limit B. A run that needs several limits is admitted as soon as all of them have room
at once; while another of its limits stays full, runs behind it in this line may pass it (Kueue's
BestEffortFIFO behaves the same way). Each line is scanned at most MAX_SCAN entries deep per round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from flowrun_operator.api.flowrun import FlowRunPhase
from flowrun_operator.scheduling.admission import Wait
from flowrun_operator.scheduling.jobs import JobInfo
from flowrun_operator.scheduling.runstate import JobToCreate, RunEvent, RunObservation, RunSnapshot, observe, plan

from .view import NamespaceView, QueueEntry, RunRecord, Share, holds

log = logging.getLogger("flowrun_operator.engine.decide")

MAX_SCAN = 2000


@dataclass(slots=True)
class StatusChange:
    run: str
    status: dict[str, object]
    events: list[RunEvent]
    urgent: bool  # a transition; False: only the place in line changed


@dataclass(slots=True)
class Actions:
    delete_jobs: list[tuple[str, str]] = field(default_factory=list)  # (run, job)
    create_jobs: list[tuple[RunSnapshot, JobToCreate]] = field(default_factory=list)
    statuses: list[StatusChange] = field(default_factory=list)
    delete_runs: list[tuple[str, str]] = field(default_factory=list)  # (run, uid)
    wake: dict[str, datetime] = field(default_factory=dict)
    admitted: list[tuple[str, datetime]] = field(default_factory=list)  # (run, waiting since), for metrics
    retire: list[str] = field(default_factory=list)  # finished runs whose work is gone
    limits_touched: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Hold:
    """The API server refused a run's Job for a reason that passes (e.g. a ResourceQuota): the run waits
    out of line until `until` (loop time)."""

    reason: str
    message: str
    until: float


def entry_of(record: RunRecord, key: str) -> QueueEntry:
    return (-record.priority, record.base.created.timestamp(), key)


def _own_jobs(record: RunRecord, jobs: list[JobInfo]) -> list[JobInfo]:
    return [j for j in jobs if j.owner_uid in ("", record.uid)]


def evaluate(
    view: NamespaceView,
    run: str,
    now: datetime,
    *,
    holds_out: bool = False,
    rejected: str | None = None,
) -> tuple[RunObservation | None, Share]:
    """A run's observation and its share of the limits, from its record and its live Jobs."""
    record = view.runs.get(run)
    jobs = view.jobs_of(run)
    held: set[tuple[str, str]] = set()
    own = _own_jobs(record, jobs) if record is not None else []
    for job in jobs:
        if not holds(job):
            continue
        mine = record is not None and job in own
        label_limits = record.label_limits if mine and record is not None else view.match_labels(job.labels)
        held.update((limit, run) for limit in label_limits)
        if job.task and job.tags:
            held.update((limit, f"{run}/{job.task}") for limit in view.match_tags(job.tags))
    if record is None:
        return None, Share(frozenset(held))
    observation = observe(record.snapshot, own, now, record.attempts_known)
    if rejected and observation.terminal is None:
        observation.terminal = FlowRunPhase.FAILED
        observation.terminal_reason = "JobRejected"
        observation.terminal_message = rejected
    record.dag_admitted = observation.is_dag and observation.admitted and observation.terminal is None
    if record.dag_admitted:
        held.update((limit, run) for limit in record.label_limits)
    waiting: set[tuple[str, QueueEntry]] = set()
    if observation.terminal is None and not holds_out:
        if observation.needs_admission:
            entry = entry_of(record, run)
            waiting.update((limit, entry) for limit in record.label_limits)
        if observation.admitted:
            waiting.update(_unit_entries(view, record, observation))
    return observation, Share(frozenset(held), frozenset(waiting))


def _unit_entries(view: NamespaceView, record: RunRecord, observation: RunObservation) -> set[tuple[str, QueueEntry]]:
    entries: set[tuple[str, QueueEntry]] = set()
    for state in observation.units:
        if state.wants_attempt is None or not state.unit.tags:
            continue
        entry = entry_of(record, state.unit.request_key(record.name))
        entries.update((limit, entry) for limit in view.match_tags(state.unit.tags))
    return entries


class Round:
    """One round of decisions for one namespace."""

    def __init__(
        self,
        view: NamespaceView,
        now: datetime,
        holds_out: Mapping[str, Hold],
        rejected: Mapping[str, str],
    ) -> None:
        self.view = view
        self.now = now
        self.holds_out = holds_out
        self.rejected = rejected
        self.observations: dict[str, RunObservation] = {}
        self.admitted_runs: set[str] = set()
        self.admitted_units: set[str] = set()
        self.actions = Actions()
        self.failed: set[str] = set()  # runs that could not be evaluated or planned: retried with backoff

    def _evaluate(self, run: str) -> None:
        try:
            observation, share = evaluate(
                self.view, run, self.now, holds_out=run in self.holds_out, rejected=self.rejected.get(run)
            )
        except Exception:
            # One run the operator cannot read must not stop the others; its Jobs keep their slots.
            log.exception("cannot evaluate flowrun %s/%s", self.view.name, run)
            self.failed.add(run)
            return
        if observation is not None:
            self.observations[run] = observation
        self.actions.limits_touched |= self.view.set_share(run, share)

    def run(self, runs: set[str], limits: set[str], refresh: set[str]) -> Actions:
        for run in sorted(runs | refresh):
            self._evaluate(run)
        self.actions.limits_touched |= limits & set(self.view.limits)
        # Runs that need admission but match no limit start at once.
        for run, observation in self.observations.items():
            if (
                observation.needs_admission
                and observation.terminal is None
                and not self.view.runs[run].label_limits
                and run not in self.holds_out
            ):
                self.admitted_runs.add(run)
        self._admit_label_heads()
        # Newly admitted runs with tasks: their tagged tasks join the tag limits' lines now.
        for run in sorted(self.admitted_runs):
            record = self.view.runs[run]
            admitted = self.observations.get(run)
            if admitted is None or not admitted.is_dag:
                continue
            share = self.view.shares.get(run, Share())
            entries = _unit_entries(self.view, record, admitted)
            self.actions.limits_touched |= self.view.set_share(run, Share(share.held, share.waiting | entries))
        # Tagged tasks that no tag limit matches start at once, like runs that match no label limit.
        for run, observation in self.observations.items():
            if observation.terminal is not None or not (observation.admitted or run in self.admitted_runs):
                continue
            for state in observation.units:
                if state.wants_attempt is not None and state.unit.tags and not self.view.match_tags(state.unit.tags):
                    self.admitted_units.add(state.unit.request_key(run))
        self._admit_tag_heads()
        for run in sorted(set(self.observations) | self.admitted_runs):
            try:
                self._plan(run, refresh_only=run in refresh and run not in runs)
            except Exception:
                log.exception("cannot plan flowrun %s/%s", self.view.name, run)
                self.failed.add(run)
        return self.actions

    # ---------------------------------------------------------------------------------- admission

    def _label_room(self, limits: tuple[str, ...]) -> bool:
        for name in limits:
            limit = self.view.limits.get(name)
            if limit is not None and limit.spec is not None and limit.room <= 0:
                return False
        return True

    def _admit_label_heads(self) -> None:
        for name in sorted(self.actions.limits_touched):
            limit = self.view.limits.get(name)
            if limit is None or limit.spec is None or limit.by_tag or limit.room <= 0 or not limit.waiting:
                continue
            for entry in list(limit.waiting.islice(0, MAX_SCAN)):
                if limit.room <= 0:
                    break
                run = entry[2]
                record = self.view.runs.get(run)
                if record is None or run in self.holds_out or not self._label_room(record.label_limits):
                    continue
                share = self.view.shares.get(run, Share())
                self.view.set_share(
                    run,
                    Share(
                        share.held | {(lim, run) for lim in record.label_limits},
                        frozenset(w for w in share.waiting if w[1][2] != run),
                    ),
                )
                self.admitted_runs.add(run)
                if run not in self.observations:
                    observation, _ = evaluate(self.view, run, self.now)
                    if observation is not None:
                        self.observations[run] = observation

    def _admit_tag_heads(self) -> None:
        for name in sorted(self.actions.limits_touched):
            limit = self.view.limits.get(name)
            if limit is None or limit.spec is None or not limit.by_tag or limit.room <= 0 or not limit.waiting:
                continue
            for entry in list(limit.waiting.islice(0, MAX_SCAN)):
                if limit.room <= 0:
                    break
                key = entry[2]
                run = key.split("/", 1)[0]
                share = self.view.shares.get(run, Share())
                wanted = [w[0] for w in share.waiting if w[1][2] == key]
                if not all(self.view.limits[t].room > 0 for t in wanted if t in self.view.limits):
                    continue
                self.view.set_share(
                    run,
                    Share(
                        share.held | {(t, key) for t in wanted},
                        frozenset(w for w in share.waiting if w[1][2] != key),
                    ),
                )
                self.admitted_units.add(key)
                if run not in self.observations:
                    observation, _ = evaluate(self.view, run, self.now)
                    if observation is not None:
                        self.observations[run] = observation

    # --------------------------------------------------------------------------------------- plan

    def _waits(self, run: str) -> tuple[list[Wait], dict[str, list[Wait]]]:
        share = self.view.shares.get(run)
        run_waits: list[Wait] = []
        unit_waits: dict[str, list[Wait]] = {}
        if share is None:
            return run_waits, unit_waits
        for name, entry in sorted(share.waiting):
            limit = self.view.limits.get(name)
            if limit is None or limit.spec is None or entry not in limit.waiting:
                continue
            wait = Wait(name, limit.position(entry), len(limit.holders), limit.spec.limit)
            if entry[2] == run:
                run_waits.append(wait)
            else:
                unit_waits.setdefault(entry[2], []).append(wait)
        return _holding(run_waits), {key: _holding(waits) for key, waits in unit_waits.items()}

    def _plan(self, run: str, refresh_only: bool) -> None:
        observation = self.observations.get(run)
        record = self.view.runs.get(run)
        if observation is None or record is None:
            return
        run_waits, unit_waits = self._waits(run)
        hold = self.holds_out.get(run)
        result = plan(
            observation,
            run_admitted=run in self.admitted_runs,
            run_waits=run_waits,
            admitted_units=self.admitted_units,
            unit_waits=unit_waits,
            now=self.now,
            held=(hold.reason, hold.message) if hold is not None else None,
        )
        actions = self.actions
        actions.delete_jobs.extend((run, job) for job in result.delete_jobs)
        actions.create_jobs.extend((observation.snapshot, job) for job in result.create_jobs)
        if result.delete_run:
            actions.delete_runs.append((run, record.uid))
        if result.wake_at is not None:
            actions.wake[run] = result.wake_at
        if run in self.admitted_runs and observation.needs_admission:
            actions.admitted.append((run, record.base.created))
        desired = result.status.to_api()
        current = record.status_api()
        if desired != current:
            urgent = _essential(desired) != _essential(current)
            if urgent or refresh_only:
                actions.statuses.append(StatusChange(run, desired, result.events, urgent))
        elif (
            record.finished
            and record.assumed_status is None
            and not result.delete_jobs
            and not result.delete_run
            and not any(holds(j) for j in self.view.jobs_of(run))
        ):
            actions.retire.append(run)


def _essential(status: dict[str, object]) -> dict[str, object]:
    """A status without the parts that only describe a waiting run's place in line (positions, in-use
    counts): a difference here is a transition and is written at once; the rest is a paced refresh."""
    stripped = {k: v for k, v in status.items() if k not in ("waitingFor", "message")}
    conditions = status.get("conditions") or []
    stripped["conditions"] = [
        {k: v for k, v in c.items() if not (c.get("type") == "Admitted" and k == "message")}
        for c in conditions  # type: ignore[attr-defined]
    ]
    task_runs = status.get("taskRuns") or []
    stripped["taskRuns"] = [
        {k: v for k, v in t.items() if k not in ("waitingFor", "message")}
        for t in task_runs  # type: ignore[attr-defined]
    ]
    stripped["waitingFor"] = [w.get("name") for w in status.get("waitingFor") or []]  # type: ignore[attr-defined]
    return stripped


def _holding(waits: list[Wait]) -> list[Wait]:
    """The limits that hold a request back are the full ones; a line it waits in only because another of
    its limits is full is not what it waits for."""
    full = [w for w in waits if w.in_use >= w.capacity]
    return full or waits
