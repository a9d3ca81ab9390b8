"""A typed Python client for FlowRuns and ConcurrencyLimits, on the API server alone.

    from flowrun_operator.client import FlowRuns

    runs = FlowRuns("team-a")
    runs.create("etl-42", {"flow": "etl", "template": {"spec": {"containers": [...]}}})
    run = runs.wait("etl-42", until="Succeeded", timeout=600)
    print(run.phase, [(t.name, t.phase) for t in run.task_runs])

The CLI (`kubectl flowrun`) and the dashboard are built on it. See docs/client.md.
"""

from flowrun_operator.client.connection import Connection
from flowrun_operator.client.errors import (
    ApiError,
    ClientError,
    ConfigError,
    Conflict,
    Forbidden,
    Invalid,
    InvalidState,
    NoLogs,
    NotFound,
    NotInstalled,
    Timeout,
    Unauthorized,
    Unreachable,
)
from flowrun_operator.client.flowruns import FlowRuns, LogStream, Snapshot, WatchEvent, WatchExpired
from flowrun_operator.client.limits import ConcurrencyLimits
from flowrun_operator.client.views import (
    MAIN_TASK,
    AttemptView,
    EventView,
    FlowRunView,
    LimitView,
    TaskRunView,
    Waiter,
)

__all__ = [
    "MAIN_TASK",
    "ApiError",
    "AttemptView",
    "ClientError",
    "ConcurrencyLimits",
    "ConfigError",
    "Conflict",
    "Connection",
    "EventView",
    "FlowRunView",
    "FlowRuns",
    "Forbidden",
    "Invalid",
    "InvalidState",
    "LimitView",
    "LogStream",
    "NoLogs",
    "NotFound",
    "NotInstalled",
    "Snapshot",
    "TaskRunView",
    "Timeout",
    "Unauthorized",
    "Unreachable",
    "Waiter",
    "WatchEvent",
    "WatchExpired",
]
