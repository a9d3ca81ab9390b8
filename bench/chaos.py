"""Chaos benchmark: SIGKILL the operator again and again while a burst of FlowRuns drains through one limit.

    .venv/bin/python bench/chaos.py                      # 1,000 runs through a limit of 10, 50 kills
    .venv/bin/python bench/chaos.py --runs 100 --kills 3 # smoke size

One ConcurrencyLimit (selector team=chaos, limit LIMIT) and RUNS FlowRuns with short pods, all created up front
from a thread pool. Whenever another RUNS / (KILLS + 1) runs have finished, the operator is killed with SIGKILL
(after a random 0-500 ms, so kills land at different points of its work) and started again at once.

Independent watches (this script's own streams on Jobs and pods, not the operator's view) check, at every event:
- unfinished Jobs of the queue <= LIMIT, and pods holding a slot (Pending or Running, terminating ones
  included) <= LIMIT: no over-admission at any instant, across every kill
- at most one Job per (run, task, attempt) label set
and at the end that every run Succeeded. A kill is *survived* when all of that still holds after it.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from common import (
    GROUP,
    RUN_LABEL,
    VERSION,
    BenchEnv,
    Watcher,
    create_all,
    custom_lister,
    flowrun,
    install_signal_handlers,
    job_finished,
    job_lister,
    memory_of,
    now,
    pod_lister,
    secs,
    table,
    wait_until,
)

LIMIT_NAME = "chaos"
LABEL = {"team": "chaos"}
FINISHED = ("Succeeded", "Failed", "Cancelled")


class Observed:
    """What the independent watches saw: unfinished Jobs and slot-holding pods at every instant, Jobs per run
    attempt, and run phases."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cond = threading.Condition()
        self.unfinished_jobs: set[str] = set()
        self.holding_pods: set[str] = set()
        self.max_jobs = 0
        self.max_pods = 0
        self.over: list[str] = []
        self.jobs_per_attempt: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.phase: dict[str, str] = {}
        self.finished = 0

    def on_job(self, kind: str, job: dict[str, Any], t: float) -> None:
        meta = job["metadata"]
        labels = meta.get("labels") or {}
        if RUN_LABEL not in labels:
            return
        name = meta["name"]
        with self.cond:
            key = (labels[RUN_LABEL], labels.get("flowrun.io/task", ""), labels.get("flowrun.io/attempt", ""))
            self.jobs_per_attempt[key].add(name)
            if kind == "DELETED" or job_finished(job):
                self.unfinished_jobs.discard(name)
            else:
                self.unfinished_jobs.add(name)
            self.max_jobs = max(self.max_jobs, len(self.unfinished_jobs))
            if len(self.unfinished_jobs) > self.limit:
                self.over.append(f"{len(self.unfinished_jobs)} unfinished Jobs at t={t:.2f}")
            self.cond.notify_all()

    def on_pod(self, kind: str, pod: dict[str, Any], t: float) -> None:
        meta = pod["metadata"]
        if RUN_LABEL not in (meta.get("labels") or {}):
            return
        name = meta["name"]
        phase = (pod.get("status") or {}).get("phase")
        with self.cond:
            if kind == "DELETED" or phase in ("Succeeded", "Failed"):
                self.holding_pods.discard(name)
            else:
                self.holding_pods.add(name)
            self.max_pods = max(self.max_pods, len(self.holding_pods))
            if len(self.holding_pods) > self.limit:
                self.over.append(f"{len(self.holding_pods)} pods holding a slot at t={t:.2f}")
            self.cond.notify_all()

    def on_run(self, kind: str, run: dict[str, Any], t: float) -> None:
        name = run["metadata"]["name"]
        phase = str((run.get("status") or {}).get("phase") or "")
        with self.cond:
            before = self.phase.get(name, "")
            self.phase[name] = phase
            if phase in FINISHED and before not in FINISHED:
                self.finished += 1
            self.cond.notify_all()

    def healthy(self) -> bool:
        with self.cond:
            duplicates = any(len(jobs) > 1 for jobs in self.jobs_per_attempt.values())
            return not self.over and not duplicates

    def duplicates(self) -> dict[str, list[str]]:
        with self.cond:
            return {"/".join(k): sorted(v) for k, v in self.jobs_per_attempt.items() if len(v) > 1}


def keep_log(log: Path, into: Path) -> int:
    """Append a killed operator's log (the next start overwrites it) to ``into``; returns its tracebacks."""
    text = log.read_text(errors="replace") if log.exists() else ""
    with into.open("a") as out:
        out.write(text)
    return text.count("Traceback")


def create_limit(custom: client.CustomObjectsApi, namespace: str, limit: int) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ConcurrencyLimit",
        "metadata": {"name": LIMIT_NAME},
        "spec": {"selector": {"matchLabels": LABEL}, "limit": limit},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "concurrencylimits", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="FlowRuns in the burst")
    parser.add_argument("--kills", type=int, default=50, help="operator SIGKILLs, spread over the burst")
    parser.add_argument("--limit", type=int, default=10, help="slots of the ConcurrencyLimit")
    parser.add_argument("--pod-seconds", type=float, default=0.5, help="how long each pod runs")
    parser.add_argument("--threads", type=int, default=16, help="threads creating the FlowRuns")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole burst")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill delays")
    args = parser.parse_args(argv)
    if min(args.runs, args.limit) < 1 or args.kills < 0:
        parser.error("--runs and --limit must be at least 1, --kills at least 0")
    install_signal_handlers()
    rng = random.Random(args.seed)

    with BenchEnv("chaos") as env:
        assert env.api is not None
        namespace = env.namespace("chaos")
        operator = env.start_operator([namespace])
        custom = client.CustomObjectsApi(env.api)
        seen = Observed(args.limit)
        watches = [
            Watcher(job_lister(env.new_client(), namespace), seen.on_job, "jobs"),
            Watcher(pod_lister(env.new_client(), namespace), seen.on_pod, "pods"),
            Watcher(custom_lister(env.new_client(), namespace, "flowruns"), seen.on_run, "flowruns"),
        ]
        for watch in watches:
            watch.__enter__()
        try:
            create_limit(custom, namespace, args.limit)
            bodies = [(f"c-{i:05d}", flowrun(f"c-{i:05d}", args.pod_seconds, LABEL)) for i in range(args.runs)]

            def create(body: dict[str, Any]) -> Any:
                return custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "flowruns", body, _preload_content=False
                )

            env.log(f"{args.runs} FlowRuns through a limit of {args.limit}, {args.kills} operator SIGKILLs")
            start = now()
            deadline = start + args.timeout
            creating = threading.Thread(target=create_all, args=(bodies, create, args.threads), daemon=True)
            creating.start()
            survived = 0
            tracebacks = 0
            all_logs = env.tmp / "operator-all.log"
            restart_seconds: list[float] = []
            step = args.runs / (args.kills + 1)

            def finished_at_least(count: int) -> Callable[[], bool]:
                return lambda: seen.finished >= count

            def progress() -> str:
                return (
                    f"{seen.finished}/{args.runs} finished, {survived}/{args.kills} kills survived, "
                    f"{len(seen.unfinished_jobs)} unfinished Jobs"
                )

            for kill in range(args.kills):
                threshold = int(step * (kill + 1))
                wait_until(
                    finished_at_least(threshold),
                    seen.cond,
                    max(1.0, deadline - now()),
                    f"{threshold} runs finished before kill {kill + 1}",
                    watches,
                    progress=progress,
                )
                threading.Event().wait(rng.uniform(0.0, 0.5))
                assert operator.proc is not None
                operator.proc.send_signal(signal.SIGKILL)
                operator.proc.wait(timeout=10)
                tracebacks += keep_log(operator.log_path, all_logs)
                began = now()
                operator.start()
                restart_seconds.append(now() - began)
                if seen.healthy():
                    survived += 1
                else:
                    env.log(f"kill {kill + 1}: invariant broken: {seen.over[:3]} {seen.duplicates()}")
            creating.join(timeout=max(1.0, deadline - now()))
            done = True
            try:
                wait_until(
                    lambda: seen.finished >= args.runs,
                    seen.cond,
                    max(1.0, deadline - now()),
                    "all runs finished",
                    watches,
                    progress=progress,
                )
            except TimeoutError:
                done = False
            drain = now() - start
            with seen.cond:
                phases: dict[str, int] = defaultdict(int)
                for phase in seen.phase.values():
                    phases[phase or "-"] += 1
                not_succeeded = sum(n for p, n in phases.items() if p != "Succeeded")
            # The last kill only counts as survived if the burst then finished with every invariant intact.
            if not (done and seen.healthy()) and survived == args.kills and args.kills:
                survived -= 1
            memory = memory_of(operator.pid)
            tracebacks += operator.tracebacks()
        finally:
            for watch in watches:
                watch.stop()

        rows = [
            ("runs / limit / pod seconds", f"{args.runs} / {args.limit} / {args.pod_seconds:g}"),
            ("operator SIGKILLs", str(args.kills)),
            ("kills survived", f"{survived}/{args.kills}"),
            ("burst: first create -> all finished", secs(drain)),
            ("restart -> healthy, max", secs(max(restart_seconds)) if restart_seconds else "-"),
            ("max unfinished Jobs at any watched instant", str(seen.max_jobs)),
            ("max pods holding a slot at any watched instant", str(seen.max_pods)),
            ("run phases at the end", ", ".join(f"{p} {n}" for p, n in sorted(phases.items()))),
            ("operator RSS at the end", f"{memory.get('VmRSS', float('nan')):.0f} MiB"),
        ]
        checks = [
            (f"all {args.runs} runs finished", done),
            (f"every run Succeeded ({not_succeeded} did not)", not_succeeded == 0 and len(seen.phase) == args.runs),
            (f"unfinished Jobs never above {args.limit} (max {seen.max_jobs})", seen.max_jobs <= args.limit),
            (f"pods holding a slot never above {args.limit} (max {seen.max_pods})", seen.max_pods <= args.limit),
            (f"at most one Job per run attempt ({len(seen.duplicates())} with more)", not seen.duplicates()),
            (f"kills survived {survived}/{args.kills}", survived == args.kills),
            (f"operator tracebacks in its logs: {tracebacks}", tracebacks == 0),
        ]
        text = table("Operator SIGKILLs during a burst through a ConcurrencyLimit", ("", "value"), rows)
        text += "\n\n" + "\n".join(f"check: {what}: {'ok' if ok else 'FAIL'}" for what, ok in checks)
        print(text, flush=True)
        path = env.write_results(
            {
                "benchmark": "chaos",
                "machine": env.machine(),
                "args": vars(args),
                "survived": survived,
                "over_admission": seen.over[:50],
                "duplicates": seen.duplicates(),
                "restart_seconds": restart_seconds,
                "checks": {what: ok for what, ok in checks},
                "printed": text,
            }
        )
        print(f"\nresults: {path}", flush=True)
        return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
