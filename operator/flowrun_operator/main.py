"""`flowrun-operator`: run the operator against the cluster in $KUBECONFIG (or in-cluster credentials)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import kopf

import flowrun_operator.schedules.handlers  # noqa: F401  (registers the FlowSchedule controller)
from flowrun_operator import leader, memory, metrics, settings
from flowrun_operator.engine import refreshes_per_departure
from flowrun_operator.handlers import operator as _handlers  # noqa: F401  (registers the handlers)
from flowrun_operator.handlers import probes  # also registers the engine's liveness check
from flowrun_operator.handlers.operator import EventMemories

T = TypeVar("T")


def main(argv: list[str] | None = None) -> None:
    memory.few_malloc_arenas()
    parser = argparse.ArgumentParser(prog="flowrun-operator", description=__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="namespace to watch (repeatable); default: $WATCH_NAMESPACES (comma-separated) or all namespaces",
    )
    parser.add_argument(
        "--liveness", default=os.environ.get("LIVENESS_ENDPOINT"), help="e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=_setting(settings.env_int, "METRICS_PORT", 0),
        help="serve Prometheus metrics on this port at /metrics; 0 (the default): off (env METRICS_PORT)",
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=settings.env_flag("LEADER_ELECT"),
        help="run only while holding the Lease 'flowrun-operator' (env LEADER_ELECT; default off)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("LEADER_ELECTION_NAMESPACE") or None,
        help="namespace of the Lease; default: $POD_NAMESPACE, the ServiceAccount's namespace, else 'default'",
    )
    for flag, env, value, what in (
        ("lease-duration", "LEADER_ELECTION_LEASE_DURATION", leader.DEFAULT_LEASE_DURATION, "a standby waits"),
        ("renew-deadline", "LEADER_ELECTION_RENEW_DEADLINE", leader.DEFAULT_RENEW_DEADLINE, "the leader retries"),
        ("retry-period", "LEADER_ELECTION_RETRY_PERIOD", leader.DEFAULT_RETRY_PERIOD, "between attempts"),
    ):
        parser.add_argument(
            f"--leader-election-{flag}",
            type=float,
            default=_setting(settings.env_float, env, value, what="a number of seconds"),
            help=f"seconds {what} (env {env}; default {value:g})",
        )
    args = parser.parse_args(argv)
    election: leader.ElectionConfig | None = None
    if args.leader_elect:
        try:
            election = leader.ElectionConfig(
                namespace=args.leader_election_namespace or leader.default_namespace(),
                identity=leader.default_identity(),
                lease_duration=args.leader_election_lease_duration,
                renew_deadline=args.leader_election_renew_deadline,
                retry_period=args.leader_election_retry_period,
            )
        except ValueError as error:
            parser.error(str(error))
    try:
        probes.stall_seconds()  # a bad LIVENESS_STALL_SECONDS fails here, not in every probe
        refreshes_per_departure()  # and a bad POSITION_REFRESHES_PER_DEPARTURE here, not at startup
    except ValueError as error:
        parser.error(str(error))
    if not 0 <= args.metrics_port <= 65535:
        parser.error(f"--metrics-port must be 0..65535, got {args.metrics_port}")

    namespaces = args.namespace or [n for n in os.environ.get("WATCH_NAMESPACES", "").split(",") if n.strip()]
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    asyncio.run(run(namespaces, args.liveness, election))


async def run(namespaces: list[str], liveness: str | None, election: leader.ElectionConfig | None) -> None:
    """Run the operator; with `election`, only while holding the Lease. Nothing of the operator (no
    handler, no list, no write) starts before the Lease is held: the engine's startup handler lists
    everything afresh, so a new leader decides from the cluster's state, not from a stale view."""
    elector: leader.LeaderElector | None = None
    if election is not None:
        elector = leader.LeaderElector(election)
        standby = leader.StandbyHealth(liveness, elector) if liveness else None
        if standby is not None:
            await standby.start()
        try:
            await elector.acquire()
        finally:
            if standby is not None:
                await standby.stop()
        elector.start_renewing()
    trimmer = asyncio.create_task(memory.trim_periodically(), name="flowrun-malloc-trim")
    memory.tune_garbage_collection()
    try:
        await kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            memo=kopf.Memo(namespaces=namespaces),
            memories=EventMemories(),
        )
    finally:
        trimmer.cancel()
        if elector is not None:
            # After Kopf has stopped every handler: a standby may start the moment this lands.
            await asyncio.to_thread(elector.release)


def _setting(read: Callable[..., T], name: str, default: T, **checks: Any) -> T:
    """A setting for an option's default: a bad value stops the operator before argparse runs."""
    try:
        return read(name, default, **checks)
    except ValueError as error:
        raise SystemExit(f"flowrun-operator: {error}") from None


if __name__ == "__main__":
    main()
