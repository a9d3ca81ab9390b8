"""``flowrun-devcluster``: start, stop and inspect the embedded control plane.

flowrun-devcluster up        # start (state in ./.devcluster), print the kubeconfig
flowrun-devcluster status    # components, pids, API server readiness
flowrun-devcluster down      # stop every component
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .launcher import DevCluster, DevClusterError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Embedded Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK).",
)

StateDir = Annotated[
    Path,
    typer.Option("--state-dir", "-d", help="Directory for certificates, data, logs and pid files."),
]


def _export_lines(cluster: DevCluster) -> None:
    typer.echo(f"kubeconfig: {cluster.kubeconfig}")
    typer.echo(f"export KUBECONFIG={cluster.kubeconfig}")


@app.command()
def up(
    state_dir: StateDir = Path(".devcluster"),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each readiness check.")] = 90.0,
    restart: Annotated[bool, typer.Option(help="Restart even if a healthy cluster is running.")] = False,
) -> None:
    """Start the control plane (a fresh, empty cluster) and print its kubeconfig."""
    cluster = DevCluster(state_dir, timeout=timeout, die_with_parent=False)
    if not restart and all(s.running for s in cluster.status()) and cluster.is_ready():
        typer.echo(f"already running ({cluster.server}); logs in {cluster.log_dir}", err=True)
        _export_lines(cluster)
        return
    try:
        cluster.start()
    except DevClusterError as e:
        typer.echo(f"flowrun-devcluster: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(
        f"control plane ready in {cluster.startup_seconds or 0:.1f}s ({cluster.server}); logs in {cluster.log_dir}",
        err=True,
    )
    _export_lines(cluster)


@app.command()
def down(state_dir: StateDir = Path(".devcluster")) -> None:
    """Stop every component started from the state directory."""
    cluster = DevCluster(state_dir)
    running = [s for s in cluster.status() if s.running]
    cluster.stop()
    typer.echo(f"stopped {len(running)} component(s)" if running else "nothing was running")


@app.command()
def status(state_dir: StateDir = Path(".devcluster")) -> None:
    """Show each component's pid and whether the API server is ready (exit code 1 if not)."""
    cluster = DevCluster(state_dir)
    states = cluster.status()
    for s in states:
        state = f"running (pid {s.pid})" if s.running else "stopped"
        typer.echo(f"{s.name:<24} {state:<22} {s.log_path}")
    ready = all(s.running for s in states) and cluster.is_ready()
    if ready:
        typer.echo(f"API server ready at {cluster.server}")
        _export_lines(cluster)
    else:
        typer.echo("cluster is not ready")
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
