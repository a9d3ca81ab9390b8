"""Fixtures for tests that need the operator: CRDs installed once, one operator process per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.kube import Cluster, run_kubectl
from support.operator import REPO, OperatorProcess


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    run_kubectl("apply", "-f", str(REPO / "crds"), kubeconfig=cluster.kubeconfig)
    for name in ("flowruns.flowrun.io", "concurrencylimits.flowrun.io", "flowschedules.flowrun.io"):
        run_kubectl(
            "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s", kubeconfig=cluster.kubeconfig
        )


@pytest.fixture
def operator(crds: None, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator watching only this test's namespace, so a test may kill and restart it."""
    process = OperatorProcess([namespace], tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        errors = [line for line in process.logs().splitlines() if "Traceback" in line]
        assert not errors, f"the operator logged tracebacks:\n{process.logs()[-5000:]}"
