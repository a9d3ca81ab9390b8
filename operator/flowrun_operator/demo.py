"""`make demo`: the embedded control plane, the chart (CRDs + limits), the operator, and example runs.

Everything shown is real: real kube-apiserver, real kubectl and helm, the operator as a process; only
the nodes are simulated (KWOK), so pods "run" for the duration their annotations ask for.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flowrun_operator.devcluster import DevCluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def banner(text: str) -> None:
    print(f"\n\033[1m=== {text}\033[0m", flush=True)


def tool(name: str) -> str:
    cache = Path(os.environ.get("FLOWRUN_CACHE", Path.home() / ".cache" / "flowrun-operator"))
    for candidate in (Path(sys.executable).parent / name, cache / "bin" / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        sys.exit(f"demo: {name} not found; run `make tools` (and `make venv`)")
    return found


def show(*argv: str, env: dict[str, str]) -> str:
    print(f"$ {' '.join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))}", flush=True)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    print((result.stdout + result.stderr).rstrip(), flush=True)
    if result.returncode != 0:
        raise SystemExit(f"demo: command failed with exit code {result.returncode}")
    return result.stdout


def phases(kubectl: str, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(
        [kubectl, "get", "flowruns", "-o", "json"], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in json.loads(out)["items"]}


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: the operator exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"demo: the operator did not become healthy in {timeout:.0f}s; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default=".devcluster", help="where the control plane keeps its state")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running at the end")
    args = parser.parse_args()
    keep = args.keep or os.environ.get("DEMO_KEEP") == "1"

    kubectl, helm = tool("kubectl"), tool("helm")
    cluster = DevCluster(Path(args.state_dir).resolve())
    operator: subprocess.Popen[bytes] | None = None
    banner("Starting the embedded control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK)")
    started = time.monotonic()
    cluster.start()
    print(f"ready in {time.monotonic() - started:.1f}s; kubeconfig: {cluster.kubeconfig}")
    env = {**os.environ, **cluster.env()}
    try:
        show(kubectl, "get", "nodes", env=env)

        banner("Installing the chart: CRDs and ConcurrencyLimits from examples/demo-values.yaml")
        show(
            helm, "upgrade", "--install", "flowrun", str(REPO / "charts" / "flowrun-operator"),
            "--namespace", "default", "-f", str(EXAMPLES / "demo-values.yaml"), "--wait", env=env,
        )  # fmt: skip
        show(kubectl, "get", "crds", env=env)
        show(kubectl, "get", "concurrencylimits", env=env)

        banner("Starting the operator")
        log = cluster.log_dir / "operator.log"
        port = 18080
        with log.open("wb") as out:
            operator = subprocess.Popen(
                [sys.executable, "-m", "flowrun_operator.main", f"--liveness=http://127.0.0.1:{port}/healthz"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_healthy(port, operator, log)
        print(f"operator running (pid {operator.pid}, log {log})")

        banner("kubectl get flowruns -w, while the examples are applied")
        watch = subprocess.Popen([kubectl, "get", "flowruns", "-w"], env=env)
        try:
            time.sleep(0.5)
            for example in ("hello-flowrun.yaml", "failing-flowrun.yaml", "training-runs.yaml", "etl-dag.yaml"):
                subprocess.run([kubectl, "apply", "-f", str(EXAMPLES / example)], env=env, check=True,
                               stdout=subprocess.DEVNULL)  # fmt: skip
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                current = phases(kubectl, env)
                if current and all(p in TERMINAL for p in current.values()):
                    break
                time.sleep(0.5)
            else:
                raise SystemExit(f"demo: runs did not finish in time: {current}")
            time.sleep(0.5)
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=10)

        banner("Final state")
        show(kubectl, "get", "flowruns", env=env)
        show(kubectl, "get", "concurrencylimits", env=env)
        show(kubectl, "get", "jobs", env=env)
        banner("The failing run's history (kubectl get events)")
        show(kubectl, "get", "events", "--field-selector", "involvedObject.name=failing", "--sort-by=.eventTime",
             "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message", env=env)  # fmt: skip
        banner("Task runs of the DAG (kubectl flowrun get etl)")
        show(sys.executable, "-m", "flowrun_operator.cli", "get", "etl", env=env)
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=15)
        if keep:
            banner("Cluster left running")
            print(f"export KUBECONFIG={cluster.kubeconfig}\nstop it with: make cluster-down")
        else:
            cluster.stop()
            print("\ncontrol plane stopped (run `make demo DEMO_KEEP=1` to keep it running)")


if __name__ == "__main__":
    main()
