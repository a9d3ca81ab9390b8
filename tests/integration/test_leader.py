"""Two operator replicas with leader election on the real control plane.

Only the holder of the Lease acts: while a third party holds it, both replicas wait, and independent
watches on Jobs and FlowRuns see no Job created and no status written over that whole window. Once the
Lease is released exactly one replica takes it. SIGKILLed in the middle of a burst of runs behind a
ConcurrencyLimit, the leader is replaced by the standby (measured from the kill to the Lease changing
hands, and to the new leader serving with a freshly listed view), no instant has more unfinished Jobs than the limit (an
independent Job watcher), and every run finishes with exactly one Job. A clean shutdown releases the Lease.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from support.flowruns import flowrun, selector_limit
from support.kube import Cluster, Kubectl, api_client, wait_for
from support.operator import REPO, JobWatcher
from support.replicas import EventLog, Replica, holders, lease_holder, put_lease

pytestmark = pytest.mark.integration

LIMIT = 2
# Two long runs go first (higher priority) and are still running when the new leader starts, so it must
# count the old leader's Jobs as holders; the short ones follow through the freed slots.
LONG_RUNS, LONG_SECONDS = 2, 17.0
SHORT_RUNS, SHORT_SECONDS = 6, 1.5
WINDOW_SECONDS = 3.0
# The chart's timings (values.yaml, leaderElection): what a Deployment of the chart runs with.
_ELECTION = yaml.safe_load((REPO / "charts" / "flowrun-operator" / "values.yaml").read_text())["leaderElection"]
LEASE_SECONDS = float(_ELECTION["leaseDurationSeconds"])
RENEW_DEADLINE = float(_ELECTION["renewDeadlineSeconds"])
RETRY_PERIOD = float(_ELECTION["retryPeriodSeconds"])
TAKEOVER_BOUND = 15.0
# Serving also includes the new leader's startup: a fresh list of runs, Jobs and limits (and schedules). On a
# loaded 2-core machine the API server's lists alone took up to 5 s, hence the margin.
SERVING_BOUND = TAKEOVER_BOUND + 5


@pytest.fixture
def replicas(crds: None, namespace: str, tmp_path: Path) -> Iterator[list[Replica]]:
    made = [
        Replica(
            name,
            [namespace],
            namespace,
            tmp_path,
            lease_duration=LEASE_SECONDS,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
        )
        for name in ("replica-a", "replica-b")
    ]
    try:
        yield made
    finally:
        for replica in made:
            replica.stop()
        for replica in made:
            tracebacks = [line for line in replica.logs().splitlines() if "Traceback" in line]
            assert not tracebacks, f"{replica.identity} logged tracebacks:\n{replica.logs()[-5000:]}"


def phases(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    items = kubectl.json("get", "flowruns", namespace=namespace)["items"]
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in items}


def serving(replica: Replica) -> bool:
    """The replica's liveness endpoint is Kopf's: it leads and its startup (a fresh list) is done."""
    try:
        return "leader" not in replica.health()
    except OSError:
        return False


def unfinished_at(log: EventLog, moment: float) -> set[str]:
    """The Jobs that existed and had not finished at `moment`, replayed from a Job event log."""
    unfinished: set[str] = set()
    for event in log.snapshot():
        if event.at > moment:
            break
        name = event.obj["metadata"]["name"]
        done = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (event.obj.get("status") or {}).get("conditions") or []
        )
        if event.type == "DELETED" or done:
            unfinished.discard(name)
        else:
            unfinished.add(name)
    return unfinished


def test_only_the_leader_acts_and_the_standby_takes_over_without_over_admission(
    cluster: Cluster, kubectl: Kubectl, namespace: str, replicas: list[Replica]
) -> None:
    from kubernetes import client

    api = api_client(cluster.kubeconfig)
    custom, batch, coordination = client.CustomObjectsApi(api), client.BatchV1Api(api), client.CoordinationV1Api(api)
    # Another party holds the Lease for a minute: both replicas must wait.
    put_lease(cluster.kubeconfig, namespace, "someone-else", duration=60)

    with (
        EventLog(coordination.list_namespaced_lease, namespace) as lease_log,
        EventLog(custom.list_namespaced_custom_object, "flowrun.io", "v1alpha1", namespace, "flowruns") as run_log,
        EventLog(batch.list_namespaced_job, namespace) as job_log,
        JobWatcher(cluster.kubeconfig, namespace, {"limited": lambda job: True}) as job_watcher,
    ):
        with ThreadPoolExecutor(2) as pool:  # both at once, to keep the test short
            list(pool.map(Replica.start, replicas))
        for replica in replicas:
            wait_for(
                lambda r=replica: "the Lease is held by someone-else" in r.logs(),  # type: ignore[misc]
                timeout=15,
                message=f"{replica.identity} waiting for leadership",
            )
            assert replica.health()["leader"] is False
            assert replica.metric("flowrun_leader") == 0

        kubectl.apply(selector_limit("team-a", {"team": "a"}, LIMIT), namespace)
        long_names = [f"long-{i}" for i in range(LONG_RUNS)]
        names = long_names + [f"short-{i}" for i in range(SHORT_RUNS)]
        kubectl.apply(
            [flowrun(n, duration=LONG_SECONDS, labels={"team": "a"}, priority=10) for n in long_names]
            + [flowrun(n, duration=SHORT_SECONDS, labels={"team": "a"}) for n in names[LONG_RUNS:]],
            namespace,
        )
        wait_for(lambda: len(phases(kubectl, namespace)) == len(names), timeout=15, message="all runs created")
        # The window: many retry periods of both replicas, with work waiting for them.
        time.sleep(WINDOW_SECONDS)
        window_end = time.monotonic()

        # Nothing acted while neither replica held the Lease: no Job, no status, no other holder.
        assert [e for e in job_log.snapshot() if e.at <= window_end] == []
        statuses = [e for e in run_log.snapshot() if e.at <= window_end and e.obj.get("status")]
        assert statuses == [], f"a standby wrote a status: {statuses[0].obj['metadata']['name']}"
        assert [h for _, h in holders(lease_log)] == ["someone-else"]
        assert all("became leader" not in r.logs() for r in replicas)

        # Released: exactly one replica takes the Lease and starts working.
        released_at = time.monotonic()
        put_lease(cluster.kubeconfig, namespace, None)
        leader_id = wait_for(
            lambda: next((h for _, h in holders(lease_log) if h in ("replica-a", "replica-b")), None),
            timeout=10,
            message="a replica holding the Lease",
        )
        acquired_at = next(t for t, h in holders(lease_log) if h == leader_id)
        leader = next(r for r in replicas if r.identity == leader_id)
        standby = next(r for r in replicas if r.identity != leader_id)
        print(f"acquired {acquired_at - released_at:.2f}s after the release")
        assert leader.metric("flowrun_leader") == 1
        assert acquired_at - released_at <= 2 * (1 + 1.2) * RETRY_PERIOD + 1

        # Mid-burst: the limit full with the long runs, the short ones waiting.
        wait_for(lambda: job_watcher.count("limited") == LIMIT, timeout=20, message="the limit in use")
        assert all(n.startswith("long-") for n in job_watcher.created_order), job_watcher.created_order
        assert "became leader" not in standby.logs() and standby.health()["leader"] is False
        assert standby.metric("flowrun_leader") == 0
        assert standby.exit_code() is None

        leader.kill()
        killed_at = time.monotonic()
        assert leader.exit_code() == -9

        def taken_over() -> float | None:
            return next((t for t, h in holders(lease_log) if h == standby.identity), None)

        took_at = wait_for(taken_over, timeout=TAKEOVER_BOUND + 5, message="the standby taking the Lease")
        wait_for(lambda: serving(standby), timeout=SERVING_BOUND + 5, interval=0.05, message="the new leader up")
        ready_at = time.monotonic()
        takeover, ready = took_at - killed_at, ready_at - killed_at
        print(f"SIGKILL -> Lease taken {takeover:.2f}s, -> new leader serving (view rebuilt) {ready:.2f}s")
        assert takeover <= TAKEOVER_BOUND
        assert ready <= SERVING_BOUND
        # The old leader's Jobs were still running when the new one started deciding: it had to count them.
        assert len(unfinished_at(job_log, took_at)) == LIMIT

        wait_for(
            lambda: all(p == "Succeeded" for p in phases(kubectl, namespace).values()),
            timeout=60,
            interval=0.25,
            message="every run Succeeded",
        )
        assert job_watcher.error is None, job_watcher.error
        assert job_watcher.max_seen["limited"] <= LIMIT, job_watcher.max_seen
        assert job_watcher.max_seen["limited"] == LIMIT  # the limit was used, so the check had teeth

    # Exactly one Job per run: the new leader adopted the Jobs the old one created, never made a second.
    jobs = kubectl.json("get", "jobs", namespace=namespace)["items"]
    per_run: dict[str, int] = {}
    for job in jobs:
        run = job["metadata"]["labels"]["flowrun.io/run"]
        per_run[run] = per_run.get(run, 0) + 1
    assert per_run == dict.fromkeys(names, 1)

    # A clean shutdown (SIGTERM) hands the Lease back at once.
    standby.stop()
    assert standby.exit_code() == 0, standby.logs()[-3000:]
    assert "released Lease" in standby.logs()
    assert lease_holder(cluster.kubeconfig, namespace) is None


def test_a_leader_that_sees_another_holder_exits_at_once(
    cluster: Cluster, namespace: str, replicas: list[Replica]
) -> None:
    """If the Lease is taken from under it (here: overwritten by another party), the leader stops acting
    on its next renewal: it exits non-zero, without releasing the Lease it no longer holds."""
    replica = replicas[0]
    replica.start()
    wait_for(lambda: lease_holder(cluster.kubeconfig, namespace) == replica.identity, timeout=15, message="leader")
    wait_for(lambda: replica.metric("flowrun_leader") == 1, timeout=5, message="flowrun_leader 1")
    put_lease(cluster.kubeconfig, namespace, "intruder", duration=60)
    taken_at = time.monotonic()
    assert replica.proc is not None
    code = replica.proc.wait(timeout=2 * (1 + 1.2) * RETRY_PERIOD + 5)
    print(f"leader exited {time.monotonic() - taken_at:.2f}s after losing the Lease")
    assert code == 1
    assert "leadership lost: the Lease is now held by intruder" in replica.logs()
    assert lease_holder(cluster.kubeconfig, namespace) == "intruder"
