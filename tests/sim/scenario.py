"""Scenarios as plain data (printable, replayable) and the hypothesis strategies that generate them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from hypothesis import strategies as st

NAMESPACES = ("ns-a", "ns-b")
# Names chosen to collide: run "a" task "x" and run "a-x" both map to Job "a-x-1" under plain naming.
RUN_NAMES = ("a", "b", "c", "d", "a-x", "b-y", "e", "f")
TASK_NAMES = ("x", "y", "z")
TAGS = ("db", "gpu")
TEAMS = ("red", "blue")
FOREVER = 1e6  # a pod that runs until it is deleted


@dataclass(frozen=True)
class LimitDef:
    name: str
    namespace: str
    limit: int
    team: str | None = None  # selector matchLabels {team: ...}
    tag: str | None = None

    def body(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"limit": self.limit}
        if self.tag:
            spec["tag"] = self.tag
        else:
            spec["selector"] = {"matchLabels": {"team": self.team}} if self.team else {}
        return {
            "apiVersion": "flowrun.io/v1alpha1",
            "kind": "ConcurrencyLimit",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }


@dataclass(frozen=True)
class TaskDef:
    name: str
    depends_on: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    retries: int | None = None


@dataclass(frozen=True)
class RunDef:
    name: str
    namespace: str = "ns-a"
    team: str | None = None
    priority: int = 0
    retries: int = 0
    retry_delay: int = 0
    timeout: int | None = None
    scheduled_in: int | None = None  # scheduledStart, seconds after the run's creation
    tasks: tuple[TaskDef, ...] | None = None
    start_after: float = 0.5
    run_for: float = 3.0
    failing_attempts: int = 0  # the first N attempts of each unit fail

    def body(self, now: float) -> dict[str, Any]:
        from sim.vloop import timestamp

        template = {"spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}]}}
        spec: dict[str, Any] = {
            "flow": "f",
            "priority": self.priority,
            "retries": self.retries,
            "retryDelaySeconds": self.retry_delay,
        }
        if self.tasks:
            spec["tasks"] = [
                {
                    "name": t.name,
                    "template": template,
                    "dependsOn": list(t.depends_on),
                    "tags": list(t.tags),
                    **({"retries": t.retries} if t.retries is not None else {}),
                }
                for t in self.tasks
            ]
        else:
            spec["template"] = template
        if self.timeout is not None:
            spec["timeoutSeconds"] = self.timeout
        if self.scheduled_in is not None:
            spec["scheduledStart"] = timestamp(now + self.scheduled_in)
        return {
            "apiVersion": "flowrun.io/v1alpha1",
            "kind": "FlowRun",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"team": self.team} if self.team else {},
            },
            "spec": spec,
        }


@dataclass(frozen=True)
class Action:
    """One thing that happens at virtual time `at`.

    kinds: create_run (target: run index), cancel, delete_run, recreate_run, delete_job (the run's newest Job),
    create_limit (target: limit index), set_limit (value), delete_limit, drop_watch (target: kind), resync,
    crash, quota (target: namespace; value: seconds Job creation is refused with 403 "exceeded quota").
    """

    at: float
    kind: str
    target: str | int = 0
    value: int = 0


@dataclass(frozen=True)
class Scenario:
    runs: tuple[RunDef, ...] = ()
    limits: tuple[LimitDef, ...] = ()
    actions: tuple[Action, ...] = ()
    seed: int = 0  # delivery delays, latencies and fault draws
    max_delay: float = 0.05  # watch delivery delay bound
    coalesce: bool = False  # deliver only the newest of a burst of events per object (as Kopf batches)
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = ()
    crash_rate: float = 0.0  # per API call: crash the operator at that await
    grace: float = 5.0
    latency: float = 0.005

    def describe(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        data = json.loads(text)

        def run(r: dict[str, Any]) -> RunDef:
            tasks = r.pop("tasks")
            return RunDef(
                **r,
                tasks=tuple(TaskDef(t["name"], tuple(t["depends_on"]), tuple(t["tags"]), t["retries"]) for t in tasks)
                if tasks
                else None,
            )

        return cls(
            runs=tuple(run(r) for r in data.pop("runs")),
            limits=tuple(LimitDef(**limit) for limit in data.pop("limits")),
            actions=tuple(Action(**a) for a in data.pop("actions")),
            fault_kinds=tuple(data.pop("fault_kinds")),
            **data,
        )


# ------------------------------------------------------------------------------------ strategies

FAULTS = ("500", "503", "429", "409", "403quota", "reset", "timeout_before", "timeout_after", "hang")
ACTION_KINDS = (
    "cancel",
    "cancel",
    "delete_run",
    "recreate_run",
    "delete_job",
    "set_limit",
    "set_limit",
    "delete_limit",
    "drop_watch",
    "resync",
    "crash",
    "quota",
)


@st.composite
def task_defs(draw: st.DrawFn) -> tuple[TaskDef, ...]:
    count = draw(st.integers(1, 3))
    tasks: list[TaskDef] = []
    for index in range(count):
        name = TASK_NAMES[index]
        earlier = [t.name for t in tasks]
        depends = tuple(sorted(draw(st.sets(st.sampled_from(earlier), max_size=len(earlier))))) if earlier else ()
        tags = tuple(sorted(draw(st.sets(st.sampled_from(TAGS), max_size=1))))
        retries = draw(st.one_of(st.none(), st.integers(0, 1)))
        tasks.append(TaskDef(name=name, depends_on=depends, tags=tags, retries=retries))
    return tuple(tasks)


@st.composite
def run_defs(draw: st.DrawFn, name: str, namespaces: tuple[str, ...]) -> RunDef:
    return RunDef(
        name=name,
        namespace=draw(st.sampled_from(namespaces)),
        team=draw(st.one_of(st.none(), st.sampled_from(TEAMS))),
        priority=draw(st.sampled_from((0, 0, 1, -1))),
        retries=draw(st.integers(0, 2)),
        retry_delay=draw(st.sampled_from((0, 1, 5))),
        timeout=draw(st.sampled_from((None, None, None, 2, 20))),
        scheduled_in=draw(st.sampled_from((None, None, None, 3, 30))),
        tasks=draw(st.one_of(st.none(), task_defs())),
        start_after=draw(st.sampled_from((0.0, 0.5, 2.0))),
        run_for=draw(st.sampled_from((0.5, 3.0, 10.0, 40.0, FOREVER))),
        failing_attempts=draw(st.sampled_from((0, 0, 1, 3))),
    )


@st.composite
def scenarios(draw: st.DrawFn, *, faults: bool = True, crashes: bool = True) -> Scenario:
    namespaces = NAMESPACES[: draw(st.integers(1, 2))]
    names = draw(st.lists(st.sampled_from(RUN_NAMES), min_size=1, max_size=7, unique=True))
    runs = tuple(draw(run_defs(name, namespaces)) for name in names)
    limits: list[LimitDef] = []
    for index in range(draw(st.integers(0, 3))):
        tagged = draw(st.booleans())
        limits.append(
            LimitDef(
                name=f"l{index}",
                namespace=draw(st.sampled_from(namespaces)),
                limit=draw(st.integers(0, 3)),
                team=None if tagged else draw(st.one_of(st.none(), st.sampled_from(TEAMS))),
                tag=draw(st.sampled_from(TAGS)) if tagged else None,
            )
        )
    times = st.sampled_from((0.0, 0.0, 0.3, 1.0, 2.5, 5.0, 8.0, 15.0, 30.0))
    actions = [Action(at=draw(times), kind="create_run", target=i) for i in range(len(runs))]
    limit_times = st.sampled_from((0.0, 0.0, 0.0, 4.0))
    actions += [Action(at=draw(limit_times), kind="create_limit", target=i) for i in range(len(limits))]
    kinds = [k for k in ACTION_KINDS if (crashes or k != "crash") and (faults or k not in ("quota",))]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(kinds))
        at = draw(times) + draw(st.sampled_from((0.0, 0.05, 0.5)))
        if kind in ("cancel", "delete_run", "recreate_run", "delete_job"):
            actions.append(Action(at=at, kind=kind, target=draw(st.integers(0, len(runs) - 1))))
        elif kind in ("set_limit", "delete_limit"):
            if limits:
                target, value = draw(st.integers(0, len(limits) - 1)), draw(st.integers(0, 3))
                actions.append(Action(at=at, kind=kind, target=target, value=value))
        elif kind == "drop_watch":
            stream = draw(st.sampled_from(("flowruns", "jobs", "concurrencylimits")))
            actions.append(Action(at=at, kind=kind, target=stream))
        elif kind == "quota":
            namespace, seconds = draw(st.sampled_from(namespaces)), draw(st.sampled_from((2, 20)))
            actions.append(Action(at=at, kind=kind, target=namespace, value=seconds))
        else:
            actions.append(Action(at=at, kind=kind))
    fault_kinds: tuple[str, ...] = ()
    fault_rate = 0.0
    if faults and draw(st.booleans()):
        fault_kinds = tuple(sorted(draw(st.sets(st.sampled_from(FAULTS), min_size=1, max_size=4))))
        fault_rate = draw(st.sampled_from((0.02, 0.1, 0.3)))
    return Scenario(
        runs=runs,
        limits=tuple(limits),
        actions=tuple(sorted(actions, key=lambda a: a.at)),
        seed=draw(st.integers(0, 2**16)),
        max_delay=draw(st.sampled_from((0.0, 0.02, 0.3, 2.0))),
        coalesce=draw(st.booleans()),
        fault_rate=fault_rate,
        fault_kinds=fault_kinds,
        crash_rate=draw(st.sampled_from((0.0, 0.0, 0.01, 0.05))) if crashes else 0.0,
        grace=draw(st.sampled_from((0.0, 2.0, 10.0))),
        latency=draw(st.sampled_from((0.0, 0.002, 0.05))),
    )
