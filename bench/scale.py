"""Scale benchmark: a deep queue behind one ConcurrencyLimit in one namespace, then a long finished history.

    .venv/bin/python bench/scale.py                          # 10,000 queued, 100 queued, 50,000 in history
    SCALE_RUNS=300 SCALE_SMALL_RUNS=50 SCALE_HISTORY=600 .venv/bin/python bench/scale.py   # smoke size

Phases, with one operator watching two namespaces of one embedded control plane (or the cluster in $KUBECONFIG
with USE_EXISTING_CLUSTER=1):
1. small queue: SMALL FlowRuns (default 100) behind a ConcurrencyLimit at ``limit: 0``; once all show Pending
   with a place in line and the operator is quiet again (under 0.05 cores over 2 s; ``--open-at-once`` skips
   this wait), the limit is raised to LIMIT (default 20) and the queue drains (pods finish at once).
2. deep queue: the same with RUNS FlowRuns (default 10,000), created from a pool of 16 threads.
3. history: HISTORY FlowRuns (default 50,000) created in the deep queue's namespace and at once marked
   Succeeded through their status subresource (batches from a thread pool), as a long finished history; they
   carry a far-future ``scheduledStart`` so the operator never starts one. Then the operator's RSS.

Measured from this script's own watches on FlowRuns, Jobs and Events (never by polling objects):
- last create -> every run ``Pending`` with a ``status.waitingFor`` position; the operator's RSS then; how long
  after that the operator became quiet (its CPU, sampled from /proc)
- limit raised -> first Job; drain rate (runs/s) from the first Job over the first SMALL runs (both queues) and
  over the first WINDOW runs and the first WINDOW_SECONDS seconds (deep queue)
- operator CPU (ms per run) while queueing (until quiet) and while draining; status writes and Events per run from the
  operator's Prometheus metrics (``flowrun_status_writes_total``, ``flowrun_events_posted_total``) next to
  what the watches saw (FlowRun updates, Events from the operator)
- no over-admission: the number of unfinished Jobs of a queue never exceeds LIMIT at any watched instant, and
  no Job exists before the limit is raised

The ``check:`` lines at the end state those invariants; the exit code is 1 when one fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs pinned in the project
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from common import (
    GROUP,
    RUN_LABEL,
    VERSION,
    BenchEnv,
    Watcher,
    apiserver_requests,
    counter_delta,
    create_all,
    custom_lister,
    flowrun,
    install_signal_handlers,
    job_finished,
    job_lister,
    memory_of,
    now,
    ratio,
    request_delta,
    secs,
    table,
    wait_until,
)
from flowrun_operator.kube.client import release

LIMIT_NAME = "scale"
QUEUE_LABEL = {"team": "scale"}
HISTORY_LABEL = {"bench": "history"}
FAR_FUTURE = "2099-01-01T00:00:00Z"
OPERATOR_COMPONENT = "flowrun-operator"
FINISHED = ("Succeeded", "Failed", "Cancelled")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def has_position(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Pending" and any(
        isinstance(w, dict) and w.get("position") for w in status.get("waitingFor") or []
    )


# ------------------------------------------------------------------------------------------------ watching


class Queue:
    """One namespace as the watches see it: runs (phase, place in line, finish time), the operator's Jobs
    (unfinished at every instant) and the Events the operator posted about FlowRuns."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cond = threading.Condition()
        self.phase: dict[str, str] = {}
        self.positioned: set[str] = set()
        self.all_positioned_at: float | None = None
        self.expected = 0  # the number of queued runs the all-positioned time waits for
        self.succeeded: set[str] = set()
        self.finished_at: dict[str, float] = {}
        self.failed: set[str] = set()
        self.run_updates = 0
        self.jobs_added: dict[str, float] = {}
        self.unfinished: set[str] = set()
        self.max_unfinished = 0
        self.over_limit_events = 0
        self.history_jobs = 0
        self.operator_events = 0

    def on_run(self, kind: str, run: dict[str, Any], t: float) -> None:
        name = run["metadata"]["name"]
        status = run.get("status") or {}
        phase = str(status.get("phase") or "")
        with self.cond:
            if kind == "MODIFIED":
                self.run_updates += 1
            if kind == "DELETED":
                self.phase.pop(name, None)
                self.positioned.discard(name)
                self.succeeded.discard(name)
            else:
                self.phase[name] = phase
                if phase == "Succeeded":
                    self.succeeded.add(name)
                else:
                    self.succeeded.discard(name)
                if has_position(status):
                    self.positioned.add(name)
                else:
                    self.positioned.discard(name)
            if self.expected and self.all_positioned_at is None and len(self.positioned) >= self.expected:
                self.all_positioned_at = t
            if phase in FINISHED and name not in self.finished_at:
                self.finished_at[name] = t
                if phase != "Succeeded":
                    self.failed.add(name)
            self.cond.notify_all()

    def on_job(self, kind: str, job: dict[str, Any], t: float) -> None:
        name = job["metadata"]["name"]
        labels = job["metadata"].get("labels") or {}
        if labels.get("bench") == HISTORY_LABEL["bench"]:
            with self.cond:
                if kind == "ADDED":
                    self.history_jobs += 1
            return
        if RUN_LABEL not in labels:
            return
        with self.cond:
            if kind != "DELETED":
                self.jobs_added.setdefault(name, t)
            if kind == "DELETED" or job_finished(job):
                self.unfinished.discard(name)
            else:
                self.unfinished.add(name)
            self.max_unfinished = max(self.max_unfinished, len(self.unfinished))
            if len(self.unfinished) > self.limit:
                self.over_limit_events += 1
            self.cond.notify_all()

    def on_event(self, kind: str, event: dict[str, Any], t: float) -> None:
        if kind != "ADDED":
            return
        involved = event.get("involvedObject") or {}
        component = event.get("reportingComponent") or (event.get("source") or {}).get("component")
        if involved.get("kind") == "FlowRun" and component == OPERATOR_COMPONENT:
            with self.cond:
                self.operator_events += int(event.get("count") or 1)

    def first_job(self) -> float | None:
        with self.cond:
            return min(self.jobs_added.values()) if self.jobs_added else None


# ------------------------------------------------------------------------------------------------ operator


def operator_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def settle(pid: int, quiet_cores: float = 0.05, window: float = 2.0, timeout: float = 60.0) -> float:
    """Wait until the operator uses less than ``quiet_cores`` over ``window`` seconds; returns the wait, or NaN
    when the operator was not quiet within ``timeout``."""
    start = now()
    last = operator_cpu(pid)
    while now() - start < timeout:
        time.sleep(window)
        current = operator_cpu(pid)
        if (current - last) / window < quiet_cores:
            return now() - start
        last = current
    return float("nan")


# ------------------------------------------------------------------------------------------------ objects


def limit_body(limit: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ConcurrencyLimit",
        "metadata": {"name": LIMIT_NAME},
        "spec": {"selector": {"matchLabels": QUEUE_LABEL}, "limit": limit},
    }


def create_limit(custom: client.CustomObjectsApi, namespace: str, timeout: float = 60) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "concurrencylimits", limit_body(0))
    deadline = now() + timeout
    while True:  # set-up only: wait until the operator has seen the limit (it writes its Ready condition)
        found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "concurrencylimits", LIMIT_NAME)
        if any(c.get("type") == "Ready" for c in (found.get("status") or {}).get("conditions") or []):
            return
        if now() > deadline:
            raise TimeoutError("the operator did not write the ConcurrencyLimit's status")
        time.sleep(0.1)


def finished_status() -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "phase": "Succeeded",
        "observedGeneration": 1,
        "startTime": stamp,
        "completionTime": stamp,
        "duration": "0s",
        "message": "created finished by bench/scale.py",
        "conditions": [
            {
                "type": "Finished",
                "status": "True",
                "reason": "Succeeded",
                "message": "created finished by bench/scale.py",
                "lastTransitionTime": stamp,
            }
        ],
    }


def in_pool(items: Sequence[str], work: Callable[[str], None], threads: int) -> None:
    """Run ``work(item)`` for every item from a pool; retries throttling and server errors."""

    def one(item: str) -> None:
        for attempt in range(8):
            try:
                work(item)
                return
            except ApiException as error:
                if error.status not in (429, 500, 502, 503, 504) or attempt == 7:
                    raise
                time.sleep(0.2 * (attempt + 1))

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="scale") as pool:
        for future in [pool.submit(one, item) for item in items]:
            future.result()


# ------------------------------------------------------------------------------------------------ phases


def drain_rate(first_job: float | None, finished: Sequence[float], count: int) -> float:
    """Runs per second from the first Job to the ``count``-th finished run; NaN if fewer finished."""
    if first_job is None or count < 1 or len(finished) < count:
        return float("nan")
    span = finished[count - 1] - first_job
    return count / span if span > 0 else float("nan")


def window_rate(first_job: float | None, finished: Sequence[float], seconds: float) -> float:
    """Runs finished per second in the first ``seconds`` after the first Job; NaN if the drain was shorter."""
    if first_job is None or not finished or finished[-1] - first_job < seconds:
        return float("nan")
    return sum(1 for t in finished if t - first_job <= seconds) / seconds


def queue_phase(env: BenchEnv, namespace: str, runs: int, args: argparse.Namespace, label: str) -> dict[str, Any]:
    """Queue ``runs`` FlowRuns behind the limit at 0, wait until all show their place in line, open the limit
    and drain them."""
    assert env.api is not None and env.operator is not None
    pid = env.operator.pid
    custom = client.CustomObjectsApi(env.api)
    queue = Queue(args.limit)
    create_limit(custom, namespace)
    names = [f"r-{i:05d}" for i in range(runs)]
    bodies = [(n, flowrun(n, 0, QUEUE_LABEL)) for n in names]
    run_watch = Watcher(custom_lister(env.new_client(), namespace, "flowruns"), queue.on_run, f"flowruns/{label}")
    job_watch = Watcher(job_lister(env.new_client(), namespace), queue.on_job, f"jobs/{label}")
    event_watch = Watcher(_event_lister(env, namespace), queue.on_event, f"events/{label}")
    found: dict[str, Any] = {"label": label, "runs": runs}

    def create(body: dict[str, Any]) -> Any:
        return release(
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "flowruns", body, _preload_content=False)
        )

    def progress() -> str:
        with queue.cond:
            phases: dict[str, int] = {}
            for p in queue.phase.values():
                phases[p or "-"] = phases.get(p or "-", 0) + 1
            return (
                f"{label}: {len(queue.positioned)}/{runs} Pending with a position, {len(queue.finished_at)} finished,"
                f" {len(queue.jobs_added)} Jobs; phases {dict(sorted(phases.items()))}"
            )

    env.log(f"{label}: {runs} FlowRuns behind a ConcurrencyLimit at 0 in {namespace}")
    with run_watch, job_watch, event_watch:
        metrics_start = env.operator.counters()
        requests_start = apiserver_requests(env.api)
        meter = env.cpu_meter()
        meter.start()
        with queue.cond:
            queue.expected = runs
        times = create_all(bodies, create, args.threads)
        last_create = max(end for _, end in times.values())
        found["create_span"] = last_create - min(start for start, _ in times.values())
        env.log(f"{label}: all {runs} created in {found['create_span']:.1f}s")
        all_positioned = True
        try:
            wait_until(
                lambda: queue.all_positioned_at is not None,
                queue.cond,
                args.pending_timeout,
                f"{label}: all runs Pending with a position",
                [run_watch],
                progress=progress,
            )
        except TimeoutError:
            all_positioned = False
        found["all_positioned"] = all_positioned
        found["positioned_at_timeout"] = len(queue.positioned)
        found["all_positioned_after"] = (
            queue.all_positioned_at - last_create if queue.all_positioned_at is not None else float("nan")
        )
        found["memory_queued"] = memory_of(pid)
        # The operator still has work from the burst of creates when the last run shows Pending (the Pending
        # Events, the watch events of its own status writes). The limit opens once that work is done, so the
        # drain of a deep queue is compared with a small one's at rest; --open-at-once opens it at once.
        found["quiet_after"] = float("nan") if args.open_at_once else settle(pid, timeout=args.quiet_timeout)
        found["events_when_opened"] = queue.operator_events
        found["queue_cpu"] = meter.stop().get("operator", float("nan"))
        found["jobs_before_open"] = len(queue.jobs_added)
        metrics_queued = env.operator.counters()
        updates_queued = queue.run_updates
        events_queued = queue.operator_events
        env.log(f"{label}: {progress()}")

        drain = env.cpu_meter()
        drain.start()
        opened = now()
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "concurrencylimits", LIMIT_NAME, {"spec": {"limit": args.limit}}
        )
        env.log(f"{label}: limit raised to {args.limit}")
        drained = True
        try:
            wait_until(
                lambda: len(queue.finished_at) >= runs,
                queue.cond,
                args.drain_timeout,
                f"{label}: all runs finished",
                [run_watch, job_watch],
                progress=progress,
            )
        except TimeoutError:
            drained = False
        drain.stop()
        metrics_end = env.operator.counters()
        requests_end = apiserver_requests(env.api)
        with queue.cond:
            first_job = min(queue.jobs_added.values()) if queue.jobs_added else None
            finished = sorted(queue.finished_at.values())
            found.update(
                drained=drained,
                finished=len(finished),
                failed=sorted(queue.failed),
                first_job_after=(first_job - opened) if first_job is not None else float("nan"),
                rate_small=drain_rate(first_job, finished, min(args.small_runs, runs)),
                rate_window=drain_rate(first_job, finished, min(args.window_runs, runs)),
                rate_seconds=window_rate(first_job, finished, args.window_seconds),
                drain_span=(finished[-1] - first_job) if finished and first_job is not None else float("nan"),
                max_unfinished=queue.max_unfinished,
                over_limit_events=queue.over_limit_events,
                run_updates_queueing=updates_queued,
                run_updates_draining=queue.run_updates - updates_queued,
                events_queueing=events_queued,
                events_draining=queue.operator_events - events_queued,
            )
    found["drain_cpu"] = drain.result.get("operator", float("nan"))
    found["drain_cpu_rows"] = drain.rows()
    found["drain_wall"] = drain.wall
    for key, name in (("status_writes", "flowrun_status_writes_total"), ("events", "flowrun_events_posted_total")):
        found[f"{key}_queueing"] = counter_delta(metrics_start, metrics_queued, name)
        found[f"{key}_draining"] = counter_delta(metrics_queued, metrics_end, name)
    found["metrics_available"] = metrics_end is not None
    found["apiserver_requests"] = request_delta(requests_start, requests_end)
    return found


def _event_lister(env: BenchEnv, namespace: str) -> Callable[..., Any]:
    core = client.CoreV1Api(env.new_client())

    def lister(**kwargs: Any) -> Any:
        return core.list_namespaced_event(namespace, **kwargs)

    return lister


def history_phase(env: BenchEnv, namespace: str, queue_runs: int, args: argparse.Namespace) -> dict[str, Any]:
    """Create ``args.history`` FlowRuns and mark each Succeeded; then the operator's RSS once it is quiet."""
    assert env.api is not None and env.operator is not None
    pid = env.operator.pid
    custom = client.CustomObjectsApi(env.api)
    history = Queue(args.limit)
    names = [f"h-{i:06d}" for i in range(args.history)]
    run_watch = Watcher(custom_lister(env.new_client(), namespace, "flowruns"), history.on_run, "flowruns/history")
    job_watch = Watcher(job_lister(env.new_client(), namespace), history.on_job, "jobs/history")

    def body(name: str) -> dict[str, Any]:
        run = flowrun(name, 0, HISTORY_LABEL)
        run["spec"]["scheduledStart"] = FAR_FUTURE
        return run

    def create(name: str) -> None:
        try:
            release(
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "flowruns", body(name), _preload_content=False
                )
            )
        except ApiException as error:
            if error.status != 409:  # a retried create that had landed
                raise

    def finish(name: str) -> None:
        release(
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, "flowruns", name, {"status": finished_status()}, _preload_content=False
            )
        )

    def seen_all(batch: Sequence[str]) -> Callable[[], bool]:
        return lambda: all(history.phase.get(n) for n in batch)

    def succeeded() -> int:
        with history.cond:
            return sum(1 for n in history.succeeded if n.startswith("h-"))

    env.log(f"history: {args.history} FlowRuns created and marked Succeeded in batches of {args.batch}")
    with run_watch, job_watch:
        start = now()
        for offset in range(0, len(names), args.batch):
            batch = names[offset : offset + args.batch]
            in_pool(batch, create, args.threads)
            # The operator writes a new run's first status (Scheduled) once; marking the run Succeeded after that
            # write keeps the operator from overwriting the mark with it.
            with contextlib.suppress(TimeoutError):
                wait_until(
                    seen_all(batch),
                    history.cond,
                    60,
                    "the operator's first status on the history batch",
                    [run_watch],
                )
            in_pool(batch, finish, args.threads)
            if (offset // args.batch) % 10 == 9:
                env.log(f"history: {offset + len(batch)}/{len(names)}")
        created = now() - start
        # A run whose first status from the operator was not seen within the wait above may still get it after
        # the mark: such a run is marked again until the watch shows every one Succeeded.
        repatched = 0
        for _ in range(5):
            try:
                wait_until(
                    lambda: succeeded() >= len(names),
                    history.cond,
                    10,
                    "history runs Succeeded",
                    [run_watch],
                )
                break
            except TimeoutError:
                with history.cond:
                    missing = [n for n in names if n not in history.succeeded]
                repatched += len(missing)
                in_pool(missing, finish, args.threads)
        all_succeeded = succeeded() >= len(names)
        quiet_after = settle(pid)
        memory = memory_of(pid)
        with history.cond:
            history_jobs = history.history_jobs
    return {
        "history": args.history,
        "create_seconds": created,
        "repatched": repatched,
        "all_succeeded": all_succeeded,
        "history_jobs": history_jobs,
        "quiet_after": quiet_after,
        "memory": memory,
        "finished_total": args.history + queue_runs,
    }


# ------------------------------------------------------------------------------------------------ report


def per_run(value: float, runs: int) -> str:
    return "-" if value != value or runs == 0 else f"{value / runs:.2f}"


def report(args: argparse.Namespace, small: dict[str, Any], big: dict[str, Any], hist: dict[str, Any]) -> str:
    n, k = big["runs"], small["runs"]
    mib = "{:.0f} MiB".format
    rows = [
        ("runs queued behind the limit at 0", str(k), str(n)),
        ("creating them (16 threads)", secs(small["create_span"]), secs(big["create_span"])),
        (
            "last create -> all Pending with a position",
            secs(small["all_positioned_after"]),
            secs(big["all_positioned_after"]),
        ),
        (
            "runs Pending with a position (at the end of the wait)",
            str(small["positioned_at_timeout"]),
            str(big["positioned_at_timeout"]),
        ),
        (
            "operator RSS then",
            mib(small["memory_queued"].get("VmRSS", float("nan"))),
            mib(big["memory_queued"].get("VmRSS", float("nan"))),
        ),
        (
            "all Pending -> operator quiet (limit raised then)",
            secs(small["quiet_after"]),
            secs(big["quiet_after"]),
        ),
        (
            "operator Events seen when the limit was raised",
            str(small["events_when_opened"]),
            str(big["events_when_opened"]),
        ),
        (
            f"limit 0 -> {args.limit}: first Job after",
            secs(small["first_job_after"]),
            secs(big["first_job_after"]),
        ),
        (f"drain rate, first {min(k, n)} runs (runs/s)", f"{small['rate_small']:.1f}", f"{big['rate_small']:.1f}"),
        (
            f"drain rate, first {min(args.window_runs, n)} runs (runs/s)",
            "-",
            f"{big['rate_window']:.1f}",
        ),
        (f"drain rate, first {args.window_seconds:g} s (runs/s)", "-", f"{big['rate_seconds']:.1f}"),
        ("drain: first Job -> last run finished", secs(small["drain_span"]), secs(big["drain_span"])),
        (
            "operator CPU per run while queueing (ms)",
            per_run(small["queue_cpu"] * 1000, k),
            per_run(big["queue_cpu"] * 1000, n),
        ),
        (
            "operator CPU per run while draining (ms)",
            per_run(small["drain_cpu"] * 1000, k),
            per_run(big["drain_cpu"] * 1000, n),
        ),
    ]
    for key, what in (("status_writes", "status writes"), ("events", "Events posted")):
        rows.append(
            (
                f"{what} per run, metric (queueing + draining)",
                per_run(small[f"{key}_queueing"] + small[f"{key}_draining"], k),
                per_run(big[f"{key}_queueing"] + big[f"{key}_draining"], n),
            )
        )
    rows += [
        (
            "FlowRun updates per run, watched (queueing + draining)",
            per_run(small["run_updates_queueing"] + small["run_updates_draining"], k),
            per_run(big["run_updates_queueing"] + big["run_updates_draining"], n),
        ),
        (
            "operator Events per run, watched (queueing + draining)",
            per_run(small["events_queueing"] + small["events_draining"], k),
            per_run(big["events_queueing"] + big["events_draining"], n),
        ),
        ("max unfinished Jobs at any watched instant", str(small["max_unfinished"]), str(big["max_unfinished"])),
    ]
    out = [
        table(
            f"Queues behind one ConcurrencyLimit (opened to {args.limit}; pods finish at once)",
            ("", "small", "deep"),
            rows,
        )
    ]
    hist_rows = [
        ("finished runs in the namespace", f"{hist['finished_total']} ({hist['history']} created finished)"),
        ("creating and marking them Succeeded", secs(hist["create_seconds"])),
        ("re-marked after an operator write", str(hist["repatched"])),
        ("operator RSS after (quiet)", mib(hist["memory"].get("VmRSS", float("nan")))),
        ("operator peak RSS over the whole benchmark (VmHWM)", mib(hist["memory"].get("VmHWM", float("nan")))),
    ]
    out.append(table("History", ("", "value"), hist_rows))
    out.append(
        "\n".join(
            [
                f"drain rate deep/small, first {min(k, n)} runs: {ratio(big['rate_small'], small['rate_small']):.2f}",
                f"drain rate deep (first {min(args.window_runs, n)} runs)/small (first {min(k, n)}): "
                f"{ratio(big['rate_window'], small['rate_small']):.2f}",
                "status writes and Events from the operator's /metrics"
                + ("" if big["metrics_available"] else ": UNAVAILABLE (the watched counts stand in)"),
            ]
        )
    )
    out.append(
        table(
            f"CPU while the deep queue drained ({big['drain_wall']:.1f} s wall; 1.00 = one core)",
            ("process", "cpu", "cores"),
            big["drain_cpu_rows"],
        )
    )
    top = list(big["apiserver_requests"].items())[:12]
    if top:
        out.append(table("API server requests during the deep queue (all clients)", ("verb resource", "n"), top))
    return "\n\n".join(out)


def phase_summary(args: argparse.Namespace, q: dict[str, Any]) -> str:
    """One line with a queue phase's main figures, logged as soon as the phase ends (the full run is long)."""
    runs = q["runs"]
    writes = q["status_writes_queueing"] + q["status_writes_draining"]
    events = q["events_queueing"] + q["events_draining"]
    return (
        f"{q['label']}: {runs} runs; last create -> all Pending with a position {secs(q['all_positioned_after'])}; "
        f"RSS {q['memory_queued'].get('VmRSS', float('nan')):.0f} MiB; quiet after {secs(q['quiet_after'])}; "
        f"first Job {secs(q['first_job_after'])}; "
        f"drain runs/s: first {min(args.small_runs, runs)} runs {q['rate_small']:.1f}, "
        f"first {min(args.window_runs, runs)} runs {q['rate_window']:.1f}, "
        f"first {args.window_seconds:g} s {q['rate_seconds']:.1f}; "
        f"operator CPU {per_run(q['queue_cpu'] * 1000, runs)} + {per_run(q['drain_cpu'] * 1000, runs)} ms/run; "
        f"status writes {per_run(writes, runs)}/run, Events {per_run(events, runs)}/run; "
        f"max unfinished Jobs {q['max_unfinished']}; finished {q['finished']}, failed {len(q['failed'])}"
    )


def checks(
    args: argparse.Namespace, small: dict[str, Any], big: dict[str, Any], hist: dict[str, Any]
) -> list[tuple[str, bool]]:
    found = []
    for q in (small, big):
        label, runs = q["label"], q["runs"]
        found += [
            (f"{label}: all {runs} runs Pending with a position", bool(q["all_positioned"])),
            (f"{label}: no Job while the limit was 0 ({q['jobs_before_open']} seen)", q["jobs_before_open"] == 0),
            (
                f"{label}: the operator was quiet before the limit was raised",
                args.open_at_once or q["quiet_after"] == q["quiet_after"],
            ),
            (f"{label}: all {runs} runs drained ({q['finished']} finished)", bool(q["drained"])),
            (f"{label}: every run Succeeded ({len(q['failed'])} did not)", not q["failed"]),
            (
                f"{label}: unfinished Jobs never above {args.limit} (max {q['max_unfinished']})",
                q["max_unfinished"] <= args.limit and q["over_limit_events"] == 0,
            ),
        ]
    found += [
        (f"history: all {hist['history']} runs Succeeded", bool(hist["all_succeeded"])),
        (f"history: no Job for a history run ({hist['history_jobs']} seen)", hist["history_jobs"] == 0),
    ]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=_env_int("SCALE_RUNS", 10_000), help="deep queue (SCALE_RUNS)")
    parser.add_argument(
        "--small-runs", type=int, default=_env_int("SCALE_SMALL_RUNS", 100), help="small queue (SCALE_SMALL_RUNS)"
    )
    parser.add_argument(
        "--history", type=int, default=_env_int("SCALE_HISTORY", 50_000), help="finished runs (SCALE_HISTORY)"
    )
    parser.add_argument("--limit", type=int, default=20, help="the limit the queue is opened to")
    parser.add_argument("--threads", type=int, default=16, help="threads creating FlowRuns")
    parser.add_argument("--batch", type=int, default=1000, help="history runs per create-then-finish batch")
    parser.add_argument("--window-runs", type=int, default=1000, help="drain rate over the first N runs")
    parser.add_argument("--window-seconds", type=float, default=60.0, help="drain rate over the first S seconds")
    parser.add_argument("--pending-timeout", type=float, default=900.0, help="seconds to wait for all Pending")
    parser.add_argument("--drain-timeout", type=float, default=3600.0, help="seconds to wait for the drain")
    parser.add_argument("--settle", type=float, default=3.0, help="pause between phases, seconds")
    parser.add_argument(
        "--open-at-once",
        action="store_true",
        help="raise the limit as soon as all runs show Pending, not once the operator is quiet",
    )
    parser.add_argument(
        "--quiet-timeout", type=float, default=300.0, help="longest wait for the operator to be quiet, seconds"
    )
    args = parser.parse_args(argv)
    if min(args.runs, args.small_runs, args.limit) < 1 or args.history < 0:
        parser.error("--runs, --small-runs and --limit must be at least 1, --history at least 0")
    install_signal_handlers()

    with BenchEnv("scale") as env:
        ns_small = env.namespace("small")
        ns_big = env.namespace("deep")
        operator = env.start_operator([ns_small, ns_big])
        small = queue_phase(env, ns_small, args.small_runs, args, "small")
        env.log(phase_summary(args, small))
        time.sleep(args.settle)
        big = queue_phase(env, ns_big, args.runs, args, "deep")
        env.log(phase_summary(args, big))
        time.sleep(args.settle)
        hist = history_phase(env, ns_big, args.runs + args.small_runs, args)
        tracebacks = operator.tracebacks()
        results = [*checks(args, small, big, hist), (f"operator tracebacks in its log: {tracebacks}", tracebacks == 0)]
        text = report(args, small, big, hist)
        text += "\n\n" + "\n".join(f"check: {what}: {'ok' if ok else 'FAIL'}" for what, ok in results)
        print(text, flush=True)
        path = env.write_results(
            {
                "benchmark": "scale",
                "machine": env.machine(),
                "args": vars(args),
                "small": {k: v for k, v in small.items() if k != "drain_cpu_rows"},
                "deep": {k: v for k, v in big.items() if k != "drain_cpu_rows"},
                "history": hist,
                "checks": {what: ok for what, ok in results},
                "printed": text,
            }
        )
        print(f"\nresults: {path}", flush=True)
        return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
