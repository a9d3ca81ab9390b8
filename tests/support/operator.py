"""Run the operator as a real subprocess against the cluster under test, and watch Jobs independently."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from support.kube import api_client, wait_for

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`flowrun-operator -n NAMESPACE` in a subprocess, logging to a file; restartable and killable."""

    def __init__(self, namespaces: list[str], log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.namespaces = namespaces
        self.log_dir = log_dir
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.port = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"operator-{i}.log").read_text(errors="replace") for i in range(1, self.starts + 1)
        )

    def start(self, timeout: float = 30) -> None:
        self.starts += 1
        self.port = free_port()
        argv = [sys.executable, "-m", "flowrun_operator.main", f"--liveness=http://127.0.0.1:{self.port}/healthz"]
        for ns in self.namespaces:
            argv += ["-n", ns]
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        log.close()
        wait_for(self._healthy, timeout=timeout, interval=0.1, message=f"operator health (log: {self.log_path})")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, as in a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class JobWatcher:
    """An independent observer of a namespace's Jobs (its own watch stream, not the operator's view).

    For every group (a name -> predicate over a Job), it tracks how many Jobs of that group exist
    and have not finished, and the maximum of that number over the whole test.

    A broken stream (the API server restarting, a connection reset, an expired resource version) is not
    fatal: the watcher lists the Jobs again and watches on from that list. It cannot observe while it is
    disconnected, so after reconnecting it re-derives the unfinished set from the list (Jobs created,
    finished or deleted in between are accounted for) and ``max_seen`` covers every instant it observed.
    ``reconnects`` counts those re-lists and ``stream_errors`` holds the errors that caused them. Only an
    error in the watcher itself, or an API it cannot reach again within ``reconnect_timeout`` seconds, ends
    it; that error is in ``error``.
    """

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        groups: Mapping[str, Callable[[dict[str, Any]], bool]],
        reconnect_timeout: float = 90.0,
    ):
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.groups = dict(groups)
        self.reconnect_timeout = reconnect_timeout
        self.unfinished: dict[str, dict[str, Any]] = {}
        self.max_seen: dict[str, int] = dict.fromkeys(self.groups, 0)
        self.created_order: list[str] = []
        self.reconnects = 0
        self.stream_errors: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> JobWatcher:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise AssertionError(f"job watcher did not start; errors: {self.stream_errors[-3:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    def count(self, group: str) -> int:
        with self.lock:
            return sum(1 for job in self.unfinished.values() if self.groups[group](job))

    @staticmethod
    def _finished(job: dict[str, Any]) -> bool:
        return any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (job.get("status") or {}).get("conditions") or []
        )

    def _update_max(self) -> None:  # with self.lock held
        for group, predicate in self.groups.items():
            now = sum(1 for j in self.unfinished.values() if predicate(j))
            self.max_seen[group] = max(self.max_seen[group], now)

    def _observe(self, kind: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        with self.lock:
            if kind == "ADDED" and name not in self.created_order:
                self.created_order.append(name)
            if kind == "DELETED" or self._finished(job):
                self.unfinished.pop(name, None)
            else:
                self.unfinished[name] = job
            self._update_max()

    def _relist(self, api: Any) -> str:
        """List the Jobs and make them the whole truth; returns the list's resourceVersion to watch from."""
        listing = api.list_namespaced_job(self.namespace, _preload_content=False, _request_timeout=(5, 30))
        payload = json.loads(listing.data)
        items: list[dict[str, Any]] = payload["items"]
        with self.lock:
            known = set(self.created_order)
            new = [j for j in items if j["metadata"]["name"] not in known]
            new.sort(key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"]))
            self.created_order += [j["metadata"]["name"] for j in new]
            self.unfinished = {j["metadata"]["name"]: j for j in items if not self._finished(j)}
            self._update_max()
        return str(payload["metadata"]["resourceVersion"])

    def _watch(self, api: Any, version: str) -> str:
        """Follow the watch from ``version`` until it ends (every few seconds) or the watcher stops."""
        from kubernetes import watch

        stream = watch.Watch()
        for event in stream.stream(
            api.list_namespaced_job,
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

        # What a broken or refused connection, or an API server that is restarting, looks like.
        transient = (client.exceptions.ApiException, HTTPError, OSError)
        try:
            api = client.BatchV1Api(api_client(self.kubeconfig))
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
                    version = None  # the next round lists again
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > self.reconnect_timeout:
                        raise
                    self._stop.wait(delay)
                    delay = min(delay * 2, 1.0)
        except BaseException as error:  # surfaced by the test through .error
            self.error = error
            self._ready.set()
