"""The embedded Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
KWOK as local processes on 127.0.0.1, with generated certificates and a kubeconfig.

Layout of a state directory (``.devcluster/`` for the CLI, a temporary directory for the tests)::

    kubeconfig             admin kubeconfig (system:masters)
    cluster.json           ports and paths of the running cluster
    pki/                   CA, serving and client certificates, service-account key pair
    etcd/                  etcd data (recreated on every start)
    config/                component kubeconfigs, scheduler and kwok configuration
    logs/<component>.log   each component's output (the previous run's in <component>.log.prev)
    pids/<component>.pid   pid of each running component

Every start is a fresh, empty cluster. Binaries come from ``$FLOWRUN_CACHE/bin`` (default
``~/.cache/flowrun-operator/bin``), built by ``make tools``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from . import certs, processes, stages

__all__ = [
    "COMPONENTS",
    "ComponentStatus",
    "DevCluster",
    "DevClusterError",
    "default_bin_dir",
]

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
KWOK = "kwok"
#: Components in start order (stopped in reverse).
COMPONENTS: tuple[str, ...] = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, KWOK)

SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"
HOST = "127.0.0.1"
_START_ATTEMPTS = 3

# Controllers the tests and the operator need (Job, garbage collector, namespace, service accounts) plus the
# usual workload ones. Left out: node-lifecycle (KWOK nodes send no heartbeats; it would mark them NotReady
# and evict their pods), and volume/cloud controllers that have nothing to do without real nodes.
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "disruption-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "resourcequota-controller",
    "horizontal-pod-autoscaler-controller",
    "ttl-controller",
    "replicationcontroller-controller",
    "service-cidr-controller",
    "certificatesigningrequest-signing-controller",
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-cleaner-controller",
    "validatingadmissionpolicy-status-controller",
    "clusterrole-aggregation-controller",
    "legacy-serviceaccount-token-cleaner-controller",
)


def default_bin_dir() -> Path:
    cache = os.environ.get("FLOWRUN_CACHE") or str(Path.home() / ".cache" / "flowrun-operator")
    return Path(cache) / "bin"


class DevClusterError(RuntimeError):
    """A component could not be started or did not become ready. Names the component and its log."""

    def __init__(self, message: str, component: str | None = None, log_path: Path | None = None) -> None:
        self.component = component
        self.log_path = log_path
        text = message
        if log_path is not None:
            tail = processes.log_tail(log_path)
            text += f"\n  log: {log_path}"
            if tail:
                text += "\n  last lines:\n" + "\n".join(f"    {line}" for line in tail.splitlines())
        super().__init__(text)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    log_path: Path


@dataclass(frozen=True)
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    scheduler: int


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (bound together so the kernel cannot repeat one)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _open(req: urllib.request.Request | str, timeout: float, context: ssl.SSLContext | None) -> Any:
    """urlopen without proxies (everything here is on loopback)."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(req, timeout=timeout)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_dict(server: str, ca: Path, cert: Path, key: Path, user: str = "admin") -> dict[str, Any]:
    """A kubeconfig with the CA and client credentials embedded (so it can be copied elsewhere)."""
    name = "flowrun-devcluster"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(ca)}},
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)},
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user, "namespace": "default"}}],
        "current-context": name,
    }


class _Api:
    """Minimal JSON client for the API server (stdlib only, admin client certificate)."""

    def __init__(self, server: str, pki: certs.Pki) -> None:
        self.server = server
        self.context = ssl.create_default_context(cafile=str(pki.ca_cert))
        self.context.load_cert_chain(str(pki.client_cert("admin")), str(pki.client_key("admin")))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _open(req, timeout, self.context) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", errors="replace")


def _http_ok(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    try:
        with _open(url, timeout, context) as resp:
            status: int = resp.status
    except (OSError, urllib.error.URLError):
        return False
    return 200 <= status < 300


class DevCluster:
    """Starts and stops the embedded control plane in ``state_dir``.

    ``with DevCluster(path) as cluster: ...`` starts it and stops it on exit. ``die_with_parent`` (default)
    makes the kernel kill the components if this Python process dies without stopping them; the CLI turns it
    off so the cluster outlives ``flowrun-devcluster up``.
    """

    def __init__(
        self,
        state_dir: Path | str = ".devcluster",
        *,
        bin_dir: Path | str | None = None,
        timeout: float = 90.0,
        apiserver_port: int = 0,
        die_with_parent: bool = True,
        node_count: int = 1,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().absolute()
        self.bin_dir = Path(bin_dir) if bin_dir is not None else default_bin_dir()
        self.timeout = timeout
        self.requested_apiserver_port = apiserver_port
        self.die_with_parent = die_with_parent
        self.node_count = node_count
        self._spawned: dict[str, processes.Spawned] = {}
        self._ports: _Ports | None = None
        self._api: _Api | None = None
        self.startup_seconds: float | None = None

    # ----------------------------------------------------------------------------------------- paths
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pid_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def pki(self) -> certs.Pki:
        return certs.Pki(self.state_dir / "pki")

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "config"

    @property
    def info_path(self) -> Path:
        return self.state_dir / "cluster.json"

    def log_path(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def pid_path(self, component: str) -> Path:
        return self.pid_dir / f"{component}.pid"

    @property
    def server(self) -> str:
        """The API server's URL (after start, or read from a running cluster's ``cluster.json``)."""
        if self._ports is not None:
            return f"https://{HOST}:{self._ports.apiserver}"
        info = self.read_info()
        if info is None:
            raise DevClusterError(f"no cluster in {self.state_dir} (no {self.info_path.name})")
        return str(info["server"])

    def env(self) -> dict[str, str]:
        """``os.environ`` with ``KUBECONFIG`` pointing at this cluster's admin kubeconfig."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def read_info(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # ----------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start every component and wait until the cluster can run Jobs. Raises :class:`DevClusterError`."""
        begin = time.monotonic()
        self._binaries()
        self.cleanup_stale()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._prepare()
                self._launch()
                break
            except DevClusterError as e:
                self.stop()
                # Free ports are picked before the components bind them; another process can take one in
                # between. Pick new ones and try again.
                if attempt == _START_ATTEMPTS or not self._lost_port_race(e):
                    raise
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - begin
        return self

    def _lost_port_race(self, error: DevClusterError) -> bool:
        if error.log_path is None or (error.component == APISERVER and self.requested_apiserver_port):
            return False
        return "address already in use" in processes.log_tail(error.log_path, lines=50)

    def stop(self, grace: float = 10.0) -> None:
        """Terminate every component of this state directory (SIGTERM, SIGKILL after ``grace`` seconds)."""
        self._terminate_all(grace)
        with contextlib.suppress(OSError):
            self.info_path.unlink()
        self._ports = None
        self._api = None

    def cleanup_stale(self) -> list[int]:
        """Kill processes left behind by an earlier run in this state directory (found through the pid files
        and by scanning for component processes whose arguments point into it); remove the pid files.
        Returns the pids that were running."""
        return self._terminate_all(grace=5.0)

    def _terminate_all(self, grace: float) -> list[int]:
        popens = {s.pid: s for s in self._spawned.values()}
        names: dict[int, str] = {pid: s.name for pid, s in popens.items()}
        for pid in self._pids_from_files():
            names.setdefault(pid, processes.binary_name(pid))
        for pid in processes.processes_of_state_dir(self.state_dir, self._binary_names()):
            names.setdefault(pid, processes.binary_name(pid))
        running = sorted(pid for pid in names if pid not in popens or popens[pid].popen.poll() is None)
        # Clients first, then the API server, etcd last: an API server whose etcd is gone takes many
        # seconds to shut down.
        groups: list[set[str]] = [{KWOK, SCHEDULER, CONTROLLER_MANAGER}, {APISERVER}, {ETCD}]
        known = set().union(*groups)
        groups[0] |= {name for name in names.values() if name not in known}
        for group in groups:
            pids = [pid for pid, name in names.items() if name in group]
            children = [popens[pid].popen for pid in pids if pid in popens]
            processes.terminate(pids, children, grace=grace)
        self._spawned.clear()
        for component in COMPONENTS:
            with contextlib.suppress(OSError):
                self.pid_path(component).unlink()
        return running

    def restart_component(self, component: str, *, kill: bool = True, timeout: float = 60) -> None:
        """Stop one component and start it again with the same flags, ports and certificates, then wait until
        it is ready again; the rest of the cluster keeps running. ``kill`` sends SIGKILL (a crash), otherwise
        SIGTERM, and SIGKILL if it has not exited after ``timeout`` seconds (an API server with clients
        watching finishes a graceful shutdown only after about a minute). Only for a cluster this object
        started.

        Ready means: etcd answers ``/health``, the scheduler ``/healthz``, the controller-manager and KWOK have
        logged that their informers run again (they serve no probe here); and in every case the API server
        answers ``/readyz``. Raises :class:`DevClusterError` naming the component's log if it does not come
        back within ``timeout`` seconds.

        With ``die_with_parent`` the new process dies with the *thread* that calls this method: call it from
        a thread that outlives the cluster (as the main thread does).
        """
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
        spawned = self._spawned.get(component)
        ports, api = self._ports, self._api
        if spawned is None or ports is None or api is None:
            raise DevClusterError(f"{component}: not started by this DevCluster object", component=component)

        if kill:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(spawned.pid, signal.SIGKILL)  # its own session: the group is the component
            spawned.popen.wait(timeout=timeout)
        else:
            processes.terminate([spawned.pid], [spawned.popen], grace=timeout)
        del self._spawned[component]

        log = self.log_path(component)
        offset = log.stat().st_size if log.exists() else 0
        deadline = time.monotonic() + timeout
        self._spawn(component)

        def logged(marker: str) -> Callable[[], bool]:
            def check() -> bool:
                with open(log, "rb") as f:
                    f.seek(offset)
                    return marker.encode() in f.read()

            return check

        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        checks: dict[str, tuple[str, Callable[[], bool]]] = {
            ETCD: ("GET /health", lambda: _http_ok(f"http://{HOST}:{ports.etcd_client}/health")),
            APISERVER: ("GET /readyz", lambda: api.request("GET", "/readyz")[0] == 200),
            SCHEDULER: (
                "GET /healthz",
                lambda: _http_ok(f"https://{HOST}:{ports.scheduler}/healthz", context=insecure),
            ),
            CONTROLLER_MANAGER: ("informer caches synced (log)", logged('"Caches are synced"')),
            KWOK: ("watching nodes (log)", logged('"Watch nodes"')),
        }
        what, check = checks[component]
        self._wait(component, what, check, deadline, timeout)
        if component != APISERVER:
            what, check = checks[APISERVER]
            self._wait(APISERVER, what, check, deadline, timeout)
        self._write_info()

    def status(self) -> list[ComponentStatus]:
        """Pid and liveness of each component according to the pid files."""
        result = []
        for component in COMPONENTS:
            pid = processes.read_pid_file(self.pid_path(component))
            running = pid is not None and processes.is_alive(pid) and self._owns(pid)
            result.append(ComponentStatus(component, pid, running, self.log_path(component)))
        return result

    def is_ready(self) -> bool:
        """True if the API server of a running cluster in this state directory answers ``/readyz``."""
        try:
            api = self._api or _Api(self.server, self.pki)
            status, _ = api.request("GET", "/readyz", timeout=3.0)
        except (DevClusterError, OSError, ssl.SSLError, http.client.HTTPException):
            return False
        return status == 200

    # ------------------------------------------------------------------------------------ internals
    def _binary_names(self) -> tuple[str, ...]:
        return COMPONENTS

    def _binaries(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for name in COMPONENTS:
            path = self.bin_dir / name
            if not (path.exists() and os.access(path, os.X_OK)):
                raise DevClusterError(
                    f"{name}: binary not found at {path}; run `make tools` (tools/build.sh) to build the "
                    "control-plane binaries (or set FLOWRUN_CACHE to where they were built)",
                    component=name,
                )
            found[name] = path
        return found

    def _owns(self, pid: int) -> bool:
        return processes.belongs_to(pid, self.state_dir, self._binary_names())

    def _pids_from_files(self) -> Iterator[int]:
        if not self.pid_dir.is_dir():
            return
        for path in self.pid_dir.glob("*.pid"):
            pid = processes.read_pid_file(path)
            # Only trust a pid file if the process still runs one of our binaries on this state dir
            # (pids are reused after a reboot or a long time).
            if pid is not None and processes.is_alive(pid) and self._owns(pid):
                yield pid

    def _prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("etcd", "pki", "config"):
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        for path in (self.kubeconfig, self.info_path):
            with contextlib.suppress(OSError):
                path.unlink()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "etcd").mkdir(mode=0o700)
        self.config_dir.mkdir()
        for component in COMPONENTS:
            log = self.log_path(component)
            if log.exists():
                log.replace(log.with_suffix(".log.prev"))

        if self.requested_apiserver_port and not _port_free(self.requested_apiserver_port):
            raise DevClusterError(
                f"{APISERVER}: port {HOST}:{self.requested_apiserver_port} is already taken",
                component=APISERVER,
            )
        free = _free_ports(4)
        self._ports = _Ports(
            etcd_client=free[0],
            etcd_peer=free[1],
            apiserver=self.requested_apiserver_port or free[2],
            scheduler=free[3],
        )

        pki = certs.generate_pki(self.pki.directory, SERVICE_CIDR)
        server = self.server
        self._write_yaml(self.kubeconfig, kubeconfig_dict(server, pki.ca_cert, *self._client("admin")))
        for component in (CONTROLLER_MANAGER, SCHEDULER, KWOK):
            config = kubeconfig_dict(server, pki.ca_cert, *self._client(component), user=component)
            self._write_yaml(self._component_kubeconfig(component), config)
        self._write_yaml(
            self.config_dir / "kube-scheduler.yaml",
            {
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "clientConnection": {
                    "kubeconfig": str(self._component_kubeconfig(SCHEDULER)),
                    "qps": 500,
                    "burst": 1000,
                },
                "leaderElection": {"leaderElect": False},
            },
        )
        (self.config_dir / "kwok.yaml").write_text(stages.kwok_config())
        self._api = _Api(server, pki)

    def _client(self, component: str) -> tuple[Path, Path]:
        return self.pki.client_cert(component), self.pki.client_key(component)

    def _component_kubeconfig(self, component: str) -> Path:
        return self.config_dir / f"{component}.kubeconfig"

    @staticmethod
    def _write_yaml(path: Path, data: dict[str, Any]) -> None:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        path.chmod(0o600)

    def _args(self, component: str) -> list[str]:
        ports = self._ports
        assert ports is not None
        pki = self.pki
        etcd_url = f"http://{HOST}:{ports.etcd_client}"
        if component == ETCD:
            peer = f"http://{HOST}:{ports.etcd_peer}"
            return [
                "--name=devcluster",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=devcluster={peer}",
                "--unsafe-no-fsync",
                "--auto-compaction-retention=1",
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ]
        if component == APISERVER:
            return [
                f"--etcd-servers={etcd_url}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={ports.apiserver}",
                f"--cert-dir={pki.directory}",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--requestheader-client-ca-file={pki.ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.client_cert('front-proxy-client')}",
                f"--proxy-client-key-file={pki.client_key('front-proxy-client')}",
                # The `kubernetes` Service's Endpoints may not hold a loopback address, and no pod runs for
                # real here to use them: do not manage them.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                # It taints every new Node not-ready until the node-lifecycle controller (not run here, see
                # CONTROLLERS) removes the taint; KWOK nodes are Ready at once.
                "--disable-admission-plugins=TaintNodesByCondition",
                # FLOWRUN_APISERVER_PROFILING=1 serves /debug/pprof to read where the API server spends its CPU.
                "--profiling=" + ("true" if os.environ.get("FLOWRUN_APISERVER_PROFILING") == "1" else "false"),
                "--event-ttl=15m",
            ]
        if component == CONTROLLER_MANAGER:
            kubeconfig = self._component_kubeconfig(CONTROLLER_MANAGER)
            return [
                f"--kubeconfig={kubeconfig}",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=" + ",".join(CONTROLLERS),
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--profiling=false",
            ]
        if component == SCHEDULER:
            kubeconfig = self._component_kubeconfig(SCHEDULER)
            return [
                f"--config={self.config_dir / 'kube-scheduler.yaml'}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez",
                f"--bind-address={HOST}",
                f"--secure-port={ports.scheduler}",
                "--profiling=false",
            ]
        if component == KWOK:
            return [
                f"--kubeconfig={self._component_kubeconfig(KWOK)}",
                f"--config={self.config_dir / 'kwok.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={stages.NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=10.240.0.1",
                "--node-lease-duration-seconds=0",
            ]
        raise ValueError(component)

    def _spawn(self, component: str) -> None:
        argv = [str(self.bin_dir / component), *self._args(component)]
        self._spawned[component] = processes.spawn(
            component,
            argv,
            self.log_path(component),
            self.pid_path(component),
            cwd=self.state_dir,
            env=self._component_env(),
            die_with_parent=self.die_with_parent,
        )

    @staticmethod
    def _component_env() -> dict[str, str]:
        # Each component gets explicit flags; ETCD_* variables would override etcd's.
        return {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("ETCD_")}

    def _check_alive(self) -> None:
        for component, spawned in self._spawned.items():
            code = spawned.popen.poll()
            if code is not None:
                raise DevClusterError(
                    f"{component} exited with code {code} during startup",
                    component=component,
                    log_path=spawned.log_path,
                )

    def _wait(
        self, component: str, what: str, check: Callable[[], bool], deadline: float, timeout: float | None = None
    ) -> None:
        while True:
            self._check_alive()
            try:
                ok = check()
            except (OSError, ssl.SSLError, http.client.HTTPException):
                ok = False  # not listening yet, or restarting; a dead process is caught by _check_alive
            if ok:
                return
            if time.monotonic() > deadline:
                self._check_alive()
                raise DevClusterError(
                    f"{component} did not become ready ({what}) within "
                    f"{self.timeout if timeout is None else timeout:.0f}s",
                    component=component,
                    log_path=self.log_path(component),
                )
            time.sleep(0.1)

    def _launch(self) -> None:
        ports = self._ports
        api = self._api
        assert ports is not None and api is not None
        deadline = time.monotonic() + self.timeout

        self._spawn(ETCD)
        self._wait(ETCD, "GET /health", lambda: _http_ok(f"http://{HOST}:{ports.etcd_client}/health"), deadline)
        self._spawn(APISERVER)

        self._wait(APISERVER, "GET /readyz", lambda: api.request("GET", "/readyz")[0] == 200, deadline)

        for component in (CONTROLLER_MANAGER, SCHEDULER, KWOK):
            self._spawn(component)
        for index in range(self.node_count):
            name = stages.NODE_NAME if index == 0 else f"kwok-node-{index}"
            try:
                status, body = api.request("POST", "/api/v1/nodes", stages.node_manifest(name))
            except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                status, body = 0, repr(e)
            if status not in (200, 201, 409):
                raise DevClusterError(
                    f"{APISERVER}: creating node {name} failed: HTTP {status}: {body}",
                    component=APISERVER,
                    log_path=self.log_path(APISERVER),
                )

        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._wait(
            SCHEDULER,
            "GET /healthz",
            lambda: _http_ok(f"https://{HOST}:{ports.scheduler}/healthz", context=insecure),
            deadline,
        )
        self._wait(
            CONTROLLER_MANAGER,
            "ServiceAccount default/default exists",
            lambda: api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            deadline,
        )

        def nodes_ready() -> bool:
            status, body = api.request("GET", f"/api/v1/nodes?labelSelector=type%3D{KWOK}")
            if status != 200 or not isinstance(body, dict):
                return False
            ready = 0
            for node in body.get("items", []):
                for cond in node.get("status", {}).get("conditions", []) or []:
                    if cond.get("type") == "Ready" and cond.get("status") == "True":
                        ready += 1
            return ready >= self.node_count

        self._wait(KWOK, f"{self.node_count} node(s) Ready", nodes_ready, deadline)
        self._write_info()

    def _write_info(self) -> None:
        ports = self._ports
        assert ports is not None
        self.info_path.write_text(
            json.dumps(
                {
                    "server": self.server,
                    "kubeconfig": str(self.kubeconfig),
                    "ports": dataclasses.asdict(ports),
                    "pids": {name: s.pid for name, s in self._spawned.items()},
                },
                indent=2,
            )
            + "\n"
        )
