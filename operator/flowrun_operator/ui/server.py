"""The dashboard's web server (aiohttp): static pages, a JSON API over :mod:`flowrun_operator.client`, and
server-sent events fed by a watch per open page.

Read-only unless ``allow_writes``: then ``POST /api/runs/{namespace}/{name}/cancel|retry`` work too. The
API calls of the client are blocking; they run in threads so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from flowrun_operator.api.flowrun import FlowRunPhase
from flowrun_operator.client import (
    ClientError,
    ConcurrencyLimits,
    Connection,
    FlowRuns,
    FlowRunView,
    Forbidden,
    Invalid,
    InvalidState,
    NotFound,
    NotInstalled,
    WatchExpired,
)
from flowrun_operator.client.views import dependency_order

log = logging.getLogger(__name__)

STATIC = resources.files("flowrun_operator.ui") / "static"
# The API server ends each watch after this long; the stream's thread then notices a closed page.
WATCH_SECONDS = 60
KEEPALIVE_SECONDS = 15.0
ACTION_HEADER = "X-Flowrun-Action"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now() -> datetime:
    return datetime.now(UTC)


def run_row(run: FlowRunView) -> dict[str, Any]:
    """What the runs table shows of a run (the full view is served by the run page's API)."""
    return {
        "name": run.name,
        "namespace": run.namespace,
        "flow": run.flow,
        "labels": run.labels,
        "created": run.metadata.get("creationTimestamp"),
        "phase": str(run.phase) if run.phase else None,
        "attempt": run.attempt,
        "startTime": run.start_time.strftime("%Y-%m-%dT%H:%M:%SZ") if run.start_time else None,
        "duration": run.duration,
        "message": run.message,
        "tasks": len(run.task_names),
        "waitingFor": [w.to_api() for w in run.waiting_for],
        "resourceVersion": run.resource_version,
    }


@dataclass(frozen=True)
class Filters:
    namespace: str
    all_namespaces: bool
    flow: str | None
    phase: FlowRunPhase | None
    labels: str | None
    name: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str], default_namespace: str) -> Filters:
        namespace = query.get("namespace", "").strip()
        phase = query.get("phase", "").strip()
        try:
            parsed = FlowRunPhase(phase) if phase else None
        except ValueError:
            raise web.HTTPBadRequest(text=f"unknown phase {phase!r}") from None
        return cls(
            namespace=default_namespace if namespace in ("", "-") else namespace,
            all_namespaces=namespace == "*",
            flow=query.get("flow", "").strip() or None,
            phase=parsed,
            labels=query.get("label", "").strip() or None,
            name=query.get("name", "").strip() or None,
        )


@dataclass
class Dashboard:
    connection: Connection
    allow_writes: bool = False
    # Host headers accepted (empty: any); a loopback server accepts its own names only (DNS rebinding).
    allowed_hosts: set[str] = field(default_factory=set)
    streams: int = 0

    def runs(self, namespace: str) -> FlowRuns:
        return FlowRuns(namespace, self.connection)

    # ------------------------------------------------------------------------------------------ pages

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=(STATIC / "index.html").read_bytes(),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        kind = next((t for ext, t in types.items() if name.endswith(ext)), None)
        if kind is None or "/" in name or name.startswith("."):
            raise web.HTTPNotFound()
        resource = STATIC / name
        if not resource.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=resource.read_bytes(), content_type=kind)

    # -------------------------------------------------------------------------------------------- API

    async def config(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"allowWrites": self.allow_writes, "defaultNamespace": self.connection.default_namespace}
        )

    async def run_detail(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        runs = self.runs(namespace)

        def load() -> dict[str, Any]:
            run = runs.get(name)
            data = run.to_dict()
            data["order"] = [t.name for t in dependency_order(run.task_runs)]
            return {
                "run": data,
                "events": [e.to_dict() for e in runs.events(name)],
                "attempts": [a.to_dict() for a in runs.attempts(name)],
                "now": now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }

        return web.json_response(await asyncio.to_thread(load))

    async def limits(self, request: web.Request) -> web.StreamResponse:
        namespace = request.query.get("namespace", "").strip() or self.connection.default_namespace
        name = request.match_info.get("name")
        if "namespace" in request.match_info:
            namespace = request.match_info["namespace"]
        limits = ConcurrencyLimits(namespace, self.connection)

        def load() -> dict[str, Any]:
            found = [limits.get(name)] if name else limits.list()
            at = now()
            return {"namespace": namespace, "items": [v.to_dict(at) for v in found], "now": at.isoformat()}

        return web.json_response(await asyncio.to_thread(load))

    async def action(self, request: web.Request) -> web.StreamResponse:
        if not self.allow_writes:
            raise web.HTTPForbidden(text="the dashboard is read-only (start it with --allow-writes)")
        # A custom header cannot be sent cross-site without a CORS preflight, which this server never grants.
        if request.headers.get(ACTION_HEADER) != "1":
            raise web.HTTPForbidden(text=f"missing {ACTION_HEADER} header")
        namespace, name, verb = (request.match_info[k] for k in ("namespace", "name", "verb"))
        runs = self.runs(namespace)
        if verb == "cancel":
            view = await asyncio.to_thread(runs.cancel, name)
            return web.json_response({"ok": True, "phase": str(view.phase) if view.phase else None})
        if verb == "retry":
            rerun = await asyncio.to_thread(runs.retry, name)
            return web.json_response({"ok": True, "rerun": rerun})
        raise web.HTTPNotFound()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``snapshot`` (every matching run), then ``upsert`` / ``delete`` per change."""
        filters = Filters.from_query(request.query, self.connection.default_namespace)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def emit(kind: str, data: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, data))

        worker = threading.Thread(target=self._watch, args=(filters, emit, stop), name="dashboard-watch", daemon=True)
        worker.start()
        self.streams += 1
        try:
            while True:
                try:
                    kind, data = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                payload = json.dumps(data, separators=(",", ":"))
                await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())
                if kind == "failure":
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            stop.set()
            self.streams -= 1
        return response

    def _watch(self, filters: Filters, emit: Callable[[str, Any], None], stop: threading.Event) -> None:
        """List, then watch from the list's resourceVersion; list again when the version expired."""
        runs = self.runs(filters.namespace)
        selectors: dict[str, Any] = {"labels": filters.labels, "phase": filters.phase, "flow": filters.flow}
        try:
            while not stop.is_set():
                snapshot = runs.snapshot(all_namespaces=filters.all_namespaces, **selectors)
                items = [r for r in snapshot.runs if filters.name is None or r.name == filters.name]
                emit("snapshot", {"items": [run_row(r) for r in items]})
                version = snapshot.resource_version
                try:
                    while not stop.is_set():
                        for event in runs.watch(
                            version,
                            name=filters.name,
                            all_namespaces=filters.all_namespaces,
                            timeout=WATCH_SECONDS,
                            stop=stop,
                            **selectors,
                        ):
                            version = event.run.resource_version or version
                            kind = "delete" if event.type == "DELETED" else "upsert"
                            emit(kind, run_row(event.run))
                except WatchExpired:
                    continue
        except ClientError as error:
            emit("failure", {"message": error.message})
        except Exception as error:  # the page must hear why its stream ended
            log.exception("dashboard watch failed")
            emit("failure", {"message": f"{type(error).__name__}: {error}"})


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Client errors as JSON with the HTTP status that fits them."""
    try:
        return await handler(request)
    except NotFound as error:
        return web.json_response({"message": error.message}, status=404)
    except (Forbidden, InvalidState) as error:
        return web.json_response({"message": error.message}, status=403 if isinstance(error, Forbidden) else 409)
    except Invalid as error:
        return web.json_response({"message": error.message}, status=422)
    except NotInstalled as error:
        return web.json_response({"message": error.message}, status=503)
    except ClientError as error:
        return web.json_response({"message": error.message}, status=502)


def host_check(allowed: set[str]) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if allowed and request.host not in allowed:
            raise web.HTTPMisdirectedRequest(text=f"unexpected Host header {request.host!r}")
        return await handler(request)

    return check


SECURITY_HEADERS = {
    # Everything the pages use is served from here; nothing is fetched from elsewhere.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)


def create_app(dashboard: Dashboard) -> web.Application:
    app = web.Application(middlewares=[host_check(dashboard.allowed_hosts), errors_middleware])
    app.on_response_prepare.append(_headers)
    routes = [
        web.get("/", dashboard.page),
        web.get("/runs", dashboard.page),
        web.get("/runs/{namespace}/{name}", dashboard.page),
        web.get("/limits", dashboard.page),
        web.get("/limits/{namespace}/{name}", dashboard.page),
        web.get("/static/{file}", dashboard.static),
        web.get("/healthz", _ok),
        web.get("/api/config", dashboard.config),
        web.get("/api/runs/stream", dashboard.stream),
        web.get("/api/runs/{namespace}/{name}", dashboard.run_detail),
        web.post("/api/runs/{namespace}/{name}/{verb}", dashboard.action),
        web.get("/api/limits", dashboard.limits),
        web.get("/api/limits/{namespace}/{name}", dashboard.limits),
    ]
    app.add_routes(routes)
    return app


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def serve(
    connection: Connection,
    *,
    host: str,
    port: int,
    allow_writes: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted. ``on_ready`` gets the URL once the socket listens (port 0: a free port)."""
    dashboard = Dashboard(connection, allow_writes=allow_writes)

    async def main() -> None:
        app = create_app(dashboard)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        addresses = runner.addresses
        bound = int(addresses[0][1]) if addresses else port
        shown = f"[{host}]" if ":" in host else host
        if host in ("127.0.0.1", "::1", "localhost"):
            dashboard.allowed_hosts.update({f"{shown}:{bound}", f"localhost:{bound}", f"127.0.0.1:{bound}"})
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound}/")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
