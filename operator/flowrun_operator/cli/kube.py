"""The CLI's connection: the client's :class:`~flowrun_operator.client.Connection`, plus the FlowRuns of a
namespace. Every API call goes through :mod:`flowrun_operator.client`; its errors are the CLI's errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from flowrun_operator.client import ConcurrencyLimits, Connection, FlowRuns
from flowrun_operator.client.errors import CRDS_MISSING

__all__ = ["CRDS_MISSING", "CliKube"]


class CliKube(Connection):
    """A connection to the cluster of a kubeconfig (or in-cluster credentials) and its default namespace."""

    def runs(self, namespace: str) -> FlowRuns:
        return FlowRuns(namespace, self)

    def limits(self, namespace: str) -> ConcurrencyLimits:
        return ConcurrencyLimits(namespace, self)

    @contextlib.contextmanager
    def _errors(self, namespace: str, run: str | None = None) -> Iterator[None]:
        """Client errors for any other call (a 404 naming ``run`` means the run does not exist)."""
        with self.errors(namespace, "flowrun", run):
            yield

    def get_run(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.runs(namespace).get(name).raw)

    def list_runs(self, namespace: str | None) -> list[dict[str, Any]]:
        """FlowRuns of one namespace, or of all namespaces for None."""
        runs = self.runs(namespace or self.default_namespace).list(all_namespaces=namespace is None)
        return [dict(r.raw) for r in runs]
