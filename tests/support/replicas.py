"""Operator replicas with leader election, and independent observers of what they do.

- :class:`Replica`: an :class:`OperatorProcess` started with ``LEADER_ELECT=1`` under a fixed identity
  (``POD_NAME``), with its own log directory. ``start()`` returns once its liveness endpoint answers: the
  standby endpoint while it waits for the Lease, Kopf's once it leads.
- :class:`EventLog`: every watch event of one kind of object in a namespace, stamped with the monotonic
  time it arrived (its own watch stream; on a broken stream it lists again and records the list).
- :func:`lease_holder` / :func:`put_lease`: read and write the Lease directly, as another party would.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.kube import api_client
from support.operator import OperatorProcess, free_port

LEASE = "flowrun-operator"


class Replica(OperatorProcess):
    def __init__(
        self,
        identity: str,
        namespaces: list[str],
        lease_namespace: str,
        log_dir: Path,
        *,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        directory = log_dir / identity
        directory.mkdir(parents=True, exist_ok=True)
        self.metrics_port = free_port()
        super().__init__(
            namespaces,
            directory,
            env={
                "POD_NAME": identity,
                "LEADER_ELECT": "1",
                "LEADER_ELECTION_NAMESPACE": lease_namespace,
                "LEADER_ELECTION_LEASE_DURATION": str(lease_duration),
                "LEADER_ELECTION_RENEW_DEADLINE": str(renew_deadline),
                "LEADER_ELECTION_RETRY_PERIOD": str(retry_period),
                "METRICS_PORT": str(self.metrics_port),
                **(env or {}),
            },
        )
        self.identity = identity

    def health(self) -> dict[str, Any]:
        """The liveness endpoint's JSON body (standby: {"leader": false, ...}; leader: Kopf's probes)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
        return body

    def metric(self, name: str) -> float | None:
        """A label-less sample from the replica's /metrics (None when absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


@dataclass(frozen=True)
class Event:
    at: float  # time.monotonic() when it arrived
    type: str  # ADDED / MODIFIED / DELETED, or LISTED for an object seen in a re-list
    obj: dict[str, Any]


class EventLog:
    """Records every event of a watch on ``list_fn(*args)`` (a namespaced list call of the kubernetes client)."""

    def __init__(self, list_fn: Callable[..., Any], *args: Any) -> None:
        self.list_fn = list_fn
        self.args = args
        self.events: list[Event] = []
        self.relists = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventLog:
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError(f"event log did not start: {self.errors[-3:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    def snapshot(self) -> list[Event]:
        with self.lock:
            return list(self.events)

    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(Event(time.monotonic(), kind, obj))

    def _run(self) -> None:
        from kubernetes import watch

        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    response = self.list_fn(*self.args, _preload_content=False, _request_timeout=(5, 30))
                    listing = json.loads(response.data)
                    if self._ready.is_set():
                        self.relists += 1
                        for item in listing["items"]:
                            self._record("LISTED", item)
                    else:
                        for item in listing["items"]:
                            self._record("ADDED", item)
                    version = str(listing["metadata"]["resourceVersion"])
                    self._ready.set()
                stream = watch.Watch()
                for event in stream.stream(
                    self.list_fn,
                    *self.args,
                    resource_version=version,
                    timeout_seconds=2,
                    deserialize=False,
                    _request_timeout=(5, 15),
                ):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = None
                        break
                    version = obj["metadata"]["resourceVersion"]
                    self._record(event["type"], obj)
                    if self._stop.is_set():
                        break
            except Exception as error:  # a broken stream: list again
                self.errors.append(f"{type(error).__name__}: {str(error)[:200]}")
                version = None
                self._stop.wait(0.2)


def lease_holder(kubeconfig: Path, namespace: str) -> str | None:
    """The Lease's holderIdentity (None when released or absent)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CoordinationV1Api(api_client(kubeconfig))
    try:
        response = api.read_namespaced_lease(LEASE, namespace, _preload_content=False, _request_timeout=(5, 10))
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    holder: str | None = (json.loads(response.data).get("spec") or {}).get("holderIdentity")
    return holder


def put_lease(kubeconfig: Path, namespace: str, holder: str | None, duration: int = 60) -> None:
    """Create or overwrite the Lease as another party: `holder` for `duration` seconds, or released (None)."""
    from datetime import UTC, datetime

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CoordinationV1Api(api_client(kubeconfig))
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec = {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": stamp, "renewTime": stamp}
    body: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE}}
    try:
        current = json.loads(
            api.read_namespaced_lease(LEASE, namespace, _preload_content=False, _request_timeout=(5, 10)).data
        )
    except ApiException as error:
        if error.status != 404:
            raise
        api.create_namespaced_lease(namespace, {**body, "spec": spec}, _request_timeout=(5, 10))
        return
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    api.replace_namespaced_lease(LEASE, namespace, {**body, "spec": spec}, _request_timeout=(5, 10))


def holders(log: EventLog) -> list[tuple[float, str | None]]:
    """The Lease's holder over time, from a Lease event log: (arrival time, holder) at every change."""
    changes: list[tuple[float, str | None]] = []
    for event in log.snapshot():
        holder = (event.obj.get("spec") or {}).get("holderIdentity")
        if not changes or changes[-1][1] != holder:
            changes.append((event.at, holder))
    return changes
