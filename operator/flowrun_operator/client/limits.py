"""ConcurrencyLimits of one namespace, with their holders and waiting lines."""

from __future__ import annotations

from flowrun_operator.api.common import GROUP, LIMIT_PLURAL, VERSION
from flowrun_operator.client.connection import REQUEST_TIMEOUT, Connection
from flowrun_operator.client.flowruns import FlowRuns
from flowrun_operator.client.views import FlowRunView, LimitView


class ConcurrencyLimits:
    """The ConcurrencyLimits of ``namespace`` (default: the kubeconfig context's namespace).

    A limit's waiting line is derived from the unfinished runs of the namespace: each names the limits it
    waits for, with its position, in ``status.waitingFor`` (task runs in ``status.taskRuns[].waitingFor``).
    """

    def __init__(self, namespace: str | None = None, connection: Connection | None = None) -> None:
        self.connection = connection or Connection()
        self.namespace = namespace or self.connection.default_namespace
        self.runs = FlowRuns(self.namespace, self.connection)

    def _unfinished_runs(self) -> list[FlowRunView]:
        return [r for r in self.runs.list() if not r.finished]

    def get(self, name: str, runs: list[FlowRunView] | None = None) -> LimitView:
        """The limit, its holders and its waiting line (``runs``: the namespace's runs, if already listed)."""
        with self.connection.errors(self.namespace, "concurrencylimit", name):
            obj = self.connection.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, LIMIT_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        return LimitView.from_api(obj, self._unfinished_runs() if runs is None else runs)

    def list(self, runs: list[FlowRunView] | None = None) -> list[LimitView]:
        """Every limit of the namespace by name, each with its waiting line (one list of runs for all)."""
        with self.connection.errors(self.namespace, "concurrencylimit"):
            result = self.connection.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, LIMIT_PLURAL, _request_timeout=REQUEST_TIMEOUT
            )
        pending = self._unfinished_runs() if runs is None else runs
        views = [LimitView.from_api(obj, pending) for obj in result.get("items") or []]
        return sorted(views, key=lambda v: v.name)
