"""Cluster fixtures shared by the integration and end-to-end tests.

``cluster`` (session) starts the embedded control plane once per session in a temporary directory, or, with
``USE_EXISTING_CLUSTER=1``, uses the cluster ``$KUBECONFIG`` points at. Either way ``KUBECONFIG`` is set in
``os.environ`` for the whole session, so subprocesses (kubectl, helm, the operator) use the same cluster.
Nothing here is autouse: unit tests never start a cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowrun_operator.devcluster import DevCluster
from support.kube import Cluster, Kubectl, run_kubectl, unique_name, wait_for


def _use_existing_cluster() -> bool:
    return os.environ.get("USE_EXISTING_CLUSTER", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    previous = os.environ.get("KUBECONFIG")
    if _use_existing_cluster():
        path = Path(previous or Path.home() / ".kube" / "config").expanduser()
        if not path.exists():
            pytest.fail(f"USE_EXISTING_CLUSTER=1 but the kubeconfig {path} does not exist")
        os.environ["KUBECONFIG"] = str(path)
        try:
            yield Cluster(path, None)
        finally:
            _restore_kubeconfig(previous)
        return

    devcluster = DevCluster(tmp_path_factory.mktemp("devcluster"))
    devcluster.start()
    os.environ["KUBECONFIG"] = str(devcluster.kubeconfig)
    try:
        yield Cluster(devcluster.kubeconfig, devcluster)
    finally:
        _restore_kubeconfig(previous)
        devcluster.stop()


def _restore_kubeconfig(previous: str | None) -> None:
    if previous is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = previous


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> Path:
    """Path of the kubeconfig for the cluster under test."""
    return cluster.kubeconfig


@pytest.fixture
def kubectl(cluster: Cluster) -> Kubectl:
    """``kubectl(*args, input=None, check=True, namespace=None)`` running the real kubectl binary."""
    return Kubectl(cluster.kubeconfig)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, with its ``default`` ServiceAccount in place; deleted afterwards
    (without waiting for the deletion to finish)."""
    name = unique_name(f"t-{request.node.name}", max_length=50)
    run_kubectl("create", "namespace", name, kubeconfig=cluster.kubeconfig)
    try:
        wait_for(
            lambda: (
                run_kubectl(
                    "get", "serviceaccount", "default", namespace=name, check=False, kubeconfig=cluster.kubeconfig
                ).returncode
                == 0
            ),
            timeout=30,
            interval=0.1,
            message=f"ServiceAccount default in namespace {name}",
        )
        yield name
    finally:
        run_kubectl(
            "delete",
            "namespace",
            name,
            "--wait=false",
            "--ignore-not-found",
            check=False,
            kubeconfig=cluster.kubeconfig,
        )
