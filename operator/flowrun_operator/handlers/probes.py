"""The liveness check of the admission engine, served by Kopf's health endpoint (`--liveness`).

A probe that raises makes Kopf's /healthz answer 500: Kopf runs the probe handlers as an activity, and
an activity whose handler failed permanently raises out of the endpoint's request handler (a plain
exception would instead be retried with backoff while the request hangs, hence `PermanentError`).
Kubernetes then restarts the container, which re-lists everything and starts afresh.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from flowrun_operator.settings import env_float

log = logging.getLogger("flowrun_operator.probes")

DEFAULT_STALL_SECONDS = 60.0


def stall_seconds() -> float:
    """N of "work queued and nothing processed for N seconds" (env LIVENESS_STALL_SECONDS, default 60)."""
    return env_float("LIVENESS_STALL_SECONDS", DEFAULT_STALL_SECONDS, what="a number of seconds", positive=True)


def engine_of(memo: Any) -> Any:
    """The engine from the memo, once the startup handler has put it there."""
    candidate = memo.get("engine") if hasattr(memo, "get") else None
    return candidate if candidate is not None and callable(getattr(candidate, "stalled", None)) else None


@kopf.on.probe(id="engine", errors=kopf.ErrorsMode.PERMANENT)
async def engine_liveness(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    seconds = stall_seconds()
    engine = engine_of(memo)
    if engine is None:
        # Not started yet: Kopf serves probes only after the startup handlers.
        return {"stallCheck": "unavailable"}
    if engine.stalled(seconds):
        message = f"admission engine stalled: work is queued and nothing was processed for {seconds:g}s"
        log.error("liveness failing: %s", message)
        raise kopf.PermanentError(message)
    return {"stalled": False, "stallSeconds": seconds}
