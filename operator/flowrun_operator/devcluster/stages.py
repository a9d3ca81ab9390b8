"""KWOK configuration: how simulated nodes and pods behave on the embedded control plane.

KWOK (>= 0.8) has no built-in behaviour; it plays the Stage objects in its ``--config``. The launcher ships its
own stage set (``stages/node.yaml`` and ``stages/pod.yaml`` next to this module, derived from the stage files
of the pinned kwok release) so that Jobs behave as they would on real nodes.

Node contract
-------------
A Node annotated ``kwok.x-k8s.io/node=fake`` becomes Ready at once, with the capacity and allocatable it was
created with. The launcher creates one, :data:`NODE_NAME`.

Pod contract (pods bound to a KWOK node)
----------------------------------------
1. Once the scheduler binds the pod, it becomes ``Running`` and ``Ready`` straight away (every container
   ``running``).
2. Pods with ``restartPolicy: Never`` or ``OnFailure`` then finish after the delay in the annotation
   ``flowrun.io/sim-duration`` (a Go duration such as ``"2s"`` or ``"500ms"``; absent, empty or invalid means
   finish at once). The delay counts from the moment the pod became Running.
3. How they finish comes from the annotation ``flowrun.io/sim-exit-code`` (an integer, absent means ``"0"``):

   - ``"0"``: phase ``Succeeded``; every container ``terminated`` with ``exitCode: 0``, reason ``Completed``.
   - anything else, e.g. ``"3"``: phase ``Failed``; every container ``terminated`` with that exit code,
     reason ``Error``. (With ``OnFailure`` a real kubelet would restart the container instead; here the pod
     fails, which is what a Job with ``backoffLimit: 0`` sees anyway.)

4. Pods with ``restartPolicy: Always`` stay Running until deleted.
5. A deleted pod honours its termination grace period, as a kubelet's containers would take that long to
   stop in the worst case. The API server sets ``deletionTimestamp`` to the time of the delete plus the grace
   period (``terminationGracePeriodSeconds``, 30 s unless the pod says otherwise; in whole seconds, so up to a
   second less in effect). Until that instant a pod that has not finished stays exactly as it was (a Running
   pod stays ``Running`` and ``Ready``, containers ``running``, and it never reaches rule 2's finish); then
   KWOK deletes it with grace period 0. A pod already ``Succeeded`` or ``Failed`` is deleted at once. Either
   way its finalizers, such as the Job controller's tracking finalizer, still hold it until their owners
   remove them.

The same pod template also works on a real cluster when its container does the same thing, e.g.
``sh -c "sleep 2; exit 3"`` next to ``flowrun.io/sim-duration: 2s`` and ``flowrun.io/sim-exit-code: "3"``
(see ``tests/support/kube.py``'s ``pod_template``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

__all__ = [
    "DURATION_ANNOTATION",
    "EXIT_CODE_ANNOTATION",
    "NODE_ANNOTATION",
    "NODE_NAME",
    "kwok_config",
    "load_stages",
    "node_manifest",
]

DURATION_ANNOTATION = "flowrun.io/sim-duration"
EXIT_CODE_ANNOTATION = "flowrun.io/sim-exit-code"
NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_NAME = "kwok-node-0"

_STAGE_FILES = ("node.yaml", "pod.yaml")


def load_stages() -> list[dict[str, Any]]:
    """The Stage objects shipped with the package, in file order."""
    stages: list[dict[str, Any]] = []
    folder = resources.files(__package__).joinpath("stages")
    for name in _STAGE_FILES:
        text = folder.joinpath(name).read_text(encoding="utf-8")
        stages.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return stages


def kwok_config(pod_play_parallelism: int = 16) -> str:
    """The multi-document YAML passed to ``kwok --config``: KWOK options plus every Stage."""
    options: dict[str, Any] = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {
            # Hundreds of pods change state at once in tests and benchmarks; the default is 4 workers.
            "podPlayStageParallelism": pod_play_parallelism,
            "nodePlayStageParallelism": 2,
        },
    }
    return yaml.safe_dump_all([options, *load_stages()], sort_keys=False)


def node_manifest(
    name: str = NODE_NAME,
    cpu: str = "64",
    memory: str = "256Gi",
    pods: str = "1000",
) -> dict[str, Any]:
    """A Node that KWOK manages (annotation ``kwok.x-k8s.io/node=fake``), with the given capacity."""
    resources_ = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "spec": {},
        "status": {"capacity": dict(resources_), "allocatable": dict(resources_)},
    }
