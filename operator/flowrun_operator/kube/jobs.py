"""The Job the operator creates for one attempt of one unit of work (pure: builds a dict)."""

from __future__ import annotations

import json
from typing import Any

from flowrun_operator.api.common import API_VERSION, ATTEMPT_LABEL, FLOW_LABEL, FLOWRUN_KIND, RUN_LABEL, TASK_LABEL
from flowrun_operator.scheduling.jobs import TAGS_ANNOTATION
from flowrun_operator.scheduling.runstate import RunSnapshot, Unit


def build_job(run: RunSnapshot, unit: Unit, attempt: int, name: str) -> dict[str, Any]:
    """A Job owned by the FlowRun, labelled so the operator (and users) can find it.

    The run's own labels are copied onto the Job: a Job that outlives its FlowRun (deleted, garbage
    collection pending) is still matched by label limits, so its slot is never handed out twice.
    """
    spec = run.spec
    assert spec is not None
    ours = {RUN_LABEL: run.name, FLOW_LABEL: spec.flow, ATTEMPT_LABEL: str(attempt)}
    if unit.task:
        ours[TASK_LABEL] = unit.task
    labels = {**run.labels, **ours}

    template = unit.template.to_api() if unit.template else {"spec": {}}
    pod_meta = template.setdefault("metadata", {}) or {}
    template["metadata"] = pod_meta
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **ours}
    pod_spec = template.setdefault("spec", {})
    pod_spec.setdefault("restartPolicy", "Never")
    env = [
        {"name": "FLOWRUN_NAME", "value": run.name},
        {"name": "FLOWRUN_FLOW", "value": spec.flow},
        {"name": "FLOWRUN_ATTEMPT", "value": str(attempt)},
        {"name": "FLOWRUN_PARAMETERS", "value": json.dumps(spec.parameters, sort_keys=True)},
    ]
    if unit.task:
        env.append({"name": "FLOWRUN_TASK", "value": unit.task})
    for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
        names = {e["name"] for e in env}
        container["env"] = [e for e in container.get("env", []) if e.get("name") not in names] + env

    job_spec: dict[str, Any] = {
        # Retries are the FlowRun's business (one Job per attempt), so a Job never restarts its pod.
        "backoffLimit": 0,
        "template": template,
    }
    if spec.timeout_seconds:
        job_spec["activeDeadlineSeconds"] = spec.timeout_seconds
    annotations = {TAGS_ANNOTATION: ",".join(unit.tags)} if unit.tags else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": run.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": FLOWRUN_KIND,
                    "name": run.name,
                    "uid": run.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }
