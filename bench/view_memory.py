"""Memory of the engine's view per run, without a cluster: how many bytes the engine keeps for a waiting run
and for a finished one, measured with tracemalloc around `Engine.on_run` over objects of the scale
benchmark's shape (as a watch delivers them: parsed from JSON, with managedFields and a written status).

    .venv/bin/python bench/view_memory.py            # 10,000 runs
    VIEW_RUNS=50000 .venv/bin/python bench/view_memory.py

Only the engine's own records are counted: not Kopf's per-object state, the API client, or memory the
allocator keeps after a peak (the process RSS, which `bench/scale.py` prints, includes those).
"""

from __future__ import annotations

import gc
import json
import os
import tracemalloc
from typing import Any

from common import flowrun
from flowrun_operator.engine import Engine

NAMESPACE = "bench"
LIMIT = "scale"


def run_object(index: int, phase: str) -> dict[str, Any]:
    obj = flowrun(f"scale-{index:05d}", 0, {"team": "scale"})
    obj["metadata"].update(
        namespace=NAMESPACE,
        uid=f"{index:08d}-0000-4000-8000-000000000000",
        resourceVersion=str(1000 + index),
        generation=1,
        creationTimestamp="2026-12-03T10:00:00Z",
        managedFields=[
            {
                "manager": "python",
                "operation": "Update",
                "apiVersion": "flowrun.io/v1alpha1",
                "time": "2026-12-03T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:flow": {}, "f:template": {}}},
            }
        ],
    )
    conditions = [
        {
            "type": kind,
            "status": value,
            "reason": reason,
            "message": f"{kind} {reason} for run scale-{index:05d}",
            "lastTransitionTime": f"2026-12-03T10:{index // 600 % 60:02d}:{index // 10 % 60:02d}Z",
            "observedGeneration": 1,
        }
        for kind, value, reason in (
            ("Admitted", "False", "ConcurrencyLimitReached"),
            ("Running", "False", "NotStarted"),
            ("Finished", "False", "NotFinished"),
        )
    ]
    status: dict[str, Any] = {"phase": phase, "observedGeneration": 1, "attempts": 0, "conditions": conditions}
    if phase == "Pending":
        status["waitingFor"] = [{"name": LIMIT, "position": index + 1, "inUse": 0, "limit": 0}]
    else:
        status["completionTime"] = "2026-12-03T11:00:00Z"
    obj["status"] = status
    return obj


def measure(runs: int, phase: str) -> float:
    engine = Engine(None, namespaces=[NAMESPACE])
    engine.on_limit(
        "ADDED",
        {
            "metadata": {"namespace": NAMESPACE, "name": LIMIT, "uid": "l", "resourceVersion": "1", "generation": 1},
            "spec": {"limit": 0, "selector": {"matchLabels": {"team": "scale"}}},
        },
    )
    texts = [json.dumps(run_object(i, phase)) for i in range(runs)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for text in texts:
        engine.on_run("ADDED", json.loads(text))  # the event's object is dropped after, as Kopf does
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(engine.view(NAMESPACE).runs) + len(engine.view(NAMESPACE).finished) == runs
    return used / runs


def main() -> None:
    runs = int(os.environ.get("VIEW_RUNS", "10000"))
    waiting = measure(runs, "Pending")
    finished = measure(runs, "Succeeded")
    print(f"engine view, {runs} runs: {waiting:.0f} B per waiting run ({waiting * runs / 2**20:.1f} MiB)")
    print(f"engine view, {runs} runs: {finished:.0f} B per finished run ({finished * runs / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
