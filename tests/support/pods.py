"""An independent observer of a namespace's pods (its own watch stream, not the operator's view).

A pod *holds* its slot while it exists and has not finished: phase ``Pending`` or ``Running`` (or none yet, or
``Unknown``), including a pod being deleted whose containers may still run out their grace period. For every
group (a name -> predicate over a pod) :class:`PodWatcher` keeps how many pods of the group hold a slot, the
maximum of that number over every instant it observed, and a timeline of every event it saw.

A broken stream is not fatal: the watcher lists the pods again and watches on from that list (the list is the
whole truth at its instant, so pods deleted meanwhile are dropped). ``reconnects`` counts those re-lists.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.kube import api_client

__all__ = ["PodEvent", "PodWatcher", "holds_slot"]

FINISHED_PHASES = ("Succeeded", "Failed")


def holds_slot(pod: Mapping[str, Any]) -> bool:
    """True while the pod's containers may run: it exists and has not reached Succeeded or Failed."""
    return (pod.get("status") or {}).get("phase") not in FINISHED_PHASES


@dataclass(frozen=True)
class PodEvent:
    """One observation: ``t`` is ``time.monotonic()`` when it arrived; ``kind`` is the watch event type
    (``ADDED``, ``MODIFIED``, ``DELETED``; ``LISTED`` for an item of a re-list)."""

    t: float
    kind: str
    name: str
    phase: str
    deleting: bool
    pod: dict[str, Any]


class PodWatcher:
    """``with PodWatcher(kubeconfig, namespace, groups) as pods: ...``; ``pods.error`` must stay None."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        groups: Mapping[str, Callable[[dict[str, Any]], bool]] | None = None,
        reconnect_timeout: float = 60.0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.groups = dict(groups or {})
        self.reconnect_timeout = reconnect_timeout
        self.pods: dict[str, dict[str, Any]] = {}
        self.max_seen: dict[str, int] = dict.fromkeys(self.groups, 0)
        # (time, group, holders) whenever a group's number of holders changes
        self.holders_timeline: list[tuple[float, str, int]] = []
        self.events: list[PodEvent] = []
        self.reconnects = 0
        self.stream_errors: list[str] = []
        self.lock = threading.Lock()
        self._last: dict[str, int] = dict.fromkeys(self.groups, 0)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pods-{namespace}", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> PodWatcher:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise AssertionError(f"pod watcher did not start; errors: {self.stream_errors[-3:]}")
        if self.error is not None:
            raise AssertionError(f"pod watcher failed: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    # ------------------------------------------------------------------ reading

    def holders(self, group: str) -> list[str]:
        with self.lock:
            return sorted(n for n, p in self.pods.items() if holds_slot(p) and self.groups[group](p))

    def current(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.pods.get(name)

    def history(self, name: str) -> list[PodEvent]:
        with self.lock:
            return [e for e in self.events if e.name == name]

    def names(self) -> list[str]:
        with self.lock:
            return list(dict.fromkeys(e.name for e in self.events))

    # ------------------------------------------------------------------ watching

    def _count(self) -> None:  # with self.lock held
        t = time.monotonic()
        for group, predicate in self.groups.items():
            n = sum(1 for p in self.pods.values() if holds_slot(p) and predicate(p))
            if n != self._last[group]:
                self._last[group] = n
                self.holders_timeline.append((t, group, n))
            self.max_seen[group] = max(self.max_seen[group], n)

    def _record(self, kind: str, pod: dict[str, Any]) -> None:  # with self.lock held
        meta = pod["metadata"]
        self.events.append(
            PodEvent(
                t=time.monotonic(),
                kind=kind,
                name=meta["name"],
                phase=str((pod.get("status") or {}).get("phase") or ""),
                deleting=bool(meta.get("deletionTimestamp")),
                pod=pod,
            )
        )

    def _observe(self, kind: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        with self.lock:
            self._record(kind, pod)
            if kind == "DELETED":
                self.pods.pop(name, None)
            else:
                self.pods[name] = pod
            self._count()

    def _relist(self, api: Any) -> str:
        listing = api.list_namespaced_pod(self.namespace, _preload_content=False, _request_timeout=(5, 30))
        payload = json.loads(listing.data)
        items: list[dict[str, Any]] = payload["items"]
        with self.lock:
            for pod in items:
                self._record("LISTED", pod)
            self.pods = {p["metadata"]["name"]: p for p in items}
            self._count()
        return str(payload["metadata"]["resourceVersion"])

    def _watch(self, api: Any, version: str) -> str:
        from kubernetes import watch

        stream = watch.Watch()
        for event in stream.stream(
            api.list_namespaced_pod,
            self.namespace,
            resource_version=version,
            timeout_seconds=2,
            deserialize=False,
            _request_timeout=(5, 15),
        ):
            obj = event["object"]
            version = obj["metadata"]["resourceVersion"]
            self._observe(event["type"], obj)
            if self._stop.is_set():
                break
        return version

    def _run(self) -> None:
        from kubernetes import client
        from urllib3.exceptions import HTTPError

        transient = (client.exceptions.ApiException, HTTPError, OSError)
        try:
            api = client.CoreV1Api(api_client(self.kubeconfig))
            version: str | None = None
            failing_since: float | None = None
            delay = 0.1
            while not self._stop.is_set():
                try:
                    if version is None:
                        version = self._relist(api)
                        if self._ready.is_set():
                            self.reconnects += 1
                        self._ready.set()
                    version = self._watch(api, version)
                    failing_since, delay = None, 0.1
                except transient as error:
                    self.stream_errors.append(f"{type(error).__name__}: {str(error)[:300]}")
                    version = None
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > self.reconnect_timeout:
                        raise
                    self._stop.wait(delay)
                    delay = min(delay * 2, 1.0)
        except BaseException as error:  # surfaced by the test through .error
            self.error = error
            self._ready.set()
