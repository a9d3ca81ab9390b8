"""The operator's Prometheus metrics, in one place so their names and labels stay consistent.

The engine, the API layer and the leader election record into these; `serve()` exposes them over HTTP.
Benchmarks read them too, so what they report is what an operator's dashboard would show.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)

RUNS = Gauge("flowrun_runs", "FlowRuns known to the operator, by namespace and phase.", ["namespace", "phase"])
ADMISSION_WAIT = Histogram(
    "flowrun_admission_wait_seconds",
    "Time from a run's creation (or its retry becoming due) to its admission.",
    buckets=_WAIT_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "flowrun_queue_depth", "Runs or task runs waiting in a ConcurrencyLimit's line.", ["namespace", "limit"]
)
LIMIT_IN_USE = Gauge("flowrun_limit_in_use", "Slots of a ConcurrencyLimit held now.", ["namespace", "limit"])
LIMIT_CAPACITY = Gauge("flowrun_limit_capacity", "spec.limit of a ConcurrencyLimit.", ["namespace", "limit"])
ROUND_SECONDS = Histogram(
    "flowrun_engine_round_seconds", "Duration of one engine round (decide and act).", buckets=_LATENCY_BUCKETS
)
QUEUE_LATENCY = Histogram(
    "flowrun_engine_queue_latency_seconds",
    "Time from a watch event marking a key to the engine processing it.",
    buckets=_LATENCY_BUCKETS,
)
KEYS_PROCESSED = Counter(
    "flowrun_engine_keys_processed_total", "Keys (runs, limits) processed by the engine.", ["kind"]
)
PENDING_KEYS = Gauge("flowrun_engine_pending_keys", "Keys waiting for the engine.")
API_REQUESTS = Histogram(
    "flowrun_api_request_seconds", "Latency of the operator's API calls.", ["verb"], buckets=_LATENCY_BUCKETS
)
API_ERRORS = Counter("flowrun_api_errors_total", "Failed API calls, by verb and reason.", ["verb", "reason"])
API_RETRIES = Counter("flowrun_api_retries_total", "API calls retried after a transient error.", ["verb", "reason"])
STATUS_WRITES = Counter(
    "flowrun_status_writes_total",
    "Status patches stored, by kind, urgency and the phase written (empty for ConcurrencyLimits).",
    ["kind", "urgency", "phase"],
)
EVENTS_POSTED = Counter("flowrun_events_posted_total", "Events posted by the operator.", ["reason"])
EVENTS_DROPPED = Counter(
    "flowrun_events_dropped_total", "Events not posted because too many were waiting to be posted.", ["reason"]
)
JOBS_CREATED = Counter("flowrun_jobs_created_total", "Jobs created by the operator.")
JOBS_DELETED = Counter("flowrun_jobs_deleted_total", "Jobs the operator deleted (cancel, TTL).")
WATCH_EVENTS = Counter("flowrun_watch_events_total", "Watch events received by the operator's own streams.", ["kind"])
WATCH_ERRORS = Counter(
    "flowrun_watch_errors_total",
    "Errors of the operator's watch streams, by reason; each stream goes on (reconnecting or re-listing as needed).",
    ["kind", "reason"],
)
IS_LEADER = Gauge("flowrun_leader", "1 while this replica holds the leader Lease.")


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Expose /metrics on `address:port` from a background thread."""
    start_http_server(port, addr=address)
