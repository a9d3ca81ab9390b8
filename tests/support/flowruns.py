"""Building FlowRuns and ConcurrencyLimits for tests, and reading their status through kubectl."""

from __future__ import annotations

from typing import Any

from support.kube import Kubectl, pod_template, wait_for


def flowrun(
    name: str,
    *,
    duration: float = 0,
    exit_code: int = 0,
    labels: dict[str, str] | None = None,
    tasks: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"flow": spec.pop("flow", "test-flow"), **spec}
    if tasks is not None:
        body["tasks"] = tasks
    else:
        body["template"] = pod_template(duration, exit_code)
    return {
        "apiVersion": "flowrun.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": body,
    }


def task(name: str, *, duration: float = 0, exit_code: int = 0, **fields: Any) -> dict[str, Any]:
    return {"name": name, "template": pod_template(duration, exit_code), **fields}


def selector_limit(name: str, match_labels: dict[str, str], limit: int) -> dict[str, Any]:
    return {
        "apiVersion": "flowrun.io/v1alpha1",
        "kind": "ConcurrencyLimit",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": match_labels}, "limit": limit},
    }


def tag_limit(name: str, tag: str, limit: int) -> dict[str, Any]:
    return {
        "apiVersion": "flowrun.io/v1alpha1",
        "kind": "ConcurrencyLimit",
        "metadata": {"name": name},
        "spec": {"tag": tag, "limit": limit},
    }


def get(kubectl: Kubectl, namespace: str, name: str, kind: str = "flowrun") -> dict[str, Any]:
    result: dict[str, Any] = kubectl.json("get", kind, name, namespace=namespace)
    return result


def status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    result = kubectl("get", "flowrun", name, "-o", "json", namespace=namespace, check=False)
    if result.returncode != 0:
        return {}
    import json

    found: dict[str, Any] = json.loads(result.stdout).get("status") or {}
    return found


def phase(kubectl: Kubectl, namespace: str, name: str) -> str:
    return str(status(kubectl, namespace, name).get("phase") or "")


def wait_phase(kubectl: Kubectl, namespace: str, name: str, expected: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until the run's phase is `expected`; returns its status."""
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = status(kubectl, namespace, name)
        return last if last.get("phase") == expected else None

    try:
        return wait_for(check, timeout=timeout, message=f"flowrun {name} to reach {expected}")
    except AssertionError as error:
        raise AssertionError(f"{error}\nlast status: {last}") from None


def jobs(kubectl: Kubectl, namespace: str, run: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json("get", "jobs", "-l", f"flowrun.io/run={run}", namespace=namespace)[
        "items"
    ]
    return items


def event_reasons(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    events = kubectl.json(
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=FlowRun",
        namespace=namespace,
    )["items"]
    events.sort(key=lambda e: e.get("eventTime") or e.get("lastTimestamp") or "")
    return [str(e["reason"]) for e in events]


def job_of(kubectl: Kubectl, namespace: str, run: str, attempt: int = 1, task: str | None = None) -> str:
    """The name of the Job the operator gives a run's attempt (it carries a digest of the run's uid)."""
    from flowrun_operator.scheduling.jobs import job_name

    uid = get(kubectl, namespace, run)["metadata"]["uid"]
    return job_name(run, task, attempt, uid)
