"""FlowSchedule tick lateness: N interval schedules for a few minutes; how late is each run after its time?

    python bench/schedules.py [--schedules 50] [--interval 15] [--minutes 3] [--pod-seconds 1]

Each schedule creates a FlowRun every --interval seconds (counted from its creation, so the schedules' times
are spread over the interval); the runs go through the operator as usual (Jobs, simulated pods), and their
history is capped at 2 succeeded runs per schedule, so deletions are part of the load. Lateness of a run:

- watched: when an independent watch of the FlowRuns (this process) received the run, minus its scheduled time
  (millisecond resolution; includes the watch's delivery delay, so it is an upper bound of the creation delay);
- creationTimestamp: the API server's creation time minus the scheduled time (whole seconds: 0 s means created
  within the same second as its time).

The floor, measured in the same run: a minimal timer loop in this process that creates a ConfigMap at each of
the same times (one heap of times, creates from 8 threads, no operator), observed by a watch the same way. The
difference between the two is what the operator adds to what the machine and the API server cost anyway.

Also checked: every scheduled time in the window got exactly one run (no duplicate, none missing). Where the
time goes inside the operator comes from its Prometheus histograms (scheduled time -> its timer fired, and ->
its create call returned).
"""

from __future__ import annotations

import argparse
import heapq
import os
import socket
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psutil
from kubernetes import client

from common import (
    GROUP,
    VERSION,
    BenchEnv,
    Watcher,
    custom_lister,
    install_signal_handlers,
    percentile,
    pod_template,
    table,
)

SCHEDULE_LABEL = "flowrun.io/schedule"
TICK_ANNOTATION = "flowrun.io/scheduled-time"


def parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def schedule(name: str, interval: int, pod_seconds: float) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FlowSchedule",
        "metadata": {"name": name},
        "spec": {
            "interval": f"{interval}s",
            "successfulRunsHistoryLimit": 2,
            "flowRunTemplate": {"spec": {"flow": "bench", "template": pod_template(pod_seconds)}},
        },
    }


def histogram_shares(text: str, name: str) -> list[tuple[str, float]]:
    """(upper bound, share of observations at or under it) from a Prometheus histogram's cumulative buckets."""
    buckets: list[tuple[str, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((bound, float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0.0
    return [(bound, count / total if total else float("nan")) for bound, count in buckets]


def floor_loop(
    core: client.CoreV1Api, namespace: str, anchors: dict[str, float], interval: int, end: float
) -> threading.Thread:
    """A minimal scheduler: sleep until the next time, create a ConfigMap named by it, repeat."""

    def run() -> None:
        heap = [(anchor + interval, name) for name, anchor in anchors.items()]
        heapq.heapify(heap)
        with ThreadPoolExecutor(max_workers=8) as pool:
            while heap:
                tick, name = heapq.heappop(heap)
                if tick > end:
                    continue
                time.sleep(max(0.0, tick - time.time()))
                body = {
                    "metadata": {
                        "name": f"floor-{name}-{int(tick)}",
                        "labels": {"bench": "floor", SCHEDULE_LABEL: name},
                        "annotations": {TICK_ANNOTATION: datetime.fromtimestamp(tick, UTC).isoformat()},
                    }
                }
                pool.submit(core.create_namespaced_config_map, namespace, body, _preload_content=False)
                heapq.heappush(heap, (tick + interval, name))

    thread = threading.Thread(target=run, name="floor", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--interval", type=int, default=15, help="seconds between a schedule's runs")
    parser.add_argument("--minutes", type=float, default=3.0, help="how long the schedules run")
    parser.add_argument("--pod-seconds", type=float, default=1.0, help="how long each run's pod runs")
    args = parser.parse_args(argv)
    install_signal_handlers()

    # name -> (schedule, tick, creationTimestamp, received), for the runs and for the floor's ConfigMaps
    seen: dict[str, tuple[str, float, float, float]] = {}
    floor_seen: dict[str, tuple[str, float, float, float]] = {}
    lock = threading.Lock()

    def recorder(into: dict[str, tuple[str, float, float, float]]) -> Any:
        def on_event(kind: str, obj: dict[str, Any], _: float) -> None:
            received = time.time()
            meta = obj["metadata"]
            tick = (meta.get("annotations") or {}).get(TICK_ANNOTATION)
            schedule_name = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
            if kind != "ADDED" or not tick or not schedule_name:
                return
            entry = (schedule_name, parse(tick), parse(meta["creationTimestamp"]), received)
            with lock:
                into.setdefault(meta["name"], entry)

        return on_event

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        metrics_port = int(sock.getsockname()[1])
    os.environ["METRICS_PORT"] = str(metrics_port)  # the operator subprocess inherits it

    with BenchEnv("schedules") as env:
        namespace = env.namespace("schedules")
        operator = env.start_operator([namespace])
        assert env.api is not None
        custom = client.CustomObjectsApi(env.api)
        process = psutil.Process(operator.pid)
        core = client.CoreV1Api(env.api)

        def configmaps(**kwargs: Any) -> Any:
            return core.list_namespaced_config_map(namespace, label_selector="bench=floor", **kwargs)

        with (
            Watcher(custom_lister(env.api, namespace, "flowruns"), recorder(seen), "flowruns") as watcher,
            Watcher(configmaps, recorder(floor_seen), "configmaps") as floor_watcher,
        ):
            cpu_before = sum(process.cpu_times()[:2])
            anchors: dict[str, float] = {}
            env.log(f"creating {args.schedules} schedules, one run every {args.interval}s each")
            for i in range(args.schedules):
                name = f"s{i:03d}"
                created = custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "flowschedules", schedule(name, args.interval, args.pod_seconds)
                )
                anchors[name] = parse(created["metadata"]["creationTimestamp"])
                # Spread the creations over one interval, as schedules made at different times would be.
                time.sleep(args.interval / args.schedules)
            started = time.time()
            end = started + args.minutes * 60
            floor = floor_loop(core, namespace, anchors, args.interval, end)
            env.log(f"running for {args.minutes:g} minutes")
            time.sleep(max(0.0, end - time.time()))
            for name in anchors:
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, "flowschedules", name, {"spec": {"suspend": True}}
                )
            time.sleep(3)  # the runs of the last times arrive through the watch
            cpu_seconds = sum(process.cpu_times()[:2]) - cpu_before
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
                metrics_text = response.read().decode()
            watcher.check()
            floor_watcher.check()
            floor.join(timeout=10)
        tracebacks = operator.tracebacks()

    with lock:
        runs = list(seen.values())
    # Every time strictly inside the window (first one after creation, up to `end`) must have exactly one run.
    expected: set[tuple[str, float]] = set()
    for name, anchor in anchors.items():
        tick = anchor + args.interval
        while tick <= end:
            expected.add((name, tick))
            tick += args.interval
    got: dict[tuple[str, float], int] = {}
    for schedule_name, tick, _, _ in runs:
        got[(schedule_name, tick)] = got.get((schedule_name, tick), 0) + 1
    duplicates = sum(count - 1 for count in got.values() if count > 1)
    missing = len(expected - set(got))
    in_window = [r for r in runs if (r[0], r[1]) in expected]
    watched = [received - tick for _, tick, _, received in in_window]
    stamped = [created - tick for _, tick, created, _ in in_window]
    with lock:
        floor_items = [f for f in floor_seen.values() if (f[0], f[1]) in expected]
    floor_watched = [received - tick for _, tick, _, received in floor_items]
    floor_stamped = [created - tick for _, tick, created, _ in floor_items]

    def row(label: str, values: list[float], unit: str) -> list[str]:
        fmt = (lambda v: f"{v * 1000:.0f} ms") if unit == "ms" else (lambda v: f"{v:.0f} s")
        return [
            label,
            str(len(values)),
            fmt(percentile(values, 50)),
            fmt(percentile(values, 90)),
            fmt(percentile(values, 99)),
            fmt(max(values)) if values else "-",
        ]

    text = table(
        f"FlowSchedule tick lateness: {args.schedules} schedules every {args.interval}s for {args.minutes:g} min, "
        f"pods {args.pod_seconds:g}s, {psutil.cpu_count()} CPUs",
        ("scheduled time ->", "n", "p50", "p90", "p99", "max"),
        [
            row("FlowRun seen by a watch", watched, "ms"),
            row("FlowRun creationTimestamp", stamped, "s"),
            row("floor: ConfigMap seen", floor_watched, "ms"),
            row("floor: creationTimestamp", floor_stamped, "s"),
        ],
    )
    text += (
        f"\ntimes in the window: {len(expected)}, runs for them: {len(in_window)}, missing: {missing}, "
        f"duplicates: {duplicates}\noperator CPU: {cpu_seconds:.1f} s over {args.minutes:g} min "
        f"({cpu_seconds / max(1, len(in_window)) * 1000:.0f} ms per run, admission included), "
        f"tracebacks in its log: {tracebacks}"
    )
    bounds = ("0.01", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5")
    shares = {
        label: dict(histogram_shares(metrics_text, name))
        for label, name in (
            ("timer fired", "flowrun_schedule_timer_lateness_seconds"),
            ("create returned", "flowrun_schedule_create_lateness_seconds"),
        )
    }
    text += "\n\n" + table(
        "Inside the operator (its histograms): share of scheduled times ...",
        ("scheduled time ->", *(f"<= {float(b) * 1000:.0f} ms" for b in bounds)),
        [[label, *(f"{found.get(b, float('nan')) * 100:.1f}%" for b in bounds)] for label, found in shares.items()],
    )
    print(text, flush=True)
    return 1 if missing or duplicates or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
