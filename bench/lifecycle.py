"""FlowRun lifecycle benchmark: how long from `create FlowRun` to its Job, and to `Succeeded`, compared with
bare Jobs created the same way in the same run (the floor: what the control plane itself costs).

    .venv/bin/python bench/lifecycle.py                # 200 runs, 8 creating threads, 20 serial runs
    .venv/bin/python bench/lifecycle.py --runs 20      # quick smoke run

Phases, on one embedded control plane (or the cluster in $KUBECONFIG with USE_EXISTING_CLUSTER=1):
1. serial (no load): FlowRuns created one at a time, each waited for until Succeeded; a bare Job after each.
2. bare Jobs (floor): N Jobs with the same pod template, created from the thread pool, in a namespace the
   operator does not watch; creation -> Job Complete.
3. FlowRuns: N FlowRuns created from the same thread pool in a namespace the operator watches;
   creation -> Job ADDED, creation -> status.phase Succeeded.

"Creation" is the client-side time the create call returned (creationTimestamp has 1 s precision); the call's
start is recorded too. Every other time is when an event arrived on this script's own watches.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
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
    engine_timing,
    flowrun,
    flowrun_writes_by_phase,
    install_signal_handlers,
    job_finished,
    job_lister,
    latency_rows,
    memory_of,
    ms,
    now,
    phase_tables,
    pod_lister,
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

GOAL_RATIO = 1.25
GOAL_CREATE_TO_JOB_P99 = 1.0


class Timeline:
    """Timestamps per run (FlowRun name, or bare Job name), filled in by the watch callbacks."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.job_added: dict[str, float] = {}
        self.job_done: dict[str, float] = {}
        self.job_outcome: dict[str, str] = {}
        self.phases: dict[str, dict[str, float]] = {}
        self.finished: dict[str, float] = {}  # FlowRun Succeeded/Failed, or bare Job Complete/Failed
        self.failed: set[str] = set()
        self.run_modified = 0
        self.pod_added: dict[str, float] = {}
        self.pod_done: dict[str, float] = {}

    def on_pod(self, kind: str, pod: dict[str, Any], t: float) -> None:
        labels = pod["metadata"].get("labels") or {}
        key = labels.get(RUN_LABEL) or labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        if not key or kind == "DELETED":
            return
        with self.cond:
            self.pod_added.setdefault(key, t)
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                self.pod_done.setdefault(key, t)

    def on_job(self, kind: str, job: dict[str, Any], t: float) -> None:
        meta = job["metadata"]
        key = (meta.get("labels") or {}).get(RUN_LABEL) or meta["name"]
        outcome = job_finished(job)
        with self.cond:
            if kind != "DELETED":
                self.job_added.setdefault(key, t)
            if outcome and key not in self.job_done:
                self.job_done[key] = t
                self.job_outcome[key] = outcome
                if RUN_LABEL not in (meta.get("labels") or {}):
                    self.finished.setdefault(key, t)
                    if outcome == "Failed":
                        self.failed.add(key)
            self.cond.notify_all()

    def on_run(self, kind: str, run: dict[str, Any], t: float) -> None:
        name = run["metadata"]["name"]
        phase = (run.get("status") or {}).get("phase")
        with self.cond:
            if kind == "MODIFIED":
                self.run_modified += 1
            if phase:
                self.phases.setdefault(name, {}).setdefault(phase, t)
                if phase in ("Succeeded", "Failed", "Cancelled") and name not in self.finished:
                    self.finished[name] = t
                    if phase != "Succeeded":
                        self.failed.add(name)
            self.cond.notify_all()


def watchers(env: BenchEnv, namespace: str, timeline: Timeline, flowruns: bool) -> list[Watcher]:
    found = [
        Watcher(job_lister(env.new_client(), namespace), timeline.on_job, f"jobs/{namespace}"),
        Watcher(pod_lister(env.new_client(), namespace), timeline.on_pod, f"pods/{namespace}"),
    ]
    if flowruns:
        found.append(Watcher(custom_lister(env.new_client(), namespace, "flowruns"), timeline.on_run, "flowruns"))
    return found


def creators(env: BenchEnv, namespace: str) -> tuple[Callable[[dict[str, Any]], Any], Callable[[dict[str, Any]], Any]]:
    custom = client.CustomObjectsApi(env.api)
    batch = client.BatchV1Api(env.api)

    def create_run(body: dict[str, Any]) -> Any:
        return release(
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "flowruns", body, _preload_content=False)
        )

    def create_job(body: dict[str, Any]) -> Any:
        return release(batch.create_namespaced_job(namespace, body, _preload_content=False))

    return create_run, create_job


# ------------------------------------------------------------------------------------------------ phases


def serial_phase(env: BenchEnv, namespace: str, count: int, seconds: float, timeout: float) -> dict[str, Any]:
    """One FlowRun at a time (then one bare Job at a time), each waited for until finished."""
    timeline = Timeline()
    create_run, create_job = creators(env, namespace)
    created: dict[str, float] = {}
    streams = watchers(env, namespace, timeline, flowruns=True)
    for w in streams:
        w.__enter__()
    try:

        def one(name: str, body: dict[str, Any], create: Callable[[dict[str, Any]], Any]) -> None:
            create(body)
            created[name] = now()
            wait_until(lambda: name in timeline.finished, timeline.cond, timeout, f"{name} to finish", streams)

        # warm-up (not measured): first connections, first pass of the operator over the namespace
        one("warmup", flowrun("warmup", seconds), create_run)
        one("warmup-job", bare_job("warmup-job", seconds), create_job)
        for i in range(count):
            one(f"r-{i:03d}", flowrun(f"r-{i:03d}", seconds), create_run)
            one(f"j-{i:03d}", bare_job(f"j-{i:03d}", seconds), create_job)
            time.sleep(0.05)
    finally:
        for w in streams:
            w.stop()
    runs = [f"r-{i:03d}" for i in range(count)]
    jobs = [f"j-{i:03d}" for i in range(count)]
    return {
        "create_to_job": [timeline.job_added[r] - created[r] for r in runs],
        "create_to_succeeded": [timeline.finished[r] - created[r] for r in runs],
        "complete_to_succeeded": [timeline.finished[r] - timeline.job_done[r] for r in runs],
        "bare_create_to_complete": [timeline.finished[j] - created[j] for j in jobs],
        "failed": sorted(timeline.failed),
    }


def load_phase(
    env: BenchEnv, namespace: str, kind: str, count: int, threads: int, seconds: float, timeout: float
) -> dict[str, Any]:
    """``count`` FlowRuns (kind "flowruns") or bare Jobs (kind "jobs") created at once from the pool."""
    timeline = Timeline()
    create_run, create_job = creators(env, namespace)
    is_runs = kind == "flowruns"
    names = [f"r-{i:05d}" for i in range(count)]
    bodies = [(n, flowrun(n, seconds) if is_runs else bare_job(n, seconds)) for n in names]
    streams = watchers(env, namespace, timeline, flowruns=is_runs)
    for w in streams:
        w.__enter__()
    meter = env.cpu_meter()
    assert env.api is not None
    requests_before = apiserver_requests(env.api)
    try:
        meter.start()
        env.log(f"{kind}: creating {count} in {namespace} from {threads} threads")
        times = create_all(bodies, create_run if is_runs else create_job, threads)
        created_all = now()
        env.log(f"{kind}: all created; waiting for them to finish")
        wait_until(lambda: len(timeline.finished) >= count, timeline.cond, timeout, f"{count} {kind}", streams)
        cpu = meter.stop()
    finally:
        for w in streams:
            w.stop()
    requests = request_delta(requests_before, apiserver_requests(env.api))
    start = min(s for s, _ in times.values())
    end = max(timeline.finished[n] for n in names)
    returned = {n: times[n][1] for n in names}
    per_run = {
        n: {
            "create_start": times[n][0] - start,
            "created": returned[n] - start,
            "job_added": timeline.job_added[n] - start,
            "pod_added": timeline.pod_added.get(n, float("nan")) - start,
            "pod_done": timeline.pod_done.get(n, float("nan")) - start,
            "job_complete": timeline.job_done.get(n, float("nan")) - start,
            "finished": timeline.finished[n] - start,
        }
        for n in names
    }
    return {
        "namespace": namespace,
        "count": count,
        "wall": end - start,
        "create_span": created_all - start,
        "create_call": [times[n][1] - times[n][0] for n in names],
        "create_to_job": [timeline.job_added[n] - returned[n] for n in names],
        "create_to_finished": [timeline.finished[n] - returned[n] for n in names],
        "job_to_complete": [timeline.job_done[n] - timeline.job_added[n] for n in names],
        "job_to_pod": [timeline.pod_added[n] - timeline.job_added[n] for n in names],
        "pod_to_pod_done": [timeline.pod_done[n] - timeline.pod_added[n] for n in names],
        "pod_done_to_complete": [timeline.job_done[n] - timeline.pod_done[n] for n in names],
        "complete_to_succeeded": ([timeline.finished[n] - timeline.job_done[n] for n in names] if is_runs else []),
        "flowrun_modified_events": timeline.run_modified,
        "failed": sorted(timeline.failed),
        "cpu_seconds": cpu,
        "cpu_wall": meter.wall,
        "cpu_rows": meter.rows(),
        "apiserver_requests": requests,
        "per_run": per_run,
    }


# ------------------------------------------------------------------------------------------------ report


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(args: argparse.Namespace, serial: dict[str, Any], bare: dict[str, Any], runs: dict[str, Any]) -> str:
    out = []
    out.append(
        table(
            f"Serial, no load: {args.serial} FlowRuns one at a time (then one bare Job each)",
            LATENCY_HEADER,
            latency_rows(
                [
                    ("FlowRun create -> Job created", serial["create_to_job"]),
                    ("FlowRun create -> Succeeded", serial["create_to_succeeded"]),
                    ("  Job Complete -> Succeeded", serial["complete_to_succeeded"]),
                    ("bare Job create -> Complete", serial["bare_create_to_complete"]),
                ]
            ),
        )
    )
    out.append(
        table(
            f"Load: {args.runs} created at once from {args.threads} threads (pods finish after {args.pod_seconds:g}s)",
            LATENCY_HEADER,
            latency_rows(
                [
                    ("bare Job: create call", bare["create_call"]),
                    ("bare Job: create -> Complete", bare["create_to_finished"]),
                    ("  Job created -> pod created", bare["job_to_pod"]),
                    ("  pod created -> pod Succeeded", bare["pod_to_pod_done"]),
                    ("  pod Succeeded -> Job Complete", bare["pod_done_to_complete"]),
                    ("FlowRun: create call", runs["create_call"]),
                    ("FlowRun: create -> Job created", runs["create_to_job"]),
                    ("FlowRun: Job created -> Complete", runs["job_to_complete"]),
                    ("  Job created -> pod created", runs["job_to_pod"]),
                    ("  pod created -> pod Succeeded", runs["pod_to_pod_done"]),
                    ("  pod Succeeded -> Job Complete", runs["pod_done_to_complete"]),
                    ("FlowRun: Job Complete -> Succeeded", runs["complete_to_succeeded"]),
                    ("FlowRun: create -> Succeeded", runs["create_to_finished"]),
                ]
            ),
        )
    )
    b, r = summary(bare["create_to_finished"]), summary(runs["create_to_finished"])
    ratios = [
        ("create -> finished p50", ms(r["p50"]), ms(b["p50"]), ratio(r["p50"], b["p50"])),
        ("create -> finished p99", ms(r["p99"]), ms(b["p99"]), ratio(r["p99"], b["p99"])),
        ("total wall time", secs(runs["wall"]), secs(bare["wall"]), ratio(runs["wall"], bare["wall"])),
    ]
    out.append(
        table(
            f"FlowRun vs bare Job (goal: ratio <= {GOAL_RATIO})",
            ("", "FlowRun", "bare Job", "ratio", "goal"),
            [[label, fr, bj, f"{x:.2f}", verdict(x <= GOAL_RATIO)] for label, fr, bj, x in ratios],
        )
    )
    p99 = summary(runs["create_to_job"])["p99"]
    out.append(
        "\n".join(
            [
                f"create -> Job p99 under load: {ms(p99)} (goal < 1 s: {verdict(p99 < GOAL_CREATE_TO_JOB_P99)})",
                f"create -> Job p99 serial:     {ms(summary(serial['create_to_job'])['p99'])}",
                f"creating all took: bare {secs(bare['create_span'])}, FlowRuns {secs(runs['create_span'])}",
                f"FlowRun MODIFIED events seen during the FlowRun phase: {runs['flowrun_modified_events']}",
                f"failed: bare {len(bare['failed'])}, FlowRuns {len(runs['failed'])}, serial {len(serial['failed'])}",
            ]
        )
    )
    out.extend(phase_tables(("bare Jobs", "FlowRuns"), (bare, runs), min_requests=20))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="FlowRuns (and bare Jobs) created at once")
    parser.add_argument("--threads", type=int, default=8, help="creating threads")
    parser.add_argument("--serial", type=int, default=20, help="FlowRuns created one at a time (no load)")
    parser.add_argument("--pod-seconds", type=float, default=0.0, help="how long each pod runs")
    parser.add_argument("--settle", type=float, default=3.0, help="pause between phases, seconds")
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    args = parser.parse_args(argv)
    install_signal_handlers()

    with BenchEnv("lifecycle") as env:
        ns_serial = env.namespace("serial")
        ns_runs = env.namespace("flowruns")
        ns_bare = env.namespace("jobs")
        operator = env.start_operator([ns_serial, ns_runs])
        env.log(f"serial phase: {args.serial} FlowRuns one at a time")
        serial = serial_phase(env, ns_serial, args.serial, args.pod_seconds, args.timeout)
        time.sleep(args.settle)
        bare = load_phase(env, ns_bare, "jobs", args.runs, args.threads, args.pod_seconds, args.timeout)
        time.sleep(args.settle)
        counters_before = operator.counters()
        runs = load_phase(env, ns_runs, "flowruns", args.runs, args.threads, args.pod_seconds, args.timeout)
        counters_after = operator.counters()
        runs["status_writes_by_phase"] = flowrun_writes_by_phase(counters_before, counters_after)
        runs["engine_timing"] = engine_timing(counters_before, counters_after)
        runs["watch_events"] = watch_line(counters_before, counters_after, args.runs)
        memory = memory_of(operator.pid)
        health = operator.health()
        tracebacks = operator.tracebacks()

        text = report(args, serial, bare, runs)
        extra = (
            f"operator: peak RSS {memory.get('VmHWM', float('nan')):.0f} MiB, "
            f"RSS now {memory.get('VmRSS', float('nan')):.0f} MiB, tracebacks in log: {tracebacks}\n"
            + writes_line(runs["status_writes_by_phase"], args.runs)
            + "\n"
            + runs["engine_timing"]
            + "\n"
            + runs["watch_events"]
            + "\n"
            + engine_counters(health)
        )
        print(text + "\n\n" + extra, flush=True)
        path = env.write_results(
            {
                "benchmark": "lifecycle",
                "machine": env.machine(),
                "args": vars(args),
                "serial": {k: summary(v) if isinstance(v, list) and k != "failed" else v for k, v in serial.items()},
                "bare_jobs": _summarised(bare),
                "flowruns": _summarised(runs),
                "ratios": {
                    "create_to_finished_p50": ratio(
                        summary(runs["create_to_finished"])["p50"], summary(bare["create_to_finished"])["p50"]
                    ),
                    "create_to_finished_p99": ratio(
                        summary(runs["create_to_finished"])["p99"], summary(bare["create_to_finished"])["p99"]
                    ),
                    "wall": ratio(runs["wall"], bare["wall"]),
                },
                "operator": {"memory_mib": memory, "health": health, "tracebacks": tracebacks},
                "raw": {"serial": serial, "bare_jobs": bare["per_run"], "flowruns": runs["per_run"]},
                "printed": text + "\n\n" + extra,
            }
        )
        print(f"\nresults: {path}", flush=True)
        failed = serial["failed"] or bare["failed"] or runs["failed"]
        return 1 if failed or tracebacks else 0


def _summarised(phase: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in phase.items():
        if key in ("per_run", "cpu_rows"):
            continue
        found[key] = summary(value) if isinstance(value, list) and key != "failed" else value
    return found


if __name__ == "__main__":
    sys.exit(main())
