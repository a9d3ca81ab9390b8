"""The dashboard's web server without a cluster: pages and assets, security headers, the read-only default,
the action header, the Host check and bad filters. Requests go through aiohttp's real server and client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from flowrun_operator.client import Connection
from flowrun_operator.ui.server import Dashboard, create_app


@pytest.fixture
def connection(tmp_path: Path) -> Connection:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                # Nothing listens on port 1: no test here may reach an API server.
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
                "current-context": "x",
            }
        )
    )
    return Connection(str(path))


def serve(dashboard: Dashboard, check: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(create_app(dashboard))) as client:
            await check(client)

    asyncio.run(main())


def test_pages_assets_and_headers(connection: Connection) -> None:
    async def check(client: TestClient) -> None:
        for path in ("/", "/runs", "/runs/team/etl", "/limits", "/limits/team/gpu"):
            page = await client.get(path)
            assert page.status == 200, path
            assert '<script src="/static/app.js">' in await page.text()
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        script = await client.get("/static/app.js")
        assert script.status == 200 and script.content_type == "text/javascript"
        for bad in ("/static/.hidden.js", "/static/missing.js", "/static/index.html"):
            assert (await client.get(bad)).status == 404, bad
        config = await (await client.get("/api/config")).json()
        assert config == {"allowWrites": False, "defaultNamespace": "team"}

    serve(Dashboard(connection), check)


def test_actions_need_allow_writes_and_the_action_header(connection: Connection) -> None:
    async def read_only(client: TestClient) -> None:
        refused = await client.post("/api/runs/team/etl/cancel", headers={"X-Flowrun-Action": "1"})
        assert refused.status == 403 and "read-only" in await refused.text()

    async def writable(client: TestClient) -> None:
        refused = await client.post("/api/runs/team/etl/cancel")
        assert refused.status == 403 and "X-Flowrun-Action" in await refused.text()
        # With the header the call reaches the client, which finds no API server: a clean 502 with the reason.
        failed = await client.post("/api/runs/team/etl/cancel", headers={"X-Flowrun-Action": "1"})
        assert failed.status == 502
        assert "cannot reach the Kubernetes API server at http://127.0.0.1:1" in (await failed.json())["message"]

    serve(Dashboard(connection), read_only)
    serve(Dashboard(connection, allow_writes=True), writable)


def test_host_check_and_bad_filters(connection: Connection) -> None:
    async def check(client: TestClient) -> None:
        other = await client.get("/", headers={"Host": "evil.example:8765"})
        assert other.status == 421
        ok = await client.get("/api/config", headers={"Host": "localhost:8765"})
        assert ok.status == 200
        bad = await client.get("/api/runs/stream?phase=Sleeping", headers={"Host": "localhost:8765"})
        assert bad.status == 400 and "unknown phase" in await bad.text()

    serve(Dashboard(connection, allowed_hosts={"localhost:8765"}), check)
