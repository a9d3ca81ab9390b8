"""ConcurrencyLimit benchmark: drain a queue of N FlowRuns through one limit, compared with the floor, a minimal
loop that feeds the same number of bare Jobs through the same number of slots, in the same run.

    .venv/bin/python bench/limits.py                      # 1,000 runs, limit 10, pods of 1 s
    .venv/bin/python bench/limits.py --runs 20            # quick smoke run

Phases, on one embedded control plane (or the cluster in $KUBECONFIG with USE_EXISTING_CLUSTER=1):
1. floor: in a namespace the operator does not watch, a loop with one watch on Jobs creates the next bare Job
   whenever fewer than LIMIT of its Jobs are unfinished.
2. operator: one ConcurrencyLimit (selector team=bench, limit LIMIT), then N FlowRuns labelled team=bench all
   created up front from a thread pool; measured until every run is Succeeded.

Measured from this script's own watches (the "independent watcher"; not the operator's view):
- drain time: first create call -> last run finished (FlowRun Succeeded / bare Job Complete)
- throughput: runs / drain time
- slot utilisation: busy slot-seconds / (LIMIT x drain time); a Job is busy from its ADDED event to its
  Complete condition
- slot-free -> next Job: the k-th Job completion frees the slot the (LIMIT+k)-th Job takes (FIFO pairing of
  the sorted completion and creation times); a negative value would mean a Job started before a slot freed
- the maximum number of unfinished Jobs at any instant (must never exceed LIMIT)
- the operator's peak RSS (VmHWM) and CPU, the API server's requests per phase
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from kubernetes import client

from common import (
    GROUP,
    LATENCY_HEADER,
    RUN_LABEL,
    VERSION,
    BenchEnv,
    Watcher,
    apiserver_requests,
    bare_job,
    create_all,
    custom_lister,
    engine_counters,
    flowrun,
    flowrun_writes_by_phase,
    install_signal_handlers,
    job_finished,
    job_lister,
    latency_rows,
    memory_of,
    now,
    phase_tables,
    ratio,
    request_delta,
    secs,
    summary,
    table,
    wait_until,
    watch_line,
    writes_line,
)
from flowrun_operator.kube.client import release

GOAL_UTILISATION = 0.8
GOAL_SLOT_TO_JOB_P99 = 1.0
LABEL = {"team": "bench"}
LIMIT_NAME = "bench"


class Slots:
    """Job and run timestamps from the watches, and the number of unfinished Jobs at every event."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cond = threading.Condition()
        self.added: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.failed: set[str] = set()
        self.unfinished: set[str] = set()
        self.max_unfinished = 0
        self.over_limit_events = 0
        self.succeeded: dict[str, float] = {}
        self.run_modified = 0
        self.run_phases: dict[str, str] = {}
        self.run_of_job: dict[str, str] = {}

    def on_job(self, kind: str, job: dict[str, Any], t: float) -> None:
        name = job["metadata"]["name"]
        outcome = job_finished(job)
        run = (job["metadata"].get("labels") or {}).get(RUN_LABEL)
        with self.cond:
            if run:
                self.run_of_job[name] = run
            if kind != "DELETED":
                self.added.setdefault(name, t)
            if outcome and name not in self.done:
                self.done[name] = t
                if outcome == "Failed":
                    self.failed.add(name)
            if kind == "DELETED" or name in self.done:
                self.unfinished.discard(name)
            else:
                self.unfinished.add(name)
            self.max_unfinished = max(self.max_unfinished, len(self.unfinished))
            if len(self.unfinished) > self.limit:
                self.over_limit_events += 1
            self.cond.notify_all()

    def on_run(self, kind: str, run: dict[str, Any], t: float) -> None:
        name = run["metadata"]["name"]
        phase = (run.get("status") or {}).get("phase") or ""
        with self.cond:
            if kind == "MODIFIED":
                self.run_modified += 1
            self.run_phases[name] = phase
            if phase in ("Succeeded", "Failed", "Cancelled") and name not in self.succeeded:
                self.succeeded[name] = t
                if phase != "Succeeded":
                    self.failed.add(name)
            self.cond.notify_all()

    def metrics(self, start: float, end: float, count: int) -> dict[str, Any]:
        drain = end - start
        busy = sum(self.done[j] - self.added[j] for j in self.done if j in self.added)
        completions = sorted(self.done.values())
        creations = sorted(self.added.values())
        slot_to_job = [creations[self.limit + k] - completions[k] for k in range(max(0, len(creations) - self.limit))]
        return {
            "count": count,
            "drain": drain,
            "throughput": count / drain if drain > 0 else float("nan"),
            "busy_slot_seconds": busy,
            "utilisation": busy / (self.limit * drain) if drain > 0 else float("nan"),
            "slot_to_job": slot_to_job,
            "job_busy": [self.done[j] - self.added[j] for j in self.done if j in self.added],
            "max_unfinished": self.max_unfinished,
            "over_limit_events": self.over_limit_events,
            "failed": sorted(self.failed),
        }


def job_watcher(env: BenchEnv, namespace: str, slots: Slots) -> Watcher:
    return Watcher(job_lister(env.new_client(), namespace), slots.on_job, f"jobs/{namespace}")


# ------------------------------------------------------------------------------------------------ phases


def floor_phase(env: BenchEnv, namespace: str, args: argparse.Namespace) -> dict[str, Any]:
    """The minimal feeder: create the next Job whenever fewer than LIMIT of ours are unfinished."""
    slots = Slots(args.limit)
    batch = client.BatchV1Api(env.api)
    meter = env.cpu_meter()
    assert env.api is not None
    requests_before = apiserver_requests(env.api)
    env.log(f"floor: {args.runs} bare Jobs through {args.limit} slots in {namespace}")
    with job_watcher(env, namespace, slots) as watch:
        meter.start()
        start = now()
        deadline = start + args.timeout
        for i in range(args.runs):
            with slots.cond:
                while i - len(slots.done) >= args.limit:
                    watch.check()
                    if now() > deadline:
                        raise TimeoutError("floor: timed out")
                    slots.cond.wait(timeout=1.0)
            name = f"j-{i:05d}"
            release(
                batch.create_namespaced_job(namespace, bare_job(name, args.pod_seconds, LABEL), _preload_content=False)
            )
        wait_until(
            lambda: len(slots.done) >= args.runs,
            slots.cond,
            max(1.0, deadline - now()),
            "floor Jobs to complete",
            [watch],
            progress=lambda: f"floor: {len(slots.done)}/{args.runs} Jobs complete",
        )
        cpu = meter.stop()
    end = max(slots.done.values())
    found = slots.metrics(start, end, args.runs)
    found.update(
        cpu_seconds=cpu,
        cpu_wall=meter.wall,
        cpu_rows=meter.rows(),
        apiserver_requests=request_delta(requests_before, apiserver_requests(env.api)),
    )
    return found


def create_limit(env: BenchEnv, namespace: str, limit: int, timeout: float = 60) -> None:
    custom = client.CustomObjectsApi(env.api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ConcurrencyLimit",
        "metadata": {"name": LIMIT_NAME},
        "spec": {"selector": {"matchLabels": LABEL}, "limit": limit},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "concurrencylimits", body)
    deadline = now() + timeout
    while True:  # set-up only: wait until the operator has seen the limit (it writes its Ready condition)
        found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "concurrencylimits", LIMIT_NAME)
        conditions = (found.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" for c in conditions):
            return
        if now() > deadline:
            raise TimeoutError("the operator did not write the ConcurrencyLimit's status")
        time.sleep(0.1)


def operator_phase(env: BenchEnv, namespace: str, args: argparse.Namespace) -> dict[str, Any]:
    slots = Slots(args.limit)
    custom = client.CustomObjectsApi(env.api)
    create_limit(env, namespace, args.limit)
    names = [f"r-{i:05d}" for i in range(args.runs)]
    bodies = [(n, flowrun(n, args.pod_seconds, LABEL)) for n in names]
    run_watch = Watcher(custom_lister(env.new_client(), namespace, "flowruns"), slots.on_run, "flowruns")
    meter = env.cpu_meter()
    assert env.api is not None
    requests_before = apiserver_requests(env.api)

    def create(body: dict[str, Any]) -> Any:
        return release(
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "flowruns", body, _preload_content=False)
        )

    def progress() -> str:
        pending = sum(1 for p in slots.run_phases.values() if p == "Pending")
        return (
            f"operator: {len(slots.succeeded)}/{args.runs} Succeeded, {len(slots.added)} Jobs created, "
            f"{len(slots.unfinished)} unfinished, {pending} Pending, {slots.run_modified} FlowRun updates"
        )

    env.log(f"operator: {args.runs} FlowRuns through a ConcurrencyLimit of {args.limit} in {namespace}")
    with job_watcher(env, namespace, slots) as job_watch, run_watch:
        meter.start()
        times = create_all(bodies, create, args.threads)
        created_all = now()
        env.log(f"operator: all {args.runs} FlowRuns created; {len(slots.succeeded)} Succeeded so far")
        start = min(s for s, _ in times.values())
        wait_until(
            lambda: len(slots.succeeded) >= args.runs,
            slots.cond,
            max(1.0, start + args.timeout - now()),
            "all FlowRuns to finish",
            [job_watch, run_watch],
            progress=progress,
        )
        cpu = meter.stop()
    end = max(slots.succeeded.values())
    found = slots.metrics(start, end, args.runs)
    found.update(
        create_span=created_all - start,
        create_call=[e - s for s, e in times.values()],
        job_complete_to_succeeded=[
            slots.succeeded[run] - t for job, t in slots.done.items() if (run := slots.run_of_job.get(job))
        ],
        flowrun_modified_events=slots.run_modified,
        cpu_seconds=cpu,
        cpu_wall=meter.wall,
        cpu_rows=meter.rows(),
        apiserver_requests=request_delta(requests_before, apiserver_requests(env.api)),
    )
    return found


# ------------------------------------------------------------------------------------------------ report


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(args: argparse.Namespace, floor: dict[str, Any], op: dict[str, Any], memory: dict[str, float]) -> str:
    out = []

    def limit_check(phase: dict[str, Any]) -> str:
        peak = phase["max_unfinished"]
        if peak > args.limit:
            return f"{peak} FAIL (exceeds the limit; {phase['over_limit_events']} events over it)"
        return f"{peak}" + ("" if peak == args.limit else " (limit never reached)")

    rows = [
        ("drain time (first create -> last finished)", secs(op["drain"]), secs(floor["drain"])),
        ("throughput (runs/s)", f"{op['throughput']:.2f}", f"{floor['throughput']:.2f}"),
        ("busy slot-seconds", f"{op['busy_slot_seconds']:.0f}", f"{floor['busy_slot_seconds']:.0f}"),
        ("slot utilisation", f"{op['utilisation']:.2f}", f"{floor['utilisation']:.2f}"),
        ("max unfinished Jobs seen", limit_check(op), limit_check(floor)),
        ("failed", str(len(op["failed"])), str(len(floor["failed"]))),
    ]
    out.append(
        table(
            f"{args.runs} runs through a limit of {args.limit}, pods of {args.pod_seconds:g}s "
            f"(pod time alone would drain in {args.runs * args.pod_seconds / max(args.limit, 1):.0f} s)",
            ("", "operator", "floor"),
            rows,
        )
    )
    out.append(
        table(
            "Latencies",
            LATENCY_HEADER,
            latency_rows(
                [
                    ("operator: slot free -> next Job", op["slot_to_job"]),
                    ("floor: slot free -> next Job", floor["slot_to_job"]),
                    ("operator: Job busy (ADDED -> Complete)", op["job_busy"]),
                    ("floor: Job busy (ADDED -> Complete)", floor["job_busy"]),
                    ("operator: Job Complete -> run Succeeded", op["job_complete_to_succeeded"]),
                    ("operator: FlowRun create call", op["create_call"]),
                ]
            ),
        )
    )
    p99 = summary(op["slot_to_job"])["p99"]
    out.append(
        "\n".join(
            [
                f"drain time operator/floor: {ratio(op['drain'], floor['drain']):.2f}",
                f"goal utilisation >= {GOAL_UTILISATION}: {op['utilisation']:.2f} "
                f"{verdict(op['utilisation'] >= GOAL_UTILISATION)}",
                f"goal slot free -> next Job p99 < {GOAL_SLOT_TO_JOB_P99:g} s: {p99 * 1000:.0f} ms "
                f"{verdict(p99 < GOAL_SLOT_TO_JOB_P99)}",
                f"limit never exceeded: {'ok' if op['max_unfinished'] <= args.limit else 'FAIL'}",
                f"creating all {args.runs} FlowRuns took {secs(op['create_span'])}",
                f"FlowRun MODIFIED events seen: {op['flowrun_modified_events']} "
                f"({op['flowrun_modified_events'] / args.runs:.1f} per run)",
                f"operator peak RSS (VmHWM): {memory.get('VmHWM', float('nan')):.0f} MiB "
                f"(RSS at the end {memory.get('VmRSS', float('nan')):.0f} MiB)",
            ]
        )
    )
    out.extend(phase_tables(("floor", "operator"), (floor, op), min_requests=50))
    return "\n\n".join(out)


def _summarised(phase: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in phase.items():
        if key == "cpu_rows":
            continue
        found[key] = summary(value) if isinstance(value, list) and key != "failed" else value
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="FlowRuns (and bare Jobs) to drain")
    parser.add_argument("--limit", type=int, default=10, help="slots of the ConcurrencyLimit (and of the floor)")
    parser.add_argument("--pod-seconds", type=float, default=1.0, help="how long each pod runs")
    parser.add_argument("--threads", type=int, default=8, help="threads creating the FlowRuns")
    parser.add_argument("--settle", type=float, default=3.0, help="pause between phases, seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    args = parser.parse_args(argv)
    if args.limit < 1 or args.runs < 1:
        parser.error("--runs and --limit must be at least 1")
    install_signal_handlers()

    with BenchEnv("limits") as env:
        ns_floor = env.namespace("floor")
        ns_op = env.namespace("limited")
        operator = env.start_operator([ns_op])
        floor = floor_phase(env, ns_floor, args)
        time.sleep(args.settle)
        counters_before = operator.counters()
        op = operator_phase(env, ns_op, args)
        counters_after = operator.counters()
        op["status_writes_by_phase"] = flowrun_writes_by_phase(counters_before, counters_after)
        op["watch_events"] = watch_line(counters_before, counters_after, args.runs)
        memory = memory_of(operator.pid)
        health = operator.health()
        tracebacks = operator.tracebacks()
        text = (
            report(args, floor, op, memory)
            + f"\n\n{writes_line(op['status_writes_by_phase'], args.runs)}"
            + f"\n{op['watch_events']}"
            + f"\noperator tracebacks in log: {tracebacks}\n"
            + engine_counters(health)
        )
        print(text, flush=True)
        path = env.write_results(
            {
                "benchmark": "limits",
                "machine": env.machine(),
                "args": vars(args),
                "floor": _summarised(floor),
                "operator": _summarised(op),
                "ratio_drain": ratio(op["drain"], floor["drain"]),
                "operator_process": {"memory_mib": memory, "health": health, "tracebacks": tracebacks},
                "raw": {
                    "floor": {k: floor[k] for k in ("slot_to_job", "job_busy")},
                    "operator": {k: op[k] for k in ("slot_to_job", "job_busy", "job_complete_to_succeeded")},
                },
                "printed": text,
            }
        )
        print(f"\nresults: {path}", flush=True)
        over = op["max_unfinished"] > args.limit or floor["max_unfinished"] > args.limit
        return 1 if over or op["failed"] or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
