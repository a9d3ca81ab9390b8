"""`kubectl flowrun schedules | trigger | suspend | resume`: FlowSchedules from a terminal.

The table and the messages are built by pure functions (tested without a cluster); the commands read and patch
FlowSchedules and create FlowRuns through the official client, with the kubeconfig's current namespace as the
default.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import kubernetes
import typer
from kubernetes.client.exceptions import ApiException

from flowrun_operator.api.common import FLOWRUN_PLURAL, GROUP, VERSION, parse_time
from flowrun_operator.api.flowschedule import SCHEDULE_PLURAL
from flowrun_operator.cli.app import app
from flowrun_operator.schedules.runs import build_run, manual_run_name

Namespace = Annotated[
    str | None,
    typer.Option(
        "--namespace", "-n", help="Namespace (default: the kubeconfig context's, else default).", show_default=False
    ),
]
Kubeconfig = Annotated[
    str | None, typer.Option("--kubeconfig", help="Path of the kubeconfig (default: $KUBECONFIG).", show_default=False)
]
Context = Annotated[str | None, typer.Option("--context", help="kubeconfig context to use.", show_default=False)]
ScheduleName = Annotated[str, typer.Argument(help="Name of the FlowSchedule.", show_default=False)]
MERGE_PATCH = "application/merge-patch+json"


class ScheduleCliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------------------------------------- pure parts


def _span(seconds: float) -> str:
    """kubectl-style short duration: 45s, 3m, 2h5m, 3d."""
    s = int(abs(seconds))
    if s < 120:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{s // 86400}d"


def _time(value: Any) -> datetime | None:
    try:
        return parse_time(str(value)) if value else None
    except ValueError:
        return None


def schedule_row(obj: dict[str, Any], now: datetime) -> list[str]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    when = spec.get("schedule") or (f"every {spec['interval']}" if spec.get("interval") else "-")
    last = _time(status.get("lastScheduleTime"))
    upcoming = _time(status.get("nextScheduleTime"))
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if spec.get("suspend"):
        next_text = "suspended"
    elif ready is not None and ready.get("status") == "False":
        next_text = f"- ({ready.get('reason')})"
    elif upcoming is None:
        next_text = "-"
    else:
        delta = (upcoming - now).total_seconds()
        relative = f"in {_span(delta)}" if delta >= 0 else f"{_span(delta)} ago"
        next_text = f"{upcoming.strftime('%Y-%m-%dT%H:%M:%SZ')} ({relative})"
    return [
        str((obj.get("metadata") or {}).get("name")),
        when,
        str(spec.get("timeZone") or "UTC"),
        str(spec.get("concurrencyPolicy") or "Allow"),
        "True" if spec.get("suspend") else "False",
        str(status.get("activeCount") or len(status.get("active") or [])),
        f"{_span((now - last).total_seconds())} ago" if last else "-",
        next_text,
    ]


HEADERS = ["NAME", "SCHEDULE", "TIMEZONE", "POLICY", "SUSPEND", "ACTIVE", "LAST", "NEXT"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns separated by three spaces, like kubectl's tables."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "   ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


def schedules_table(items: Sequence[dict[str, Any]], now: datetime) -> str:
    ordered = sorted(items, key=lambda o: str((o.get("metadata") or {}).get("name")))
    return table(HEADERS, [schedule_row(o, now) for o in ordered])


# ---------------------------------------------------------------------------------------------------- I/O


class Api:
    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        # $KUBECONFIG is read now: the client library reads it once, when it is imported.
        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
        try:
            self.client = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)
            contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
        except (kubernetes.config.ConfigException, OSError) as error:
            raise ScheduleCliError(f"cannot load the kubeconfig: {error}") from None
        chosen = next((c for c in contexts or [] if c.get("name") == context), None) if context else active
        self.namespace = namespace or ((chosen or {}).get("context") or {}).get("namespace") or "default"
        self.custom = kubernetes.client.CustomObjectsApi(self.client)

    def close(self) -> None:
        self.client.close()

    def get(self, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, SCHEDULE_PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                raise ScheduleCliError(f'flowschedule "{name}" not found in namespace "{self.namespace}"') from None
            raise
        return found

    def list(self) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, SCHEDULE_PLURAL)
        items: list[dict[str, Any]] = listing["items"]
        return items

    def set_suspend(self, name: str, suspend: bool) -> None:
        self.get(name)
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            SCHEDULE_PLURAL,
            name,
            {"spec": {"suspend": suspend}},
            _content_type=MERGE_PATCH,
        )

    def create_run(self, body: dict[str, Any]) -> None:
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, FLOWRUN_PLURAL, body)
        except ApiException as error:
            if error.status == 409:
                raise ScheduleCliError(f'flowrun "{body["metadata"]["name"]}" exists already; try again') from None
            raise


def _command(fn: Callable[[Api], str], namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    api: Api | None = None
    try:
        api = Api(kubeconfig, context, namespace)
        sys.stdout.write(fn(api))
    except ScheduleCliError as error:
        sys.stderr.write(f"error: {error.message}\n")
        raise typer.Exit(error.code) from None
    except ApiException as error:
        sys.stderr.write(f"error: the API server answered {error.status} {error.reason}\n")
        raise typer.Exit(1) from None
    finally:
        if api is not None:
            api.close()


# ----------------------------------------------------------------------------------------------- commands


@app.command("schedules")
def list_schedules(
    namespace: Namespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="json for the raw objects.")] = None,
) -> None:
    """List FlowSchedules with their last and next run."""

    def run(api: Api) -> str:
        items = api.list()
        if output == "json":
            return json.dumps({"items": items}, indent=2) + "\n"
        if output is not None:
            raise ScheduleCliError(f"unknown output format {output!r} (json or none)", code=2)
        if not items:
            sys.stderr.write(f'No flowschedules found in namespace "{api.namespace}".\n')
            return ""
        return schedules_table(items, datetime.now(UTC))

    _command(run, namespace, kubeconfig, context)


@app.command()
def trigger(
    schedule: ScheduleName, namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None
) -> None:
    """Create a run of a FlowSchedule now, from its template (like `kubectl create job --from=cronjob/NAME`)."""

    def run(api: Api) -> str:
        obj = api.get(schedule)
        name = manual_run_name(schedule, datetime.now(UTC))
        obj.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        obj.setdefault("kind", "FlowSchedule")
        api.create_run(build_run(obj, None, name))
        return f'flowrun "{name}" created from flowschedule "{schedule}"\n'

    _command(run, namespace, kubeconfig, context)


@app.command()
def suspend(
    schedule: ScheduleName, namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None
) -> None:
    """Stop a FlowSchedule from creating runs (runs already created go on)."""

    def run(api: Api) -> str:
        api.set_suspend(schedule, True)
        return f'flowschedule "{schedule}" suspended\n'

    _command(run, namespace, kubeconfig, context)


@app.command()
def resume(
    schedule: ScheduleName, namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None
) -> None:
    """Let a suspended FlowSchedule create runs again (the latest time missed meanwhile may run once, within its
    startingDeadlineSeconds)."""

    def run(api: Api) -> str:
        api.set_suspend(schedule, False)
        return f'flowschedule "{schedule}" resumed\n'

    _command(run, namespace, kubeconfig, context)
