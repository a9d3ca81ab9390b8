"""`kubectl flowrun ui`: the dashboard on this machine's loopback interface, with the user's kubeconfig."""

from __future__ import annotations

from typing import Annotated

import typer

from flowrun_operator.cli.app import ContextOption, KubeconfigOption, NamespaceOption, Session, app, handles_errors
from flowrun_operator.cli.views import CliError

LOOPBACK = "127.0.0.1"


@app.command()
@handles_errors
def ui(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    allow_writes: Annotated[
        bool, typer.Option("--allow-writes", help="Show Cancel and Retry buttons (read-only without it).")
    ] = False,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Serve the web dashboard on 127.0.0.1 (only this machine can reach it) and print its URL."""
    # The web stack loads only for this command, so the others start as fast as before.
    from flowrun_operator.ui.server import serve

    session = Session(ctx, namespace, kubeconfig, context)
    connection = session.kube
    connection.default_namespace = session.namespace
    try:
        serve(
            connection,
            host=LOOPBACK,
            port=port,
            allow_writes=allow_writes,
            on_ready=lambda url: typer.echo(f"Dashboard at {url} (namespace {session.namespace}; Ctrl-C stops it)"),
        )
    except OSError as error:
        raise CliError(f"cannot listen on {LOOPBACK}:{port}: {error.strerror or error}") from error
    finally:
        session.close()
