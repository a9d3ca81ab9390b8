"""FlowSchedules for tests, and an independent watch of a namespace's FlowRuns (its own stream, not the
operator's) that records when each run appeared, changed phase, was cancelled and was deleted."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from support.kube import api_client, pod_template

SCHEDULE_LABEL = "flowrun.io/schedule"
TICK_ANNOTATION = "flowrun.io/scheduled-time"
TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def flowschedule(
    name: str,
    *,
    interval: str | None = None,
    schedule: str | None = None,
    duration: float = 0,
    exit_code: int = 0,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "flowRunTemplate": {
            "metadata": {"labels": labels or {}},
            "spec": {"flow": "scheduled", "template": pod_template(duration, exit_code)},
        },
        **spec,
    }
    if interval is not None:
        body["interval"] = interval
    if schedule is not None:
        body["schedule"] = schedule
    return {"apiVersion": "flowrun.io/v1alpha1", "kind": "FlowSchedule", "metadata": {"name": name}, "spec": body}


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class SeenRun:
    name: str
    schedule: str | None
    tick: datetime | None
    created: datetime  # metadata.creationTimestamp (whole seconds)
    seen: float  # wall-clock time.time() when the watch delivered it
    body: dict[str, Any]
    phases: list[tuple[float, str]] = field(default_factory=list)
    cancelled_at: float | None = None
    finished_at: float | None = None
    deleted_at: float | None = None

    @property
    def phase(self) -> str | None:
        return self.phases[-1][1] if self.phases else None


class RunWatcher:
    """Watches FlowRuns of one namespace from before the test acts until it stops; ``runs`` is every run it saw,
    in the order the API server created them. ``max_unfinished`` is, per schedule, the most runs that were
    unfinished (created, not yet in a final phase nor deleted) at one instant."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.runs: dict[str, SeenRun] = {}
        self.max_unfinished: dict[str, int] = {}
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RunWatcher:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise AssertionError("run watcher did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    def of(self, schedule: str) -> list[SeenRun]:
        with self.lock:
            return [r for r in self.runs.values() if r.schedule == schedule]

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"run watcher failed: {self.error!r}")

    def _observe(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.time()
        meta = obj["metadata"]
        name = meta["name"]
        with self.lock:
            run = self.runs.get(name)
            if run is None:
                tick = (meta.get("annotations") or {}).get(TICK_ANNOTATION)
                run = SeenRun(
                    name=name,
                    schedule=(meta.get("labels") or {}).get(SCHEDULE_LABEL),
                    tick=parse(tick) if tick else None,
                    created=parse(meta["creationTimestamp"]),
                    seen=now,
                    body=obj,
                )
                self.runs[name] = run
            run.body = obj
            phase = (obj.get("status") or {}).get("phase")
            if phase and run.phase != phase:
                run.phases.append((now, phase))
                if phase in TERMINAL and run.finished_at is None:
                    run.finished_at = now
            if (obj.get("spec") or {}).get("cancel") and run.cancelled_at is None:
                run.cancelled_at = now
            if kind == "DELETED":
                run.deleted_at = now
            if run.schedule:
                unfinished = sum(
                    1
                    for r in self.runs.values()
                    if r.schedule == run.schedule and r.finished_at is None and r.deleted_at is None
                )
                self.max_unfinished[run.schedule] = max(self.max_unfinished.get(run.schedule, 0), unfinished)

    def _run(self) -> None:
        from kubernetes import client, watch

        try:
            api = client.CustomObjectsApi(api_client(self.kubeconfig))
            listing = api.list_namespaced_custom_object("flowrun.io", "v1alpha1", self.namespace, "flowruns")
            for item in listing["items"]:
                self._observe("ADDED", item)
            version = listing["metadata"]["resourceVersion"]
            self._ready.set()
            while not self._stop.is_set():
                stream = watch.Watch()
                for event in stream.stream(
                    api.list_namespaced_custom_object,
                    "flowrun.io",
                    "v1alpha1",
                    self.namespace,
                    "flowruns",
                    resource_version=version,
                    timeout_seconds=2,
                    allow_watch_bookmarks=False,
                ):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    self._observe(event["type"], obj)
                    if self._stop.is_set():
                        break
        except BaseException as error:  # surfaced by check()
            self.error = error
            self._ready.set()


def wait_until(moment: float) -> None:
    """Sleep until a wall-clock time (time.time())."""
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)
