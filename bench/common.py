"""Plumbing shared by the benchmarks in ``bench/``.

- :class:`BenchEnv`: the cluster (a fresh embedded control plane in a temporary directory, or the cluster in
  ``$KUBECONFIG`` with ``USE_EXISTING_CLUSTER=1``), the CRDs, namespaces, the operator as a subprocess, CPU and
  memory accounting of the processes involved, and clean-up of all of it (also on errors and Ctrl-C).
- :class:`Watcher`: one watch stream (list, then watch from the list's resourceVersion) in a thread; every event
  is handed to a callback with the client-side time it arrived. Timestamps come from watches, never from polling.
- :func:`create_all`: create many objects from a thread pool, recording when each create call started and
  returned.
- Small helpers: percentiles, tables, the pod template, API server request counters, the JSON results file.

All times are ``time.monotonic()`` seconds in the benchmark process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from prometheus_client.parser import text_string_to_metric_families

from flowrun_operator.devcluster import DURATION_ANNOTATION, EXIT_CODE_ANNOTATION, DevCluster

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
GROUP, VERSION = "flowrun.io", "v1alpha1"
RUN_LABEL = "flowrun.io/run"

now = time.monotonic


# ------------------------------------------------------------------------------------------------ objects


def go_duration(seconds: float) -> str:
    if seconds <= 0:
        return "0s"
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def pod_template(seconds: float = 0) -> dict[str, Any]:
    """The same pod template as the tests' ``support.kube.pod_template``: on KWOK the pod lasts ``seconds``
    (``flowrun.io/sim-duration``) and exits 0; on real nodes busybox sleeps as long."""
    sleep = f"{seconds:.3f}".rstrip("0").rstrip(".") if seconds > 0 else "0"
    return {
        "metadata": {"annotations": {DURATION_ANNOTATION: go_duration(seconds), EXIT_CODE_ANNOTATION: "0"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", f"sleep {sleep}; exit 0"]}
            ],
        },
    }


def flowrun(name: str, seconds: float = 0, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FlowRun",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {"flow": "bench", "template": pod_template(seconds)},
    }


def bare_job(name: str, seconds: float = 0, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A Job like the one the operator builds for a FlowRun (same pod template, ``backoffLimit: 0``)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {"backoffLimit": 0, "template": pod_template(seconds)},
    }


def job_finished(job: Mapping[str, Any]) -> str | None:
    """``Complete`` / ``Failed`` once the Job has that condition, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


# ------------------------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
    }


def ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.0f} ms"


def secs(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds:.2f} s"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]).rstrip()

    rule = "-" * len(line(cells[0]))
    return "\n".join([title, rule, line(cells[0]), rule, *(line(r) for r in cells[1:]), rule])


def latency_rows(named: Sequence[tuple[str, Sequence[float]]]) -> list[list[str]]:
    rows = []
    for label, values in named:
        s = summary(values)
        rows.append([label, str(len(values)), ms(s["p50"]), ms(s["p90"]), ms(s["p99"]), ms(s["max"])])
    return rows


LATENCY_HEADER = ("", "n", "p50", "p90", "p99", "max")


# ------------------------------------------------------------------------------------------------ watching


class Watcher:
    """A thread that lists, then watches, one collection and calls ``on_event(type, obj, t)`` for every event
    (the list's items come as ``ADDED``). Restarts the watch where it stopped, and relists after a 410."""

    def __init__(
        self,
        lister: Callable[..., Any],
        on_event: Callable[[str, dict[str, Any], float], None],
        name: str,
    ) -> None:
        self.lister = lister
        self.on_event = on_event
        self.name = name
        self.events = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        if not self._ready.wait(timeout=60):
            raise RuntimeError(f"watch {self.name} did not start")
        if self.error is not None:
            raise RuntimeError(f"watch {self.name} failed: {self.error}") from self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
        self._thread.join(timeout=10)

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"watch {self.name} failed: {self.error}") from self.error

    def _list(self) -> str:
        resp = self.lister(_preload_content=False)
        payload = json.loads(resp.data)
        t = now()
        for item in payload.get("items") or []:
            self.on_event("ADDED", item, t)
        return str(payload["metadata"]["resourceVersion"])

    def _run(self) -> None:
        try:
            version = self._list()
            self._ready.set()
            while not self._stop.is_set():
                resp = self.lister(
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=120,
                    _preload_content=False,
                )
                self._resp = resp
                try:
                    for line in iter_resp_lines(resp):
                        t = now()
                        if not line:
                            continue
                        event = json.loads(line)
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                version = self._list()
                                break
                            raise RuntimeError(f"watch error: {obj}")
                        version = obj["metadata"]["resourceVersion"]
                        if kind == "BOOKMARK":
                            continue
                        self.events += 1
                        self.on_event(kind, obj, t)
                        if self._stop.is_set():
                            break
                finally:
                    self._resp = None
                    with contextlib.suppress(Exception):
                        resp.release_conn()
        except BaseException as error:
            if not self._stop.is_set():
                self.error = error
        finally:
            self._ready.set()


# ------------------------------------------------------------------------------------------------ creating


def create_all(
    items: Sequence[tuple[str, dict[str, Any]]],
    create: Callable[[dict[str, Any]], Any],
    threads: int,
    on_created: Callable[[str, float, float], None] | None = None,
) -> dict[str, tuple[float, float]]:
    """Create every ``(name, body)`` from a pool of ``threads``; returns name -> (call start, call return).
    Retries throttling and server errors (a retry that finds the object created is a success)."""
    times: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()

    def one(name: str, body: dict[str, Any]) -> None:
        start = now()
        for attempt in range(8):
            try:
                create(body)
                break
            except ApiException as error:
                if error.status == 409 and attempt > 0:
                    break
                if error.status not in (429, 500, 502, 503, 504) or attempt == 7:
                    raise
                time.sleep(0.2 * (attempt + 1))
        end = now()
        with lock:
            times[name] = (start, end)
        if on_created is not None:
            on_created(name, start, end)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="create") as pool:
        futures = [pool.submit(one, name, body) for name, body in items]
        for future in futures:
            future.result()
    return times


def wait_until(
    predicate: Callable[[], bool],
    cond: threading.Condition,
    timeout: float,
    what: str,
    watchers: Sequence[Watcher] = (),
    progress: Callable[[], str] | None = None,
) -> None:
    """Wait on ``cond`` (notified by the watch callbacks) until ``predicate()``; raise after ``timeout``.
    ``progress()`` (a one-line status) is printed to stderr every 15 s."""
    started = now()
    deadline = started + timeout
    next_report = started + 15
    with cond:
        while not predicate():
            for w in watchers:
                w.check()
            t = now()
            if t >= deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            if progress is not None and t >= next_report:
                print(f"  ... {t - started:4.0f}s {progress()}", file=sys.stderr, flush=True)
                next_report = t + 15
            cond.wait(timeout=min(deadline - t, 1.0))


# ------------------------------------------------------------------------------------------------ processes


class CpuMeter:
    """CPU seconds (user + system) used by named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.procs = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                self.procs[name] = psutil.Process(pid)
        self._before: dict[str, float] = {}
        self._t0 = 0.0
        self.result: dict[str, float] = {}
        self.wall = 0.0
        self._machine_before = (0.0, 0.0)
        self.machine_busy = 0.0
        self.cpu_pressure = float("nan")

    def _cpu(self) -> dict[str, float]:
        found = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                found[name] = times.user + times.system
        return found

    @staticmethod
    def _machine() -> tuple[float, float]:
        """(busy CPU seconds of the whole machine, seconds some task waited for a CPU (PSI), or NaN)."""
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        stalled = float("nan")
        with contextlib.suppress(OSError, ValueError, IndexError):
            first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
            stalled = int(first.rsplit("total=", 1)[1]) / 1e6
        return busy, stalled

    def start(self) -> None:
        self._before = self._cpu()
        self._machine_before = self._machine()
        self._t0 = now()

    def stop(self) -> dict[str, float]:
        after = self._cpu()
        machine = self._machine()
        self.wall = now() - self._t0
        self.result = {n: after[n] - self._before[n] for n in after if n in self._before}
        self.machine_busy = machine[0] - self._machine_before[0]
        self.cpu_pressure = (machine[1] - self._machine_before[1]) / self.wall if self.wall else float("nan")
        return self.result

    def rows(self) -> list[list[str]]:
        """Per process: CPU seconds and average cores; then ours in total, other processes on the machine
        (other users' work makes the numbers noisy), and the PSI share of time some task waited for a CPU."""
        wall = self.wall or float("nan")
        total = sum(self.result.values())
        rows = [
            [name, f"{cpu:.1f} s", f"{cpu / wall:.2f}"]
            for name, cpu in sorted(self.result.items(), key=lambda kv: -kv[1])
        ]
        rows.append(["total (benchmark)", f"{total:.1f} s", f"{total / wall:.2f}"])
        other = max(0.0, self.machine_busy - total)
        rows.append(["other processes on the machine", f"{other:.1f} s", f"{other / wall:.2f}"])
        rows.append(["CPU pressure (time some task waited)", "", f"{self.cpu_pressure:.0%}"])
        return rows


def memory_of(pid: int) -> dict[str, float]:
    """VmHWM (peak resident set) and VmRSS of a process, in MiB (from /proc, falling back to psutil)."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0]) / 1024
    if not found:
        with contextlib.suppress(psutil.Error):
            found["VmRSS"] = psutil.Process(pid).memory_info().rss / 2**20
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Operator:
    """``python -m flowrun_operator.main -n NS ...`` as a subprocess (as in tests/support/operator.py).

    With ``BENCH_PROFILE=1`` it runs under cProfile and writes ``operator.prof`` next to its log at exit."""

    def __init__(self, namespaces: Sequence[str], log_dir: Path, kubeconfig: Path) -> None:
        self.namespaces = list(namespaces)
        self.log_path = log_dir / "operator.log"
        self.profile_path = log_dir / "operator.prof" if os.environ.get("BENCH_PROFILE") else None
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.port = _free_port()
        self.metrics_port = int(self.env.get("METRICS_PORT") or 0) or _free_port()
        self.env["METRICS_PORT"] = str(self.metrics_port)  # the operator serves /metrics there
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        argv = [sys.executable]
        if self.profile_path is not None:
            argv += ["-m", "cProfile", "-o", str(self.profile_path)]
        argv += ["-m", "flowrun_operator.main", f"--liveness=http://127.0.0.1:{self.port}/healthz"]
        for ns in self.namespaces:
            argv += ["-n", ns]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        deadline = now() + timeout
        while self.health() is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            if now() > deadline:
                raise RuntimeError(f"operator not healthy after {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def health(self) -> dict[str, Any] | None:
        """The liveness endpoint's JSON (Kopf probes, including the engine's counters), or None."""
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                data = json.loads(response.read() or b"{}")
                return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return None

    def counters(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        """The operator's counter samples (and histograms' sums and counts) from its /metrics, by (name, sorted
        labels); None if it does not answer."""
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith(("_total", "_sum", "_count")):
                    found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def tracebacks(self) -> int:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace").count("Traceback")
        return 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20 if self.profile_path else 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------ API server


def apiserver_requests(api: client.ApiClient) -> dict[tuple[str, str], float]:
    """``apiserver_request_total`` summed by (verb, resource[/subresource]); empty when /metrics is not readable
    (e.g. an existing cluster without the permission)."""
    try:
        method, url, headers, body, post = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
        text = api.call_api(method, url, headers, body, post, _request_timeout=10).read().decode()
    except Exception:
        return {}
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        labels = dict(
            part.split("=", 1) for part in labels_text.replace('"', "").split(",") if "=" in part
        )  # label values here never contain commas
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        totals[(labels.get("verb", ""), resource)] += float(value)
    return dict(totals)


def request_delta(before: Mapping[tuple[str, str], float], after: Mapping[tuple[str, str], float]) -> dict[str, int]:
    """Requests per ``VERB resource`` between two :func:`apiserver_requests` snapshots (WATCH and zero dropped)."""
    delta = {}
    for key, value in after.items():
        diff = int(value - before.get(key, 0.0))
        if diff > 0 and key[0] not in ("WATCH", "CONNECT"):
            delta[f"{key[0]} {key[1]}"] = diff
    return dict(sorted(delta.items(), key=lambda kv: -kv[1]))


# ------------------------------------------------------------------------------------------------ the env


def _use_existing_cluster() -> bool:
    return os.environ.get("USE_EXISTING_CLUSTER", "").lower() in ("1", "true", "yes")


class BenchEnv:
    """Cluster + CRDs + namespaces + operator for one benchmark run; everything is stopped by :meth:`close`.

    ``with BenchEnv("lifecycle") as env: ...``"""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"flowrun-bench-{name}-"))
        self.devcluster: DevCluster | None = None
        self.kubeconfig: Path | None = None
        self.operator: Operator | None = None
        self.namespaces: list[str] = []
        self.api: client.ApiClient | None = None
        self._suffix = uuid.uuid4().hex[:6]
        self.git = git_state()  # the code the operator process will load

    def __enter__(self) -> BenchEnv:
        try:
            self.start()
        except BaseException:
            self.close(keep_files=True)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(keep_files=exc_type is not None)

    def log(self, message: str) -> None:
        print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def start(self) -> None:
        if _use_existing_cluster():
            path = Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config").expanduser()
            if not path.exists():
                raise SystemExit(f"USE_EXISTING_CLUSTER=1 but the kubeconfig {path} does not exist")
            self.kubeconfig = path
            self.log(f"using the existing cluster of {path}")
        else:
            self.log(f"starting the embedded control plane in {self.tmp / 'cluster'}")
            self.devcluster = DevCluster(self.tmp / "cluster")
            self.devcluster.start()
            self.kubeconfig = self.devcluster.kubeconfig
            self.log(f"control plane up in {self.devcluster.startup_seconds:.1f}s")
        self.api = self.new_client(pool=32)
        self.install_crds()

    def new_client(self, pool: int = 16) -> client.ApiClient:
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = pool
        return client.ApiClient(configuration)

    def install_crds(self) -> None:
        ext = client.ApiextensionsV1Api(self.api)
        names = []
        for path in sorted((REPO / "crds").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                names.append(doc["metadata"]["name"])
                try:
                    ext.create_custom_resource_definition(doc, _preload_content=False)
                except ApiException as error:
                    if error.status != 409:
                        raise
                    current = json.loads(
                        ext.read_custom_resource_definition(doc["metadata"]["name"], _preload_content=False).data
                    )
                    doc["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                    ext.replace_custom_resource_definition(doc["metadata"]["name"], doc, _preload_content=False)
        deadline = now() + 60
        for name in names:
            while True:
                crd = json.loads(ext.read_custom_resource_definition(name, _preload_content=False).data)
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                if now() > deadline:
                    raise RuntimeError(f"CRD {name} not Established")
                time.sleep(0.1)
        # A CRD is Established before its endpoints serve everywhere; wait until a list works.
        custom = client.CustomObjectsApi(self.api)
        while True:
            try:
                custom.list_cluster_custom_object(GROUP, VERSION, "flowruns", limit=1)
                break
            except ApiException:
                if now() > deadline:
                    raise
                time.sleep(0.2)

    def namespace(self, prefix: str) -> str:
        """A new namespace (``bench-<prefix>-<suffix>``) with its default ServiceAccount in place."""
        name = f"bench-{prefix}-{self._suffix}"
        core = client.CoreV1Api(self.api)
        core.create_namespace({"metadata": {"name": name}}, _preload_content=False)
        self.namespaces.append(name)
        deadline = now() + 60
        while True:
            try:
                core.read_namespaced_service_account("default", name, _preload_content=False)
                return name
            except ApiException as error:
                if error.status != 404 or now() > deadline:
                    raise
                time.sleep(0.1)

    def start_operator(self, namespaces: Sequence[str]) -> Operator:
        assert self.kubeconfig is not None
        self.operator = Operator(namespaces, self.tmp, self.kubeconfig)
        self.operator.start()
        self.log(f"operator running (pid {self.operator.pid}, log {self.operator.log_path})")
        return self.operator

    def component_pids(self) -> dict[str, int]:
        """The control plane's processes (embedded cluster only), the operator and this process."""
        pids: dict[str, int] = {"bench (this process)": os.getpid()}
        if self.operator is not None and self.operator.proc is not None:
            pids["operator"] = self.operator.pid
        if self.devcluster is not None:
            for path in sorted(self.devcluster.pid_dir.glob("*.pid")):
                with contextlib.suppress(OSError, ValueError):
                    pids[path.stem] = int(path.read_text().strip())
        return pids

    def cpu_meter(self) -> CpuMeter:
        return CpuMeter(self.component_pids())

    def write_results(self, data: Mapping[str, Any]) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}-{self.stamp}.json"
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return path

    def machine(self) -> dict[str, Any]:
        return {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "cluster": "existing" if self.devcluster is None else "embedded (KWOK)",
            "started": self.stamp,
            **self.git,
        }

    def close(self, keep_files: bool = False) -> None:
        """Stop the operator and the cluster (or delete the namespaces of an existing cluster). The temporary
        directory (component logs) is removed unless ``keep_files``."""
        if self.operator is not None:
            self.operator.stop()
            if self.operator.profile_path is not None and self.operator.profile_path.exists():
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                target = RESULTS_DIR / f"{self.name}-{self.stamp}-operator.prof"
                target.write_bytes(self.operator.profile_path.read_bytes())
                self.log(f"operator profile: {target}")
            log = self.operator.log_path
            if log.exists():
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                (RESULTS_DIR / f"{self.name}-{self.stamp}-operator.log").write_bytes(log.read_bytes())
        if self.devcluster is not None:
            self.log("stopping the embedded control plane")
            with contextlib.suppress(Exception):
                self.devcluster.stop()
        elif self.api is not None:
            core = client.CoreV1Api(self.api)
            for ns in self.namespaces:
                with contextlib.suppress(Exception):
                    core.delete_namespace(ns, _preload_content=False)
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.close()
        if keep_files:
            self.log(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def git_state() -> dict[str, Any]:
    """The commit measured, and whether operator/ had uncommitted changes."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=10)
        return result.stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return {"commit": git("rev-parse", "HEAD"), "operator_dirty": bool(git("status", "--porcelain", "operator"))}
    return {}


Counters = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]


def counter_delta(before: Counters | None, after: Counters | None, name: str) -> float:
    """How much a counter grew between two scrapes, all its label sets summed; nan if a scrape failed."""
    if before is None or after is None:
        return float("nan")
    return sum(v - before.get(key, 0.0) for key, v in after.items() if key[0] == name)


def flowrun_writes_by_phase(before: Counters | None, after: Counters | None) -> dict[str, float]:
    """FlowRun status patches the operator stored between two scrapes, by the phase written ("refresh":
    a place-in-line rewrite of a Pending run); empty when /metrics was not readable."""
    if before is None or after is None:
        return {}
    found: dict[str, float] = defaultdict(float)
    for (name, labels), value in after.items():
        tags = dict(labels)
        if name != "flowrun_status_writes_total" or tags.get("kind") != "flowruns":
            continue
        delta = value - before.get((name, labels), 0.0)
        if delta:
            found["refresh" if tags.get("urgency") == "refresh" else tags.get("phase") or "-"] += delta
    return dict(found)


def writes_line(writes: Mapping[str, float], runs: int) -> str:
    if not writes:
        return "FlowRun status writes by phase (/metrics): unavailable"
    total = sum(writes.values())
    parts = ", ".join(f"{phase} {count / runs:.2f}" for phase, count in sorted(writes.items()))
    return f"FlowRun status writes per run (/metrics): {total / runs:.2f} ({parts})"


def watch_line(before: Counters | None, after: Counters | None, runs: int) -> str:
    """Watch events the operator's streams received between two scrapes, per run, by stream."""
    if before is None or after is None:
        return "operator watch events (/metrics): unavailable"
    found: dict[str, float] = defaultdict(float)
    for (name, labels), value in after.items():
        if name == "flowrun_watch_events_total":
            found[dict(labels).get("kind", "-")] += value - before.get((name, labels), 0.0)
    parts = ", ".join(f"{kind} {count / runs:.2f}" for kind, count in sorted(found.items()) if count)
    return f"operator watch events per run (/metrics): {sum(found.values()) / runs:.2f} ({parts})"


def engine_timing(before: Counters | None, after: Counters | None) -> str:
    """Mean engine round and mean wait of a marked key for its round between two scrapes (histograms)."""
    if before is None or after is None:
        return "engine rounds (/metrics): unavailable"

    def delta(name: str) -> float:
        return after.get((name, ()), 0.0) - before.get((name, ()), 0.0)

    parts = []
    for histogram, what in (
        ("flowrun_engine_round_seconds", "round"),
        ("flowrun_engine_queue_latency_seconds", "key wait"),
    ):
        count = delta(f"{histogram}_count")
        mean = delta(f"{histogram}_sum") / count * 1000 if count else float("nan")
        parts.append(f"{int(count)} {what}s, mean {mean:.1f} ms")
    return "engine (/metrics): " + "; ".join(parts)


def engine_counters(health: Mapping[str, Any] | None) -> str:
    """One line from the operator's liveness probe (its engine's counters), if it answered."""
    found = (health or {}).get("engine") or {}
    if not found:
        return "operator engine counters: unavailable"
    return "operator engine counters: " + ", ".join(f"{k} {v}" for k, v in found.items() if k != "ready")


def job_lister(api: client.ApiClient, namespace: str, label_selector: str | None = None) -> Callable[..., Any]:
    batch = client.BatchV1Api(api)

    def lister(**kwargs: Any) -> Any:
        if label_selector:
            kwargs["label_selector"] = label_selector
        return batch.list_namespaced_job(namespace, **kwargs)

    return lister


def pod_lister(api: client.ApiClient, namespace: str) -> Callable[..., Any]:
    core = client.CoreV1Api(api)

    def lister(**kwargs: Any) -> Any:
        return core.list_namespaced_pod(namespace, **kwargs)

    return lister


def custom_lister(api: client.ApiClient, namespace: str, plural: str) -> Callable[..., Any]:
    custom = client.CustomObjectsApi(api)

    def lister(**kwargs: Any) -> Any:
        return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **kwargs)

    return lister


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C, so ``finally`` blocks stop the cluster and the operator."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def phase_tables(
    labels: tuple[str, str], phases: tuple[dict[str, Any], dict[str, Any]], min_requests: int
) -> list[str]:
    """CPU per process for each of two phases, and API server requests side by side."""
    out = [
        table(
            f"CPU during the {label} phase ({phase['cpu_wall']:.1f} s wall; 1.00 = one core)",
            ("process", "cpu", "cores"),
            phase["cpu_rows"],
        )
        for label, phase in zip(labels, phases, strict=True)
    ]
    first, second = (p["apiserver_requests"] for p in phases)
    keys = [k for k in sorted(set(first) | set(second)) if first.get(k, 0) + second.get(k, 0) >= min_requests]
    if keys:
        out.append(
            table(
                f"API server requests per phase (>= {min_requests} in total; all clients; watches not counted)",
                ("verb resource", *labels),
                sorted(
                    ([k, first.get(k, 0), second.get(k, 0)] for k in keys),
                    key=lambda row: -(row[1] + row[2]),
                ),
            )
        )
    return out
