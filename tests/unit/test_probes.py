"""The engine's liveness check: the probe function itself, and Kopf's real health endpoint serving it."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import kopf
import pytest
from kopf._core.engines import indexing, probing
from kopf._core.intents import registries

from flowrun_operator.handlers import probes
from support.operator import free_port


class FakeEngine:
    """Duck-typed like the engine: only `stalled` matters to the probe."""

    def __init__(self, stalled: bool) -> None:
        self.is_stalled = stalled
        self.asked: list[float] = []

    def stalled(self, seconds: float) -> bool:
        self.asked.append(seconds)
        return self.is_stalled


def probe(memo: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(probes.engine_liveness(memo=kopf.Memo(memo)))


def test_a_stalled_engine_fails_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVENESS_STALL_SECONDS", "45")
    engine = FakeEngine(stalled=True)
    with pytest.raises(kopf.PermanentError, match="nothing was processed for 45s"):
        probe({"engine": engine})
    assert engine.asked == [45.0]


def test_a_working_engine_passes_and_the_default_is_60_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVENESS_STALL_SECONDS", raising=False)
    engine = FakeEngine(stalled=False)
    assert probe({"engine": engine}) == {"stalled": False, "stallSeconds": 60.0}
    assert engine.asked == [60.0]


def test_no_engine_or_no_stall_check_does_not_fail() -> None:
    assert probe({}) == {"stallCheck": "unavailable"}
    assert probe({"engine": object()}) == {"stallCheck": "unavailable"}


@pytest.mark.parametrize("raw", ["soon", "0", "-5"])
def test_bad_stall_seconds_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("LIVENESS_STALL_SECONDS", raw)
    with pytest.raises(ValueError, match="LIVENESS_STALL_SECONDS"):
        probes.stall_seconds()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def test_kopfs_health_endpoint_answers_500_while_the_engine_is_stalled() -> None:
    """Kopf's own health reporter with this probe registered: 500 while the engine is stalled, 200 once
    it works again. (Kopf caches a success for 10 s, never a failure: a stall shows within 10 s.)"""
    registry = registries.OperatorRegistry()
    kopf.on.probe(id="engine", errors=kopf.ErrorsMode.PERMANENT, registry=registry)(probes.engine_liveness)
    engine = FakeEngine(stalled=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"

    async def scenario() -> list[tuple[int, str]]:
        ready = asyncio.Event()
        server = asyncio.create_task(
            probing.health_reporter(
                url,
                memo=kopf.Memo({"engine": engine}),
                indices=indexing.OperatorIndexers().indices,
                registry=registry,
                settings=kopf.OperatorSettings(),
                ready_flag=ready,
            )
        )
        await asyncio.wait_for(ready.wait(), 10)
        answers = [await asyncio.to_thread(_get, url)]
        answers.append(await asyncio.to_thread(_get, url))
        engine.is_stalled = False
        answers.append(await asyncio.to_thread(_get, url))
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
        return answers

    stalled, still_stalled, recovered = asyncio.run(scenario())
    assert stalled[0] == 500 and still_stalled[0] == 500
    assert recovered[0] == 200
    assert json.loads(recovered[1]) == {"engine": {"stalled": False, "stallSeconds": 60.0}}
