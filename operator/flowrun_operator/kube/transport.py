"""HTTP calls to the API server from the event loop, with the credentials of the official client.

The official client is synchronous: each call through it takes a pool thread, builds its request through the
generated API layer and hands the GIL back and forth with the event loop. For the operator's small, frequent
writes (Job creates, status patches, Events) that cost about three times the CPU of the same request sent
with aiohttp from the loop (`bench/api_calls.py`). The credentials, CA and server address still come from
the official client's `Configuration`, so every way it loads a kubeconfig or in-cluster account works here.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kubernetes
from kubernetes.client.exceptions import ApiException

JSON = "application/json"


def ssl_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext | bool:
    """The TLS settings of `configuration`: its CA, client certificate and verification choice."""
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


class Transport:
    """One pooled aiohttp session per operator; it is opened on the first call (it needs the running loop)."""

    def __init__(self, configuration: kubernetes.client.Configuration, *, connections: int = 48) -> None:
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._tls: list[ssl.SSLContext] = []

    @property
    def connections_opened(self) -> int:
        """TLS connections opened so far (read by tests: calls must reuse pooled connections). Counted by the
        SSL contexts rather than an aiohttp trace, which would cost every request a round of signal calls."""
        return sum(int(context.session_stats()["connect"]) for context in self._tls)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            tls = ssl_context(self.configuration)
            if isinstance(tls, ssl.SSLContext):
                self._tls.append(tls)
            connector = aiohttp.TCPConnector(ssl=tls, limit=self._connections)
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=json.dumps, skip_auto_headers=("User-Agent",)
            )
        return self._session

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": JSON, "User-Agent": "flowrun-operator"}
        if content_type:
            headers["Content-Type"] = content_type
        # Read per call: an in-cluster token is re-read by the configuration's refresh hook when it rotates.
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"])] = str(setting["value"])
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        content_type: str = JSON,
        socket_seconds: tuple[float, float],
        call_seconds: float,
        read_body: bool = True,
    ) -> dict[str, Any] | None:
        """Send one request; returns the parsed response (None with `read_body=False`) or raises ApiException
        with the status and body of a refusal (what `kube.errors.classify` reads), TimeoutError or an
        aiohttp.ClientError (a connection problem)."""
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        limits = aiohttp.ClientTimeout(total=call_seconds, sock_connect=socket_seconds[0], sock_read=socket_seconds[1])
        async with self._open().request(
            method,
            self.host + path,
            data=data,
            headers=self._headers(content_type if data is not None else None),
            timeout=limits,
            proxy=self.configuration.proxy or None,
            server_hostname=getattr(self.configuration, "tls_server_name", None) or None,
        ) as response:
            # The body is always read to its end, so the connection goes back to the pool.
            raw = await response.read()
            if response.status >= 400:
                raise ApiException(status=response.status, reason=response.reason, body=raw.decode(errors="replace"))
            if not read_body or not raw:
                return None
            parsed: dict[str, Any] = json.loads(raw)
            return parsed

    @contextlib.asynccontextmanager
    async def stream(self, path: str, timeouts: aiohttp.ClientTimeout) -> AsyncIterator[aiohttp.StreamReader]:
        """A GET whose body is read as it arrives (a watch); raises ApiException for a refusal."""
        async with self._open().get(
            self.host + path,
            headers=self._headers(None),
            timeout=timeouts,
            proxy=self.configuration.proxy or None,
            server_hostname=getattr(self.configuration, "tls_server_name", None) or None,
        ) as response:
            if response.status >= 400:
                raw = await response.read()
                raise ApiException(status=response.status, reason=response.reason, body=raw.decode(errors="replace"))
            yield response.content

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
