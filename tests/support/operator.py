"""Run the operator as a real subprocess against the cluster under test, and watch Jobs independently."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
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
    """

    def __init__(self, kubeconfig: Path, namespace: str, groups: Mapping[str, Callable[[dict[str, Any]], bool]]):
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.groups = dict(groups)
        self.unfinished: dict[str, dict[str, Any]] = {}
        self.max_seen: dict[str, int] = dict.fromkeys(self.groups, 0)
        self.created_order: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> JobWatcher:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise AssertionError("job watcher did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def count(self, group: str) -> int:
        with self.lock:
            return sum(1 for job in self.unfinished.values() if self.groups[group](job))

    def _observe(self, kind: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        finished = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (job.get("status") or {}).get("conditions") or []
        )
        with self.lock:
            if kind == "ADDED" and name not in self.created_order:
                self.created_order.append(name)
            if kind == "DELETED" or finished:
                self.unfinished.pop(name, None)
            else:
                self.unfinished[name] = job
            for group, predicate in self.groups.items():
                now = sum(1 for j in self.unfinished.values() if predicate(j))
                self.max_seen[group] = max(self.max_seen[group], now)

    def _run(self) -> None:
        from kubernetes import client, watch

        try:
            api = client.BatchV1Api(api_client(self.kubeconfig))
            listing = api.list_namespaced_job(self.namespace, _preload_content=False)
            import json

            payload = json.loads(listing.data)
            for job in payload["items"]:
                self._observe("ADDED", job)
            version = payload["metadata"]["resourceVersion"]
            self._ready.set()
            while not self._stop.is_set():
                stream = watch.Watch()
                for event in stream.stream(
                    api.list_namespaced_job,
                    self.namespace,
                    resource_version=version,
                    timeout_seconds=2,
                    _preload_content=False,
                ):
                    obj = event["raw_object"]
                    version = obj["metadata"]["resourceVersion"]
                    self._observe(event["type"], obj)
                    if self._stop.is_set():
                        break
        except BaseException as error:  # surfaced by the test through .error
            self.error = error
            self._ready.set()
