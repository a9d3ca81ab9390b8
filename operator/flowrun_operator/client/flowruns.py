"""FlowRuns of one namespace: create, get, list (server-side field selectors), watch, wait (on a watch),
cancel, retry, logs, events, attempts."""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from flowrun_operator.api.common import (
    FLOWRUN_KIND,
    FLOWRUN_PLURAL,
    GROUP,
    RERUN_ANNOTATION,
    RUN_LABEL,
    VERSION,
)
from flowrun_operator.api.flowrun import FlowRunPhase, FlowRunSpec
from flowrun_operator.client.connection import REQUEST_TIMEOUT, Connection
from flowrun_operator.client.errors import ClientError, Invalid, NoLogs, NotFound, Timeout, api_error_message
from flowrun_operator.client.views import (
    AttemptView,
    EventView,
    FlowRunView,
    attempts_from_jobs,
    check_cancel,
    choose_container,
    choose_pod,
    current_attempt,
    describe_unit,
    log_error,
    next_rerun,
    pod_containers,
    pod_selector,
    resolve_task,
    sort_events,
)

MERGE_PATCH = "application/merge-patch+json"
# A watch is closed by the API server after this long and opened again from the last resourceVersion.
WATCH_SECONDS = 300

Until = Callable[[FlowRunView], bool] | FlowRunPhase | str | Iterable[FlowRunPhase | str] | None


def label_selector(labels: Mapping[str, str] | str | None) -> str | None:
    """``{"team": "ml"}`` -> ``team=ml``; a string is passed through (any label selector syntax)."""
    if labels is None or isinstance(labels, str):
        return labels or None
    return ",".join(f"{k}={v}" for k, v in labels.items()) or None


def field_selector(*, flow: str | None = None, phase: FlowRunPhase | str | None = None, name: str | None = None) -> str:
    """The field selector for the CRD's selectableFields (``spec.flow``, ``status.phase``)."""
    parts = []
    if name is not None:
        parts.append(f"metadata.name={name}")
    if flow is not None:
        parts.append(f"spec.flow={flow}")
    if phase is not None:
        parts.append(f"status.phase={phase}")
    return ",".join(parts)


def until_predicate(until: Until) -> Callable[[FlowRunView], bool]:
    """``wait``'s condition: a predicate, a phase, several phases, or None for "finished"."""
    if until is None:
        return lambda run: run.finished
    if callable(until):
        return until
    phases = [until] if isinstance(until, str) else list(until)
    wanted = {str(FlowRunPhase(p)) for p in phases}
    return lambda run: run.phase is not None and str(run.phase) in wanted


@dataclass(frozen=True)
class WatchEvent:
    """``type`` is ADDED, MODIFIED or DELETED."""

    type: str
    run: FlowRunView


@dataclass(frozen=True)
class Snapshot:
    """A list and the resourceVersion to watch from."""

    runs: list[FlowRunView]
    resource_version: str


@dataclass
class LogStream:
    """The log of one container of a task run's pod: ``notes`` say which pod and container were chosen when
    there was a choice; iterate ``chunks`` (bytes) or call ``text()``."""

    pod: str
    container: str
    chunks: Iterator[bytes]
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


class FlowRuns:
    """The FlowRuns of ``namespace`` (default: the kubeconfig context's namespace, else ``default``).

    >>> runs = FlowRuns("team-a")
    >>> run = runs.wait("etl", until="Succeeded", timeout=600)
    """

    def __init__(self, namespace: str | None = None, connection: Connection | None = None) -> None:
        self.connection = connection or Connection()
        self.namespace = namespace or self.connection.default_namespace
        self._custom = self.connection.custom

    def _errors(self, name: str | None = None) -> contextlib.AbstractContextManager[None]:
        return self.connection.errors(self.namespace, "flowrun", name)

    # ------------------------------------------------------------------------------------------- read

    def get(self, name: str) -> FlowRunView:
        with self._errors(name):
            obj = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, FLOWRUN_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        return FlowRunView.from_api(obj)

    def _list(self, *, labels: str | None, fields: str, all_namespaces: bool) -> tuple[list[dict[str, Any]], str]:
        kwargs: dict[str, Any] = {"_request_timeout": REQUEST_TIMEOUT}
        if labels:
            kwargs["label_selector"] = labels
        if fields:
            kwargs["field_selector"] = fields
        with self._errors():
            if all_namespaces:
                result = self._custom.list_cluster_custom_object(GROUP, VERSION, FLOWRUN_PLURAL, **kwargs)
            else:
                result = self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, FLOWRUN_PLURAL, **kwargs
                )
        return list(result.get("items") or []), str((result.get("metadata") or {}).get("resourceVersion") or "")

    def list(
        self,
        *,
        labels: Mapping[str, str] | str | None = None,
        phase: FlowRunPhase | str | Iterable[FlowRunPhase | str] | None = None,
        flow: str | None = None,
        all_namespaces: bool = False,
    ) -> list[FlowRunView]:
        """Runs sorted by namespace and name, filtered by the API server: ``labels`` by label selector,
        ``flow`` and ``phase`` by field selector (one request per phase when several are given)."""
        phases: list[str | None]
        if phase is None:
            phases = [None]
        elif isinstance(phase, str):
            phases = [str(FlowRunPhase(phase))]
        else:
            phases = [*sorted({str(FlowRunPhase(p)) for p in phase})]
        items: list[dict[str, Any]] = []
        for one in phases:
            fields = field_selector(flow=flow, phase=one)
            found, _ = self._list(labels=label_selector(labels), fields=fields, all_namespaces=all_namespaces)
            items += found
        views = [FlowRunView.from_api(i) for i in items]
        return sorted(views, key=lambda v: (v.namespace, v.name))

    def snapshot(
        self,
        *,
        labels: Mapping[str, str] | str | None = None,
        phase: FlowRunPhase | str | None = None,
        flow: str | None = None,
        all_namespaces: bool = False,
    ) -> Snapshot:
        """A list with its resourceVersion, to start a :meth:`watch` from."""
        fields = field_selector(flow=flow, phase=str(FlowRunPhase(phase)) if phase else None)
        items, version = self._list(labels=label_selector(labels), fields=fields, all_namespaces=all_namespaces)
        return Snapshot([FlowRunView.from_api(i) for i in items], version)

    def watch(
        self,
        resource_version: str,
        *,
        labels: Mapping[str, str] | str | None = None,
        phase: FlowRunPhase | str | None = None,
        flow: str | None = None,
        name: str | None = None,
        all_namespaces: bool = False,
        timeout: float = WATCH_SECONDS,
        stop: threading.Event | None = None,
    ) -> Iterator[WatchEvent]:
        """Changes after ``resource_version``, for at most ``timeout`` seconds (the API server ends the
        watch). With a field selector, a run that stops matching arrives as DELETED. Raises
        :class:`~flowrun_operator.client.errors.ClientError` (``status`` 410) when the version is too old."""
        fields = field_selector(flow=flow, phase=str(FlowRunPhase(phase)) if phase else None, name=name)
        kwargs: dict[str, Any] = {
            "watch": True,
            "resource_version": resource_version,
            "allow_watch_bookmarks": False,
            "timeout_seconds": max(1, math.ceil(timeout)),
            "_preload_content": False,
            "_request_timeout": (REQUEST_TIMEOUT[0], timeout + 15),
        }
        selector = label_selector(labels)
        if selector:
            kwargs["label_selector"] = selector
        if fields:
            kwargs["field_selector"] = fields
        with self._errors():
            if all_namespaces:
                response = self._custom.list_cluster_custom_object(GROUP, VERSION, FLOWRUN_PLURAL, **kwargs)
            else:
                response = self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, FLOWRUN_PLURAL, **kwargs
                )
        try:
            for line in _lines(response):
                if stop is not None and stop.is_set():
                    return
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    raise WatchExpired(str(obj.get("message") or "watch error"), code)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    yield WatchEvent(str(kind), FlowRunView.from_api(obj))
        except urllib3.exceptions.HTTPError as error:
            if stop is not None and stop.is_set():
                return
            raise self.connection.unreachable(error) from error
        finally:
            response.release_conn()

    def wait(self, name: str, until: Until = None, timeout: float = 600.0) -> FlowRunView:
        """Block until ``until`` holds for the run (default: it finished) and return the run as it was then.

        ``until`` is a phase (``"Succeeded"``), several phases, or a predicate on :class:`FlowRunView`.
        Driven by a watch on the one run, not by polling. Raises :class:`Timeout` after ``timeout``
        seconds and :class:`NotFound` if the run does not exist or is deleted meanwhile.
        """
        done = until_predicate(until)
        deadline = time.monotonic() + timeout
        while True:
            items, version = self._list(labels=None, fields=field_selector(name=name), all_namespaces=False)
            if not items:
                raise NotFound("flowrun", name, self.namespace)
            run = FlowRunView.from_api(items[0])
            if done(run):
                return run
            try:
                while (left := deadline - time.monotonic()) > 0:
                    for event in self.watch(version, name=name, timeout=min(left, WATCH_SECONDS)):
                        if event.type == "DELETED":
                            raise NotFound("flowrun", name, self.namespace, " (deleted while waiting)")
                        run = event.run
                        version = run.resource_version or version
                        if done(run):
                            return run
                        if time.monotonic() >= deadline:
                            break
            except WatchExpired:
                continue  # the version fell out of the API server's window: list again
            phase = str(run.phase) if run.phase else "-"
            raise Timeout(f'timed out after {timeout:g}s waiting for flowrun "{name}" (phase {phase})', run)

    def events(self, name: str) -> builtins.list[EventView]:
        """Events about the run, oldest first."""
        selector = f"involvedObject.kind={FLOWRUN_KIND},involvedObject.name={name}"
        with self._errors():
            response = self.connection.core.list_namespaced_event(
                self.namespace, field_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        items = json.loads(response.data).get("items") or []
        return sort_events(EventView.from_api(e) for e in items)

    def attempts(self, name: str) -> builtins.list[AttemptView]:
        """The attempts whose Jobs still exist (a Job per task run attempt), by task then attempt."""
        with self._errors():
            response = self.connection.batch.list_namespaced_job(
                self.namespace,
                label_selector=f"{RUN_LABEL}={name}",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        return attempts_from_jobs(json.loads(response.data).get("items") or [])

    # ------------------------------------------------------------------------------------------ write

    def create(
        self,
        name: str,
        spec: FlowRunSpec | Mapping[str, Any],
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> FlowRunView:
        """Create a run. ``spec`` is checked against the model first; the API server's schema and CEL rules
        then have the last word (both raise :class:`Invalid`)."""
        try:
            model = spec if isinstance(spec, FlowRunSpec) else FlowRunSpec.model_validate(spec)
        except ValidationError as error:
            raise Invalid(f"invalid FlowRun spec: {error}") from error
        problems = model.validation_errors()
        if problems:
            raise Invalid(f"invalid FlowRun spec: {'; '.join(problems)}")
        metadata: dict[str, Any] = {"name": name}
        if labels:
            metadata["labels"] = dict(labels)
        if annotations:
            metadata["annotations"] = dict(annotations)
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": FLOWRUN_KIND, "metadata": metadata, "spec": model.to_api()}
        with self._errors():
            obj = self._custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, FLOWRUN_PLURAL, body, _request_timeout=REQUEST_TIMEOUT
            )
        return FlowRunView.from_api(obj)

    def _patch(self, name: str, patch: Mapping[str, Any]) -> FlowRunView:
        with self._errors(name):
            obj = self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                FLOWRUN_PLURAL,
                name,
                dict(patch),
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )
        return FlowRunView.from_api(obj)

    def cancel(self, name: str) -> FlowRunView:
        """Request cancellation (spec.cancel: the operator deletes the Jobs, the phase becomes Cancelled).
        Idempotent while the run is unfinished; raises :class:`InvalidState` for a finished run."""
        run = self.get(name)
        if not check_cancel(run):
            return run
        return self._patch(name, {"spec": {"cancel": True}})

    def retry(self, name: str) -> int:
        """Re-run a Failed run's failed and skipped tasks (or its single Job) as a new attempt, through the
        ``flowrun.io/rerun`` annotation; returns the rerun number (wait for ``reruns >= it``).
        Raises :class:`InvalidState` for a run that did not fail."""
        run = self.get(name)
        rerun = next_rerun(run)
        self._patch(name, {"metadata": {"annotations": {RERUN_ANNOTATION: str(rerun)}}})
        return rerun

    def delete(self, name: str) -> None:
        with self._errors(name):
            self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, FLOWRUN_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )

    # ------------------------------------------------------------------------------------------- logs

    def pods(self, selector: str) -> builtins.list[dict[str, Any]]:
        with self._errors():
            response = self.connection.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        items: builtins.list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def logs(
        self,
        name: str,
        task: str | None = None,
        *,
        attempt: int | None = None,
        container: str | None = None,
        follow: bool = False,
        tail: int | None = None,
    ) -> LogStream:
        """The log of a task run's pod (``task`` is required for a run with tasks): the current attempt
        unless ``attempt`` is given; the newest pod of it; its default (else first) container.
        Raises :class:`NoLogs` (with the reason) when there is nothing to read."""
        run = self.get(name)
        task_name = resolve_task(run, task)
        current = current_attempt(run, task_name)
        wanted = attempt if attempt is not None else current
        selector = pod_selector(name, task_name, wanted)
        pods = self.pods(selector)
        pod = choose_pod(pods)
        if pod is None:
            unit = describe_unit(name, task_name, wanted)
            if wanted is None:
                row = run.task(task_name) if task_name else run.task_runs[0]
                state = row.phase if row is not None and row.phase else "unknown"
                raise NoLogs(f"{unit} has no pod yet (state {state})")
            why = (
                f"the current attempt is {current}"
                if attempt is not None and current is not None and attempt != current
                else "its Job may not have created one yet, or it was deleted"
            )
            raise NoLogs(f'no pod found for {unit} in namespace "{self.namespace}" (label selector {selector}); {why}')
        meta = pod.get("metadata") or {}
        pod_name = str(meta.get("name", ""))
        notes = []
        same = [p for p in pods if (p.get("metadata") or {}).get("labels") == meta.get("labels")]
        if len(same) > 1:
            notes.append(f"note: {len(same)} pods match; showing the newest, {pod_name}")
        chosen = choose_container(pod, container)
        names = pod_containers(pod)
        if container is None and len(names) > 1:
            notes.append(f'Defaulted container "{chosen}" out of: {", ".join(names)}')
        return LogStream(pod_name, chosen, self._pod_log(pod_name, chosen, follow=follow, tail=tail), notes)

    def _pod_log(self, pod: str, container: str, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        kwargs: dict[str, Any] = {"container": container, "follow": follow, "_preload_content": False}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if not follow:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        try:
            response = self.connection.core.read_namespaced_pod_log(pod, self.namespace, **kwargs)
        except urllib3.exceptions.HTTPError as error:
            raise self.connection.unreachable(error) from error
        except ApiException as error:
            raise log_error(pod, container, error.status, api_error_message(error.body, error.reason)) from error
        try:
            yield from response.stream(4096, decode_content=True)
        except urllib3.exceptions.HTTPError as error:
            raise ClientError(f"the log stream of pod {pod} broke off: {error}") from error
        finally:
            response.release_conn()


class WatchExpired(ClientError):
    """The watch's resourceVersion is too old (410 Gone) or the API server ended it with an error."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _lines(response: Any) -> Iterator[bytes]:
    """Lines of a streamed response (one JSON watch event per line)."""
    pending = b""
    for chunk in response.stream(65536, decode_content=True):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending
