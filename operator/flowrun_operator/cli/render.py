"""Rendering of the CLI's summaries: rich tables for people, JSON and YAML for scripts (pure, no I/O)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from flowrun_operator.api.common import format_time
from flowrun_operator.cli.views import RunSummary, TaskRow, ago, describe_waits

NONE = "-"

PHASE_STYLES = {
    "Scheduled": "dim",
    "Pending": "yellow",
    "Submitted": "cyan",
    "Running": "bold cyan",
    "Succeeded": "green",
    "Failed": "bold red",
    "Cancelled": "magenta",
    "Skipped": "dim",
}


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def _phase(phase: str | None) -> Text:
    return Text(phase or NONE, style=PHASE_STYLES.get(phase or "", ""))


def _text(value: object | None) -> str:
    return NONE if value is None or value == "" else str(value)


def _table(*columns: str) -> Table:
    """A borderless, kubectl-like table with upper-case headers."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", padding=(0, 3, 0, 0))
    for name in columns:
        # Messages may wrap on a narrow terminal; every other column keeps its values on one line.
        table.add_column(name, no_wrap=name != "MESSAGE", overflow="fold")
    return table


def runs_table(summaries: Sequence[RunSummary], now: datetime, *, all_namespaces: bool = False) -> Table:
    """`list`: NAME, FLOW, PHASE, ATTEMPT, STARTED, DURATION, MESSAGE (NAMESPACE first with -A)."""
    columns = ["NAME", "FLOW", "PHASE", "ATTEMPT", "STARTED", "DURATION", "MESSAGE"]
    table = _table(*(["NAMESPACE", *columns] if all_namespaces else columns))
    for s in summaries:
        row: list[RenderableType] = [
            s.name,
            s.flow,
            _phase(s.phase),
            _text(s.attempt),
            _text(ago(s.start_time, now)),
            _text(s.duration),
            s.message or "",
        ]
        table.add_row(*([s.namespace, *row] if all_namespaces else row))
    return table


def tasks_table(tasks: Sequence[TaskRow], now: datetime) -> Table:
    """`get`'s task runs: TASK, STATE, ATTEMPT, STARTED, DURATION, MESSAGE."""
    table = _table("TASK", "STATE", "ATTEMPT", "STARTED", "DURATION", "MESSAGE")
    for t in tasks:
        table.add_row(
            t.name,
            _phase(t.phase),
            _text(t.attempt),
            _text(ago(t.start_time, now)),
            _text(t.duration),
            t.message or "",
        )
    return table


def summary_fields(summary: RunSummary, now: datetime) -> list[tuple[str, RenderableType]]:
    """`get`'s key/value lines about the run itself; optional lines only when they say something."""

    def when(value: datetime | None) -> str:
        return NONE if value is None else f"{format_time(value)} ({ago(value, now)})"

    attempt = _text(summary.attempt)
    if summary.reruns:
        attempt += f" (reruns: {summary.reruns})"
    fields: list[tuple[str, RenderableType]] = [
        ("Name", summary.name),
        ("Namespace", summary.namespace),
        ("Flow", summary.flow),
        ("Phase", _phase(summary.phase)),
        ("Attempt", attempt),
        ("Started", when(summary.start_time)),
    ]
    if summary.completion_time is not None:
        fields.append(("Completed", when(summary.completion_time)))
    fields += [("Duration", _text(summary.duration)), ("Message", _text(summary.message))]
    if summary.waiting_for:
        fields.append(("Waiting for", describe_waits(summary.waiting_for)))
    if summary.cancel_requested and not summary.finished:
        fields.append(("Cancel", "requested (spec.cancel is true)"))
    if summary.status_error:
        fields.append(("Warning", summary.status_error))
    return fields


def summary_grid(summary: RunSummary, now: datetime) -> Table:
    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in summary_fields(summary, now):
        grid.add_row(f"{key}:", value)
    return grid


def plain_text(*renderables: RenderableType, width: int = 1000) -> str:
    """Renderables as plain text without colours or trailing spaces, one blank line between them.

    ``width`` is wide enough that a table piped to a file or a test keeps each row on one line.
    """
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    for index, item in enumerate(renderables):
        if index:
            console.print()
        console.print(item)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def dump(data: Any, fmt: OutputFormat) -> str:
    """``data`` as JSON (indented) or YAML (block style, keys in insertion order)."""
    if fmt is OutputFormat.YAML:
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    return json.dumps(data, indent=2) + "\n"


def runs_document(summaries: Sequence[RunSummary]) -> dict[str, Any]:
    """`list -o json|yaml`: ``{"items": [...]}``, one summary per run, without the task rows."""
    return {"items": [s.to_dict(with_tasks=False) for s in summaries]}
