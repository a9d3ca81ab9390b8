"""CPU of one API call from the operator's process: through the official client in a pool thread (how the
operator's writes were sent) against `Transport` (aiohttp on the event loop, how they are sent now).

    .venv/bin/python bench/api_calls.py                # 1,000 Events and 1,000 status patches each way, 8 at once
    .venv/bin/python bench/api_calls.py --calls 200

Both ways send the same requests to the same embedded control plane (or $KUBECONFIG with
USE_EXISTING_CLUSTER=1), alternating, twice each; it prints this process's CPU (all threads) per call and
the wall time. The API server's own CPU is not counted: the requests are the same either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client

from common import GROUP, VERSION, BenchEnv, flowrun, table
from flowrun_operator.kube.client import MERGE_PATCH, REQUEST_TIMEOUT, Kube, event_body, release


def threaded_calls(
    api: client.ApiClient, namespace: str, run: str, concurrency: int
) -> Callable[[int], Awaitable[None]]:
    """The official client in a pool of `concurrency` threads, bodies as dicts, responses read raw."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    pool = ThreadPoolExecutor(max_workers=concurrency)
    target = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": namespace}}

    def event(i: int) -> None:
        body = event_body(target, "Normal", "Bench", f"call {i}", "bench")
        release(core.create_namespaced_event(namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))

    def patch(i: int) -> None:
        response = custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "flowruns",
            run,
            {"status": {"message": f"call {i}"}},
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        json.loads(response.data)

    async def call(i: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, event, i)
        await loop.run_in_executor(pool, patch, i)

    return call


def transport_calls(kube: Kube, namespace: str, run: str) -> Callable[[int], Awaitable[None]]:
    target = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": namespace}}

    async def call(i: int) -> None:
        await kube.post_event(target, "Normal", "Bench", f"call {i}")
        await kube.patch_status("flowruns", namespace, run, {"message": f"call {i}"})

    return call


async def measure(call: Callable[[int], Awaitable[None]], calls: int, concurrency: int) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) for `calls` calls, `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await call(i)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="Events and status patches each, per round")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with BenchEnv("api-calls") as env:
        namespace = env.namespace("calls")
        run = "probe-run"
        assert env.api is not None
        client.CustomObjectsApi(env.api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "flowruns", flowrun(run), _preload_content=False
        )
        results: dict[str, list[tuple[float, float]]] = {
            "official client, pool threads": [],
            "Transport, event loop": [],
        }

        async def rounds() -> None:
            kube = Kube(env.new_client(pool=args.concurrency))
            threaded = threaded_calls(env.new_client(pool=args.concurrency), namespace, run, args.concurrency)
            transport = transport_calls(kube, namespace, run)
            await measure(transport, 20, args.concurrency)  # warm up both: connections, imports
            await measure(threaded, 20, args.concurrency)
            for _ in range(2):
                results["official client, pool threads"].append(await measure(threaded, args.calls, args.concurrency))
                results["Transport, event loop"].append(await measure(transport, args.calls, args.concurrency))
            await kube.close()

        asyncio.run(rounds())
        requests = 2 * args.calls
        rows: list[list[Any]] = []
        for way, measured in results.items():
            for n, (cpu, wall) in enumerate(measured, 1):
                rows.append([way, n, f"{1000 * cpu / requests:.3f} ms", f"{wall:.2f} s"])
        print(
            table(
                f"{requests} requests per round ({args.calls} Events + {args.calls} status patches, "
                f"{args.concurrency} at once)",
                ["way", "round", "CPU per request", "wall"],
                rows,
            )
        )
        env.write_results({"calls": args.calls, "concurrency": args.concurrency, "results": results})


if __name__ == "__main__":
    main()
