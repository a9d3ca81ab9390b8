"""Leader election through a coordination.k8s.io/v1 Lease, with client-go's semantics.

Only the replica holding the Lease runs the operator; the others wait. The rules, as in client-go's
leaderelection package:

- A Lease held by another identity is taken only once it has expired or been released. Expiry is
  measured on this replica's own monotonic clock, from the moment it last *saw the record change*
  (not from the holder's renewTime), so clock skew between nodes cannot make a live Lease look
  expired.
- Every write carries the resourceVersion it read: a 409 means another replica won this round.
- The holder renews every retry period. If no renewal has succeeded within the renew deadline (counted
  from the start of the last successful request), the process exits at once: a standby may take the
  Lease `leaseDuration` after it last saw it change, and the renew deadline is shorter than that, so
  the old leader stops acting before a new one can start.
- On a clean shutdown the holder releases the Lease (empty holderIdentity) so a standby takes over on
  its next retry instead of waiting for the Lease to expire.

The renewal runs in threads of its own, not on the operator's event loop: a busy or blocked loop must
neither delay renewals nor delay the exit when they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from flowrun_operator import metrics

log = logging.getLogger("flowrun_operator.leader")

LEASE_NAME = "flowrun-operator"
# client-go's defaults (kube-controller-manager, kube-scheduler).
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0
# client-go's JitterFactor: a retry waits between retryPeriod and retryPeriod * (1 + JITTER).
JITTER = 1.2
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MICROTIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


# --------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    namespace: str
    identity: str
    name: str = LEASE_NAME
    lease_duration: float = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD

    def __post_init__(self) -> None:
        # The same checks as client-go's NewLeaderElector: without them the old leader could still be
        # acting when a standby takes over.
        if self.retry_period <= 0:
            raise ValueError(f"leader election: retry period must be > 0, got {self.retry_period:g}s")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"leader election: lease duration ({self.lease_duration:g}s) must be greater than the renew "
                f"deadline ({self.renew_deadline:g}s)"
            )
        if self.renew_deadline <= JITTER * self.retry_period:
            raise ValueError(
                f"leader election: renew deadline ({self.renew_deadline:g}s) must be greater than "
                f"{JITTER:g} x the retry period ({self.retry_period:g}s)"
            )
        if not self.identity:
            raise ValueError("leader election: the identity must not be empty")

    @property
    def request_timeout(self) -> tuple[float, float]:
        """(connect, read) socket timeouts of one Lease request: a hung call must end well within the
        renew deadline so the next attempt still has time."""
        return (max(0.5, min(self.retry_period, 2.0)), max(1.0, self.renew_deadline / 2))


def default_identity() -> str:
    """The Pod's name (downward API, env POD_NAME) or, outside a Pod, hostname_pid."""
    pod = os.environ.get("POD_NAME", "").strip()
    return pod or f"{socket.gethostname()}_{os.getpid()}"


def default_namespace() -> str:
    """The Pod's namespace: env POD_NAMESPACE (downward API), else the ServiceAccount's namespace file,
    else 'default'."""
    env = os.environ.get("POD_NAMESPACE", "").strip()
    if env:
        return env
    try:
        found = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        found = ""
    return found or "default"


# ------------------------------------------------------------------------------------------ pure parts


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The election fields of a Lease's spec."""

    holder: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        # holderIdentity null (not "") is what a released Lease looks like to other clients, too.
        return {
            "holderIdentity": self.holder or None,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


def observed_at(previous: LeaseRecord | None, previous_at: float, current: LeaseRecord, now: float) -> float:
    """When this replica first saw `current`: a record that changed since the last read restarts the
    clock; an unchanged one keeps the time it was first seen."""
    return previous_at if previous == current else now


def expired(record: LeaseRecord, seen_at: float, now: float) -> bool:
    """A Lease is free once its record has stayed unchanged for its leaseDurationSeconds since it was seen."""
    return seen_at + record.lease_duration_seconds <= now


def can_take(record: LeaseRecord | None, seen_at: float, now: float, identity: str) -> bool:
    """May `identity` write itself as holder: no Lease yet, released, already its own, or expired."""
    if record is None or not record.holder or record.holder == identity:
        return True
    return expired(record, seen_at, now)


def next_record(record: LeaseRecord | None, identity: str, lease_duration: float, stamp: str) -> LeaseRecord:
    """The record to write to acquire or renew: a renewal keeps acquireTime and transitions, a change of
    holder counts one more transition."""
    duration = max(1, round(lease_duration))
    if record is not None and record.holder == identity:
        return LeaseRecord(identity, duration, record.acquire_time or stamp, stamp, record.transitions)
    transitions = 0 if record is None else record.transitions + (1 if record.holder else 0)
    return LeaseRecord(identity, duration, stamp, stamp, transitions)


def released_record(record: LeaseRecord, stamp: str) -> LeaseRecord:
    """What a clean shutdown writes (as client-go's ReleaseOnCancel): no holder, a 1 s duration."""
    return LeaseRecord("", 1, stamp, stamp, record.transitions)


def renew_overdue(last_renewed: float, now: float, renew_deadline: float) -> bool:
    """The holder must stop acting: its last successful renewal started `renew_deadline` or more ago."""
    return now - last_renewed >= renew_deadline


def retry_delay(retry_period: float, rng: random.Random | None = None) -> float:
    """client-go's wait.Jitter(retryPeriod, 1.2): uniform in [retryPeriod, retryPeriod * 2.2)."""
    return retry_period * (1 + JITTER * (rng or random).random())


def microtime(moment: datetime | None = None) -> str:
    """A metav1.MicroTime: always six fractional digits, UTC with a Z."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(MICROTIME_FORMAT)


# ------------------------------------------------------------------------------------------- API calls


def lease_api() -> Any:
    """A CoordinationV1Api on a connection pool of its own (renewals never queue behind the operator's
    traffic), without urllib3's silent retries (a request's time is bounded by its own timeout)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.retries = False
    return kubernetes.client.CoordinationV1Api(kubernetes.client.ApiClient(configuration))


def _reason(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"[:300]


class LeaderElector:
    """Acquire, renew and release one Lease. `api` is a CoordinationV1Api (duck-typed for tests);
    `on_lost` is called from the watchdog thread when renewal failed past the deadline (default: exit)."""

    def __init__(
        self,
        config: ElectionConfig,
        api: Any = None,
        *,
        on_lost: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.api = api if api is not None else lease_api()
        self.on_lost = on_lost or exit_on_lost
        self.clock = clock
        self._lock = threading.Lock()
        self._record: LeaseRecord | None = None
        self._seen_at = 0.0
        self._version: str | None = None
        self._leading = False
        self._last_renewed = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def holder(self) -> str:
        """The holder as last read ("" when none or unknown)."""
        return self._record.holder if self._record is not None else ""

    def _warn(self, action: str, error: BaseException) -> None:
        cfg = self.config
        log.warning("leader election: %s Lease %s/%s failed: %s", action, cfg.namespace, cfg.name, _reason(error))

    # -- one round, as client-go's tryAcquireOrRenew (blocking; run it in a thread)

    def try_acquire_or_renew(self) -> bool:
        cfg = self.config
        with self._lock:
            started = self.clock()
            try:
                response = self.api.read_namespaced_lease(
                    cfg.name, cfg.namespace, _preload_content=False, _request_timeout=cfg.request_timeout
                )
                lease: dict[str, Any] | None = json.loads(response.data)
            except ApiException as error:
                if error.status != 404:
                    self._warn("reading", error)
                    return False
                lease = None
            except Exception as error:
                self._warn("reading", error)
                return False

            now = self.clock()
            record = LeaseRecord.from_lease(lease) if lease is not None else None
            if record is not None:
                self._seen_at = observed_at(self._record, self._seen_at, record, now)
            self._record = record
            if not can_take(record, self._seen_at, now, cfg.identity):
                return False

            wanted = next_record(record, cfg.identity, cfg.lease_duration, microtime())
            try:
                if lease is None:
                    body = {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                        "spec": wanted.to_spec(),
                    }
                    response = self.api.create_namespaced_lease(
                        cfg.namespace, body, _preload_content=False, _request_timeout=cfg.request_timeout
                    )
                else:
                    meta = lease.get("metadata") or {}
                    body = {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {
                            "name": cfg.name,
                            "namespace": cfg.namespace,
                            # Optimistic concurrency: a 409 means another replica wrote since this read.
                            "resourceVersion": meta.get("resourceVersion"),
                        },
                        "spec": {**(lease.get("spec") or {}), **wanted.to_spec()},
                    }
                    response = self.api.replace_namespaced_lease(
                        cfg.name, cfg.namespace, body, _preload_content=False, _request_timeout=cfg.request_timeout
                    )
                stored: dict[str, Any] = json.loads(response.data)
            except ApiException as error:
                if error.status != 409:
                    self._warn("writing", error)
                return False
            except Exception as error:
                self._warn("writing", error)
                return False

            self._record = LeaseRecord.from_lease(stored)
            self._seen_at = self.clock()
            self._version = (stored.get("metadata") or {}).get("resourceVersion")
            # Measured from before the read: others count the Lease's life from when they see this write,
            # which is later, so the holder's deadline is conservative.
            self._last_renewed = started
            return True

    # -- acquiring (async: the waiting replica's event loop stays free for its standby health endpoint)

    async def acquire(self) -> None:
        """Return once this replica holds the Lease; retry every retry period (jittered) until then."""
        cfg = self.config
        log.info(
            "waiting for leadership: Lease %s/%s, identity %s (lease %gs, renew deadline %gs, retry %gs)",
            cfg.namespace,
            cfg.name,
            cfg.identity,
            cfg.lease_duration,
            cfg.renew_deadline,
            cfg.retry_period,
        )
        reported = ""
        while True:
            if await asyncio.to_thread(self.try_acquire_or_renew):
                break
            if self.holder and self.holder != reported:
                reported = self.holder
                log.info("waiting for leadership: the Lease is held by %s", reported)
            await asyncio.sleep(retry_delay(cfg.retry_period))
        self._leading = True
        metrics.IS_LEADER.set(1)
        log.info("became leader: Lease %s/%s held by %s", cfg.namespace, cfg.name, cfg.identity)

    # -- holding

    def start_renewing(self) -> None:
        """Renew in a thread every retry period; a watchdog thread calls `on_lost` once no renewal has
        succeeded within the renew deadline."""
        if not self._leading:
            raise RuntimeError("start_renewing() before acquire()")
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True),
            threading.Thread(target=self._watchdog, name="lease-watchdog", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.config.retry_period):
            if self.try_acquire_or_renew():
                log.debug("renewed Lease %s/%s", self.config.namespace, self.config.name)
            elif self.holder and self.holder != self.config.identity:
                # Someone else holds it: only possible if this replica was already past its deadline.
                self._lose(f"the Lease is now held by {self.holder}")
                return

    def _watchdog(self) -> None:
        deadline = self.config.renew_deadline
        while not self._stop.is_set():
            remaining = self._last_renewed + deadline - self.clock()
            if renew_overdue(self._last_renewed, self.clock(), deadline):
                self._lose(f"no successful renewal for {deadline:g}s (renew deadline)")
                return
            self._stop.wait(min(max(remaining, 0.01), 0.25))

    def _lose(self, why: str) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._leading = False
        metrics.IS_LEADER.set(0)
        self.on_lost(why)

    def stop_renewing(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=self.config.renew_deadline)
        self._threads = []

    def release(self) -> bool:
        """Stop renewing and hand the Lease back (blocking). True when it was released."""
        self.stop_renewing()
        if not self._leading:
            return False
        self._leading = False
        metrics.IS_LEADER.set(0)
        cfg = self.config
        with self._lock:
            record, version = self._record, self._version
            if record is None or record.holder != cfg.identity or version is None:
                return False
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace, "resourceVersion": version},
                "spec": released_record(record, microtime()).to_spec(),
            }
            try:
                response = self.api.replace_namespaced_lease(
                    cfg.name, cfg.namespace, body, _preload_content=False, _request_timeout=cfg.request_timeout
                )
                response.data  # noqa: B018  (read to the end: the connection goes back to the pool)
            except Exception as error:
                # 409: renewed or taken since; either way the Lease expires on its own.
                self._warn("releasing", error)
                return False
        log.info("released Lease %s/%s", cfg.namespace, cfg.name)
        return True


def exit_on_lost(why: str) -> None:
    """Stop acting at once: log, flush, and exit non-zero without running any cleanup that could write."""
    log.critical("leadership lost: %s; exiting so this replica restarts as a standby", why)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(1)


# ------------------------------------------------------------------------------- standby health endpoint


class StandbyHealth:
    """Answers the liveness endpoint while this replica waits for leadership (Kopf's own endpoint starts
    only with the operator): the process is alive, and the body says it is a standby."""

    def __init__(self, endpoint: str, elector: LeaderElector) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme != "http":
            raise ValueError(f"unsupported liveness endpoint {endpoint!r}: only http:// is served")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.elector = elector
        self._runner: Any = None

    async def start(self) -> None:
        import aiohttp.web

        async def health(request: aiohttp.web.Request) -> aiohttp.web.Response:
            return aiohttp.web.json_response(
                {"leader": False, "identity": self.elector.config.identity, "holder": self.elector.holder}
            )

        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.get(self.path, health)])
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
