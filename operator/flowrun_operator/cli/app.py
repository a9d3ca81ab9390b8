"""`kubectl-flowrun` (also `kubectl flowrun`): inspect and steer FlowRuns from a terminal.

The commands only read FlowRuns and pods and patch FlowRuns (spec.cancel, the rerun annotation); the operator
does the rest. Every API call goes through :mod:`flowrun_operator.client` (the same layer as the dashboard's);
presentation lives in :mod:`.views` and :mod:`.render`.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console, RenderableType

from flowrun_operator.api.flowrun import FlowRunPhase
from flowrun_operator.cli.kube import CliKube
from flowrun_operator.cli.render import (
    OutputFormat,
    dump,
    plain_text,
    runs_document,
    runs_table,
    summary_grid,
    tasks_table,
)
from flowrun_operator.cli.views import (
    CliError,
    RunSummary,
    check_cancel,
    sort_runs,
    summarize,
)
from flowrun_operator.client import FlowRuns, FlowRunView, Timeout

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="kubectl-flowrun",
    help="Inspect and steer FlowRuns: list runs, show their task runs, read task logs, cancel and retry runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The connection options are accepted both before the command (`kubectl flowrun -n ns list`) and after it
# (`kubectl flowrun list -n ns`, what kubectl users type); the latter wins.
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        help="Namespace of the runs (default: the kubeconfig context's namespace, else default).",
        show_default=False,
    ),
]
KubeconfigOption = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig", help="Path of the kubeconfig (default: $KUBECONFIG, else ~/.kube/config).", show_default=False
    ),
]
ContextOption = Annotated[
    str | None,
    typer.Option("--context", help="kubeconfig context to use (default: the current context).", show_default=False),
]
OutputOption = Annotated[
    OutputFormat | None,
    typer.Option("--output", "-o", help="Output format (default: table).", case_sensitive=False, show_default=False),
]
RunArgument = Annotated[str, typer.Argument(help="Name of the FlowRun.", show_default=False)]
WaitOption = Annotated[bool, typer.Option("--wait", help="Wait until the run has finished.")]
TimeoutOption = Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait with --wait.")]


@dataclass
class Globals:
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    output: OutputFormat | None = None


@app.callback()
def main(
    ctx: typer.Context,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    output: OutputOption = None,
) -> None:
    """Inspect and steer FlowRuns (flowrun.io/v1alpha1): list, get, logs, cancel, retry."""
    ctx.obj = Globals(namespace, kubeconfig, context, output)


class Session:
    """The options of one command (its own, else the global ones) and a lazily opened API connection."""

    def __init__(
        self,
        ctx: typer.Context,
        namespace: str | None,
        kubeconfig: str | None,
        context: str | None,
        output: OutputFormat | None = None,
    ) -> None:
        defaults = ctx.find_object(Globals) or Globals()
        self._namespace = namespace or defaults.namespace
        self._kubeconfig = kubeconfig or defaults.kubeconfig
        self._context = context or defaults.context
        self.output = output or defaults.output or OutputFormat.TABLE
        self._kube: CliKube | None = None

    @property
    def kube(self) -> CliKube:
        if self._kube is None:
            self._kube = CliKube(self._kubeconfig, self._context)
        return self._kube

    @property
    def namespace(self) -> str:
        return self._namespace or self.kube.default_namespace

    def close(self) -> None:
        if self._kube is not None:
            self._kube.close()

    @property
    def runs(self) -> FlowRuns:
        return self.kube.runs(self.namespace)

    def summary(self, run: str) -> RunSummary:
        return summarize(self.runs.get(run).raw, _now())

    def wait_for(self, run: str, done: Callable[[FlowRunView], bool], timeout: float, what: str) -> RunSummary:
        """Wait on a watch of the run (the client's ``wait``) and summarize the run as it was then."""
        try:
            found = self.runs.wait(run, until=done, timeout=timeout)
        except Timeout as error:
            phase = str(error.last.phase) if error.last is not None and error.last.phase else "-"
            raise CliError(f'timed out after {timeout:g}s waiting for flowrun "{run}" {what} (phase {phase})') from None
        return summarize(found.raw, _now())


def _now() -> datetime:
    return datetime.now(UTC)


def _fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def _note(message: str) -> None:
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Expected failures end as ``error: ...`` on stderr and an exit code, never as a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CliError as error:
            _fail(error.message)
            raise typer.Exit(error.code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader went away (`... | head`): stop quietly, and keep Python from complaining at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(1) from None

    return wrapper


def _show(*renderables: RenderableType) -> None:
    """Tables in colour on a terminal; plain text without trailing spaces when piped."""
    console = Console()
    if not console.is_terminal:
        sys.stdout.write(plain_text(*renderables))
        return
    for index, item in enumerate(renderables):
        if index:
            console.print()
        console.print(item)


# ---------------------------------------------------------------------------------------------- commands


@app.command("list")
@handles_errors
def list_runs(
    ctx: typer.Context,
    phase: Annotated[
        list[FlowRunPhase] | None,
        typer.Option("--phase", case_sensitive=False, help="Only runs in this phase (repeatable).", show_default=False),
    ] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Runs of every namespace.")] = False,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    output: OutputOption = None,
) -> None:
    """List flow runs: NAME, FLOW, PHASE, ATTEMPT, STARTED, DURATION, MESSAGE."""
    session = Session(ctx, namespace, kubeconfig, context, output)
    try:
        scope = None if all_namespaces else session.namespace
        # Phases are filtered by the API server (the CRD's selectable field status.phase).
        found = session.runs.list(phase=phase or None, all_namespaces=all_namespaces)
        now = _now()
        summaries = sort_runs([summarize(run.raw, now) for run in found])
        if session.output is not OutputFormat.TABLE:
            sys.stdout.write(dump(runs_document(summaries), session.output))
        elif summaries:
            _show(runs_table(summaries, now, all_namespaces=all_namespaces))
        else:
            where = "in any namespace" if scope is None else f'in namespace "{scope}"'
            which = f" in phase {' or '.join(str(p) for p in phase)}" if phase else ""
            _note(f"No flow runs{which} found {where}.")
    finally:
        session.close()


@app.command()
@handles_errors
def get(
    ctx: typer.Context,
    run: RunArgument,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    output: OutputOption = None,
) -> None:
    """Show a run's summary and its task runs: TASK, STATE, ATTEMPT, STARTED, DURATION, MESSAGE."""
    session = Session(ctx, namespace, kubeconfig, context, output)
    try:
        now = _now()
        summary = summarize(session.runs.get(run).raw, now)
        if session.output is OutputFormat.TABLE:
            _show(summary_grid(summary, now), tasks_table(summary.tasks, now))
        else:
            sys.stdout.write(dump(summary.to_dict(), session.output))
    finally:
        session.close()


@app.command()
@handles_errors
def logs(
    ctx: typer.Context,
    run: RunArgument,
    task: Annotated[
        str | None,
        typer.Argument(help="Task whose logs to show (required for a run with tasks).", show_default=False),
    ] = None,
    attempt: Annotated[
        int | None,
        typer.Option("--attempt", min=1, help="Attempt to show (default: the current one).", show_default=False),
    ] = None,
    container: Annotated[
        str | None,
        typer.Option("--container", "-c", help="Container of the pod (default: its first).", show_default=False),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the log while the pod runs.")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", min=0, help="Only the last N lines.", show_default=False)
    ] = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Print the log of the pod of a task run's Job (the current attempt unless --attempt is given)."""
    session = Session(ctx, namespace, kubeconfig, context)
    try:
        stream = session.runs.logs(run, task, attempt=attempt, container=container, follow=follow, tail=tail)
        for note in stream.notes:
            _note(note)
        out = sys.stdout.buffer
        for chunk in stream.chunks:
            out.write(chunk)
            if follow:
                out.flush()
        out.flush()
    finally:
        session.close()


@app.command()
@handles_errors
def cancel(
    ctx: typer.Context,
    run: RunArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Cancel a run (sets spec.cancel): the operator deletes its Jobs and the phase becomes Cancelled."""
    session = Session(ctx, namespace, kubeconfig, context)
    try:
        summary = session.summary(run)
        if check_cancel(summary):
            session.runs.cancel(run)
            typer.echo(f'flowrun "{run}" cancel requested; the operator deletes its Jobs and marks it Cancelled')
        else:
            typer.echo(f'flowrun "{run}": cancel was already requested (phase {summary.phase or "-"})')
        if wait:
            final = session.wait_for(run, lambda r: r.finished, timeout, "to finish")
            typer.echo(f'flowrun "{run}" is {final.phase}')
    finally:
        session.close()


@app.command()
@handles_errors
def retry(
    ctx: typer.Context,
    run: RunArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = 600.0,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Re-run a Failed run: its failed and skipped tasks (or its single Job) run again as a new attempt.

    With --wait, exit 0 only if the run then succeeds.
    """
    session = Session(ctx, namespace, kubeconfig, context)
    try:
        summary = session.summary(run)
        rerun = session.runs.retry(run)
        what = "its failed and skipped tasks" if summary.has_tasks else "it"
        typer.echo(f'flowrun "{run}" rerun {rerun} requested; the operator runs {what} again as a new attempt')
        if wait:
            final = session.wait_for(
                run, lambda r: r.reruns >= rerun and r.finished, timeout, f"to finish rerun {rerun}"
            )
            if final.phase != FlowRunPhase.SUCCEEDED:
                detail = f": {final.message}" if final.message else ""
                raise CliError(f'flowrun "{run}" is {final.phase} after rerun {rerun}{detail}')
            typer.echo(f'flowrun "{run}" is {final.phase}')
    finally:
        session.close()
