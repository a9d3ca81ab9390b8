"""Inspection benchmarks: the dashboard and the client's wait.

    .venv/bin/python bench/inspection.py                       # ~2 min on 2 cores
    .venv/bin/python bench/inspection.py --runs 200 --waits 20 # a smoke run
    .venv/bin/python bench/inspection.py --screenshots docs/images   # the docs' screenshots (operator running)

Measures, on a fresh embedded control plane (or USE_EXISTING_CLUSTER=1):

1. **Time to first render of the runs page** with ``--runs`` FlowRuns (default 1,000) in one namespace: a real
   headless Chromium (Debian's) opens ``/runs?namespace=...`` of a ``python -m flowrun_operator.ui`` process;
   the time is the page's own ``performance.mark("runs-rendered")`` (set once the first snapshot's rows are in
   the DOM) relative to the navigation start: request, HTML, script, the API server's list, JSON, DOM. The
   first load is reported apart (a cold browser and server); then ``--loads`` more.
2. **Memory of the dashboard process**: VmRSS and VmHWM (peak) after the loads, with one page open on a live
   stream.
3. **Client wait latency**: for each of ``--waits`` runs, a thread calls ``FlowRuns.wait(name,
   until="Succeeded")``; once it waits, the benchmark writes ``status.phase: Succeeded`` through the status
   subresource (as the operator does) and measures from just before that write is sent until ``wait`` returns.
   No operator runs, so the write is the only change. The write's own round trip is reported too.

The runs of (1) carry statuses written the same way (a mix of phases and messages, places in line), so the table has
what a real namespace has. Nothing else runs on the cluster meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

from common import (
    GROUP,
    LATENCY_HEADER,
    REPO,
    VERSION,
    BenchEnv,
    create_all,
    install_signal_handlers,
    latency_rows,
    memory_of,
    ms,
    now,
    pod_template,
    summary,
    table,
)
from flowrun_operator.client import Connection, FlowRuns

sys.path.insert(0, str(REPO / "tests"))
from support.browser import chromium

PHASES = ["Succeeded", "Succeeded", "Succeeded", "Failed", "Running", "Pending"]


def ui_process(env: BenchEnv) -> tuple[Any, str]:
    import re
    import subprocess

    argv = [sys.executable, "-m", "flowrun_operator.ui", "--port", "0", "--kubeconfig", str(env.kubeconfig)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
            return proc, match.group(1)
    raise RuntimeError(f"the dashboard exited with {proc.wait()}")


def status_for(index: int) -> dict[str, Any]:
    phase = PHASES[index % len(PHASES)]
    base: dict[str, Any] = {"phase": phase, "attempt": 1, "observedGeneration": 1}
    stamp = "2026-11-28T03:00:00Z"
    if phase == "Pending":
        base["attempt"] = None
        base["message"] = f"waiting for gpu: 4/4 in use, {index} in line"
        base["waitingFor"] = [{"name": "gpu", "position": index + 1, "inUse": 4, "limit": 4}]
    else:
        base.update(startTime=stamp, jobName=f"run-{index:05d}-1", message=f"Job run-{index:05d}-1 {phase.lower()}")
    if phase in ("Succeeded", "Failed"):
        base.update(completionTime="2026-11-28T03:00:07Z", duration="7s")
    return {k: v for k, v in base.items() if v is not None}


def fill_namespace(env: BenchEnv, namespace: str, count: int) -> None:
    assert env.api is not None
    custom = client.CustomObjectsApi(env.api)
    items = []
    for i in range(count):
        name = f"run-{i:05d}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "FlowRun",
            "metadata": {"name": name, "labels": {"team": ["ml", "data", "web"][i % 3]}},
            "spec": {"flow": ["etl", "train", "report"][i % 3], "parameters": {"day": i}, "template": pod_template(0)},
        }
        items.append((name, body))
    started = now()
    create_all(
        items,
        lambda body: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "flowruns", body, _preload_content=False
        ),
        threads=8,
    )
    env.log(f"created {count} runs in {now() - started:.1f}s")

    def patch(index: int) -> None:
        custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "flowruns",
            f"run-{index:05d}",
            {"status": status_for(index)},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )

    started = now()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(patch, range(count)))
    env.log(f"wrote {count} statuses in {now() - started:.1f}s")


def measure_render(url: str, namespace: str, count: int, loads: int) -> tuple[float, list[float]]:
    driver = chromium()
    times: list[float] = []
    try:
        for _ in range(loads + 1):
            driver.get(f"{url}runs?namespace={namespace}")
            deadline = now() + 120
            while True:
                mark = driver.execute_script(
                    "const m = performance.getEntriesByName('runs-rendered'); return m.length ? m[0].startTime : null"
                )
                if mark is not None:
                    break
                if now() > deadline:
                    raise TimeoutError("the runs page did not render")
                time.sleep(0.05)
            rows = driver.execute_script("return document.querySelectorAll('#runs tr').length")
            if rows != count:
                raise RuntimeError(f"the page shows {rows} rows, expected {count}")
            times.append(float(mark) / 1000)
        return times[0], times[1:]
    finally:
        driver.quit()


def measure_waits(env: BenchEnv, namespace: str, count: int) -> tuple[list[float], list[float]]:
    assert env.kubeconfig is not None and env.api is not None
    custom = client.CustomObjectsApi(env.api)
    connection = Connection(str(env.kubeconfig))
    runs = FlowRuns(namespace, connection)
    latencies: list[float] = []
    writes: list[float] = []
    for i in range(count):
        name = f"wait-{i:04d}"
        runs.create(name, {"flow": "wait", "template": pod_template(0)})
        returned: list[float] = []
        errors: list[BaseException] = []

        def waiter(run: str = name, into: list[float] = returned, failed: list[BaseException] = errors) -> None:
            try:
                runs.wait(run, until="Succeeded", timeout=60)
                into.append(now())
            except BaseException as error:
                failed.append(error)

        thread = threading.Thread(target=waiter, daemon=True)
        thread.start()
        time.sleep(0.3)  # the wait has listed and opened its watch
        sent = now()
        custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "flowruns",
            name,
            {"status": {"phase": "Succeeded"}},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
        acknowledged = now()
        thread.join(timeout=60)
        if errors or not returned:
            raise RuntimeError(f"wait for {name} failed: {errors}")
        latencies.append(returned[0] - sent)
        writes.append(acknowledged - sent)
    connection.close()
    return latencies, writes


def screenshots(env: BenchEnv, outdir: Path) -> None:
    """The three pages with a realistic namespace (operator running): runs, a DAG run, a limit."""
    assert env.kubeconfig is not None
    from support.flowruns import flowrun as fr
    from support.flowruns import selector_limit, tag_limit, task
    from support.kube import Kubectl

    namespace = env.namespace("demo")
    env.start_operator([namespace])
    kubectl = Kubectl(env.kubeconfig)
    connection = Connection(str(env.kubeconfig))
    runs = FlowRuns(namespace, connection)
    kubectl.apply(selector_limit("gpu", {"team": "ml"}, 2), namespace)
    kubectl.apply(tag_limit("db", "db", 1), namespace)
    etl = [
        task("extract", duration=1.0, tags=["db"]),
        task("clean", duration=1.5, dependsOn=["extract"]),
        task("enrich", duration=1.0, exit_code=1, retries=1, dependsOn=["extract"]),
        task("load", duration=0.5, dependsOn=["clean", "enrich"], tags=["db"]),
    ]
    kubectl.apply(fr("etl-nightly", flow="etl", tasks=etl, parameters={"day": "2026-11-27", "full": True}), namespace)
    ok = [
        task("extract", duration=1.0),
        task("clean", duration=1.0, dependsOn=["extract"]),
        task("enrich", duration=1.5, dependsOn=["extract"]),
        task("load", duration=0.8, dependsOn=["clean", "enrich"]),
    ]
    kubectl.apply(fr("etl-hourly", flow="etl", tasks=ok, parameters={"hour": 3}), namespace)
    kubectl.apply(fr("report-daily", flow="report", duration=2), namespace)
    for name, priority in (("train-a", 0), ("train-b", 0), ("train-c", 0), ("train-d", 5), ("train-e", 0)):
        kubectl.apply(fr(name, flow="train", duration=600, labels={"team": "ml"}, priority=priority), namespace)
        time.sleep(1.1)
    runs.wait("etl-nightly", timeout=120)
    runs.wait("etl-hourly", timeout=120)
    time.sleep(6)  # place-in-line refreshes
    proc, url = ui_process(env)
    driver = chromium(1400, 900)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        for page, path, ready in (
            ("runs", f"runs?namespace={namespace}", "runs"),
            ("run", f"runs/{namespace}/etl-nightly", "run"),
            ("limits", f"limits?namespace={namespace}", "limits"),
        ):
            driver.get(url + path)
            deadline = now() + 60
            while driver.execute_script("return document.body.dataset.rendered") != ready:
                if now() > deadline:
                    raise TimeoutError(page)
                time.sleep(0.1)
            time.sleep(1.0)
            for _ in range(3):  # the window's chrome takes a share of the height: converge on the page's
                inner = driver.execute_script("return window.innerHeight")
                height = driver.execute_script("return document.documentElement.scrollHeight")
                outer = driver.get_window_size()["height"]
                driver.set_window_size(1400, min(int(height) + outer - int(inner), 1700))
                time.sleep(0.3)
            target = outdir / f"dashboard-{page}.png"
            driver.save_screenshot(str(target))
            env.log(f"wrote {target}")
            driver.set_window_size(1400, 900)
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=10)
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs in the namespace the runs page shows")
    parser.add_argument("--loads", type=int, default=5, help="page loads measured after the first")
    parser.add_argument("--waits", type=int, default=100, help="runs whose wait latency is measured")
    parser.add_argument("--screenshots", type=Path, default=None, help="only write the docs' screenshots here")
    args = parser.parse_args()
    install_signal_handlers()
    with BenchEnv("inspect") as env:
        if args.screenshots is not None:
            screenshots(env, args.screenshots)
            return 0
        ui_ns = env.namespace("ui")
        fill_namespace(env, ui_ns, args.runs)
        proc, url = ui_process(env)
        try:
            idle = memory_of(proc.pid)
            first, later = measure_render(url, ui_ns, args.runs, args.loads)
            memory = memory_of(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        wait_ns = env.namespace("wait")
        latencies, writes = measure_waits(env, wait_ns, args.waits)

        print()
        print(
            table(
                f"Runs page, time to first render ({args.runs} runs in the namespace, headless Chromium)",
                ("", "n", "median", "min", "max"),
                [
                    ["first load (cold)", 1, ms(first), ms(first), ms(first)],
                    [
                        "later loads",
                        len(later),
                        ms(statistics.median(later)) if later else "-",
                        ms(min(later)) if later else "-",
                        ms(max(later)) if later else "-",
                    ],
                ],
            )
        )
        print()
        print(
            table(
                "Dashboard process memory (MiB)",
                ("", "VmRSS", "VmHWM (peak)"),
                [
                    ["started, before any page", f"{idle.get('VmRSS', 0):.1f}", f"{idle.get('VmHWM', 0):.1f}"],
                    [
                        f"after {args.loads + 1} loads of {args.runs} runs",
                        f"{memory.get('VmRSS', 0):.1f}",
                        f"{memory.get('VmHWM', 0):.1f}",
                    ],
                ],
            )
        )
        print()
        print(
            table(
                f"FlowRuns.wait latency, status write sent -> wait returned ({args.waits} runs)",
                LATENCY_HEADER,
                latency_rows([("wait returned", latencies), ("the write's round trip", writes)]),
            )
        )
        results = {
            "machine": env.machine(),
            "render": {"runs": args.runs, "first": first, "later": later},
            "memory": {"idle": idle, "after": memory},
            "wait": {"latency": summary(latencies), "write": summary(writes), "raw": latencies},
        }
        path = env.write_results(results)
        print(f"\nresults: {path}")
        print(
            json.dumps(
                {
                    "wait_p50_ms": round(summary(latencies)["p50"] * 1000, 1),
                    "wait_p99_ms": round(summary(latencies)["p99"] * 1000, 1),
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
