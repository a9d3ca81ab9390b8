"""Embedded Kubernetes control plane for development and tests (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and KWOK as local processes).

``DevCluster`` starts and stops it from Python; ``flowrun-devcluster up|down|status`` from a shell. How
simulated pods behave (the ``flowrun.io/sim-*`` annotations) is described in :mod:`.stages`.
"""

from .launcher import COMPONENTS, ComponentStatus, DevCluster, DevClusterError, default_bin_dir
from .stages import DURATION_ANNOTATION, EXIT_CODE_ANNOTATION, NODE_NAME

__all__ = [
    "COMPONENTS",
    "DURATION_ANNOTATION",
    "EXIT_CODE_ANNOTATION",
    "NODE_NAME",
    "ComponentStatus",
    "DevCluster",
    "DevClusterError",
    "default_bin_dir",
]
