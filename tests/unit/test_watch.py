"""The operator's own watch stream (flowrun_operator.kube.watch) against a local HTTP server that answers each
watch request from a script: where it continues from after a server timeout, a bookmark, a 410 Gone (as an
event and as a status) and a refusal; lines cut across chunks. Against the real API server:
tests/integration/test_kube_io.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
from aiohttp import web

from flowrun_operator.kube import watch
from flowrun_operator.kube.transport import Transport
from flowrun_operator.kube.watch import Gone, WatchStream, events, stop_streams


def job(name: str, version: int) -> dict[str, Any]:
    return {"kind": "Job", "metadata": {"name": name, "resourceVersion": str(version)}}


def line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


Reply = Callable[[web.Request], Any]


async def serve(replies: list[Reply]) -> tuple[web.AppRunner, str, list[dict[str, str]]]:
    """A server whose n-th request gets the n-th reply; the requests' queries are recorded."""
    queries: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        reply = replies[min(len(queries), len(replies)) - 1]
        result = reply(request)
        return await result if asyncio.iscoroutine(result) else result

    app = web.Application()
    app.router.add_get("/apis/batch/v1/namespaces/ns/jobs", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", queries


def streamed(*chunks: bytes) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    return reply


def hang() -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(3600)
        return response

    return reply


PATH = "/apis/batch/v1/namespaces/ns/jobs"


def run_stream(
    replies: list[Reply],
    since: int,
    requests: int,
    *,
    deliver: Callable[[str, dict[str, Any]], None],
    relist: Callable[[], Any],
    label_selector: str | None = None,
) -> list[dict[str, str]]:
    """Run a WatchStream against `replies` until the server has seen `requests` requests; their queries."""

    async def scenario() -> list[dict[str, str]]:
        runner, host, queries = await serve(replies)
        transport = Transport(kubernetes.client.Configuration(host=host))
        stream = WatchStream(
            transport, PATH, name="jobs", deliver=deliver, relist=relist, label_selector=label_selector
        )
        task = asyncio.create_task(stream.run(since))
        try:
            for _ in range(500):
                if len(queries) >= requests:
                    break
                await asyncio.sleep(0.01)
        finally:
            await stop_streams([task])
            await transport.close()
            await runner.cleanup()
        return queries

    return asyncio.run(scenario())


def test_the_stream_continues_from_the_last_version_a_bookmark_a_fresh_list_and_past_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch, "RETRY_BASE_SECONDS", 0.01)
    first = line("ADDED", job("a", 6)) + line("BOOKMARK", {"kind": "Job", "metadata": {"resourceVersion": "8"}})
    gone = {"kind": "Status", "code": 410, "message": "too old resource version: 8 (9)"}
    replies: list[Reply] = [
        streamed(first[:10], first[10:40], first[40:]),  # one event cut across chunks, then the server ends it
        streamed(line("ERROR", gone)),
        lambda request: web.json_response({"kind": "Status", "code": 500}, status=500),
        streamed(line("MODIFIED", job("a", 21)), line("DELETED", job("a", 22))),
        hang(),
    ]
    delivered: list[tuple[str, str, str]] = []
    relists: list[int] = []

    async def relist() -> int:
        relists.append(1)
        return 20

    queries = run_stream(
        replies,
        5,
        5,
        deliver=lambda kind, obj: delivered.append((kind, obj["metadata"]["name"], obj["metadata"]["resourceVersion"])),
        relist=relist,
        label_selector="flowrun.io/run",
    )
    assert [q["resourceVersion"] for q in queries[:5]] == ["5", "8", "20", "20", "22"]
    assert all(q["watch"] == "true" and q["allowWatchBookmarks"] == "true" for q in queries)
    assert all(q["labelSelector"] == "flowrun.io/run" for q in queries)
    assert relists == [1]
    assert delivered == [("ADDED", "a", "6"), ("MODIFIED", "a", "21"), ("DELETED", "a", "22")]


def test_a_410_status_to_the_watch_request_is_gone_and_another_refusal_is_raised() -> None:
    async def scenario() -> None:
        replies: list[Reply] = [
            lambda request: web.json_response({"kind": "Status", "code": 410}, status=410),
            lambda request: web.json_response({"kind": "Status", "code": 403}, status=403),
        ]
        runner, host, _ = await serve(replies)
        transport = Transport(kubernetes.client.Configuration(host=host))
        try:
            with pytest.raises(Gone):
                async for _ in events(transport, PATH, 1):
                    pass
            with pytest.raises(kubernetes.client.exceptions.ApiException) as refused:
                async for _ in events(transport, PATH, 1):
                    pass
            assert refused.value.status == 403
        finally:
            await transport.close()
            await runner.cleanup()

    asyncio.run(scenario())


def test_a_receiver_that_fails_on_one_event_gets_the_next_ones_on_the_same_stream() -> None:
    seen: list[str] = []

    def deliver(kind: str, obj: dict[str, Any]) -> None:
        seen.append(obj["metadata"]["name"])
        if obj["metadata"]["name"] == "b":
            raise KeyError("a bug in the receiver")

    async def relist() -> int:
        raise AssertionError("no re-list")

    replies: list[Reply] = [
        streamed(line("ADDED", job("a", 2)), line("ADDED", job("b", 3)), line("ADDED", job("c", 4))),
        hang(),
    ]
    queries = run_stream(replies, 1, 2, deliver=deliver, relist=relist)
    assert seen == ["a", "b", "c"]
    # The first stream ended by the server's close after "c", not by the failure at "b".
    assert [q["resourceVersion"] for q in queries] == ["1", "4"]
