"""A small in-memory API for unit tests of the engine: stores objects, hands out resourceVersions and
delivers watch events to the engine when the test says so (no Job controller: tests move Jobs by hand)."""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from flowrun_operator.api.common import FLOWRUN_PLURAL, LIMIT_PLURAL
from flowrun_operator.kube.client import Conflict, ListedPage

_versions = itertools.count(1)


def _stamp(obj: dict[str, Any]) -> None:
    obj["metadata"]["resourceVersion"] = str(next(_versions))


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []  # (object name, reason, message)
        self.watch: list[tuple[str, str, dict[str, Any]]] = []  # (kind, type, object) not yet delivered
        self.fail: dict[str, list[BaseException]] = {}  # verb -> errors to raise, in order
        self.calls: list[tuple[str, str]] = []
        self.page_size = 1000
        # Called with each page of a list just before the engine gets it (to look at the engine, or to raise).
        self.on_page: Callable[[ListedPage], None] | None = None

    # --------------------------------------------------------------------------- test controls

    def _maybe_fail(self, verb: str) -> None:
        queue = self.fail.get(verb)
        if queue:
            raise queue.pop(0)

    def _emit(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        self.watch.append((kind, type_, copy.deepcopy(obj)))

    def deliver(self, engine: Any) -> None:
        pending, self.watch = self.watch, []
        for kind, type_, obj in pending:
            getattr(engine, f"on_{kind}")(type_, obj)

    def add(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "ns")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        meta.setdefault("generation", 1)
        _stamp(obj)
        self.objects[(kind, meta["namespace"], meta["name"])] = obj
        self._emit(kind, "ADDED", obj)
        return obj

    def update(self, kind: str, name: str, mutate: Any, namespace: str = "ns") -> dict[str, Any]:
        obj = self.objects[(kind, namespace, name)]
        spec_before = copy.deepcopy(obj.get("spec"))
        mutate(obj)
        if kind != "job" and obj.get("spec") != spec_before:
            obj["metadata"]["generation"] = int(obj["metadata"].get("generation") or 1) + 1
        _stamp(obj)
        self._emit(kind, "MODIFIED", obj)
        return obj

    def remove(self, kind: str, name: str, namespace: str = "ns") -> None:
        obj = self.objects.pop((kind, namespace, name))
        _stamp(obj)
        self._emit(kind, "DELETED", obj)

    def jobs(self, namespace: str = "ns") -> list[dict[str, Any]]:
        return [o for (k, ns, _), o in sorted(self.objects.items()) if k == "job" and ns == namespace]

    def finish_job(self, name: str, ok: bool = True, namespace: str = "ns") -> None:
        def mutate(job: dict[str, Any]) -> None:
            condition = "Complete" if ok else "Failed"
            job["status"] = {
                "conditions": [
                    {
                        "type": condition,
                        "status": "True",
                        "reason": "Completed" if ok else "BackoffLimitExceeded",
                        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                ],
                "succeeded" if ok else "failed": 1,
            }

        self.update("job", name, mutate, namespace)

    def start_job(self, name: str, namespace: str = "ns") -> None:
        self.update("job", name, lambda j: j.__setitem__("status", {"active": 1, "ready": 1}), namespace)

    # ---------------------------------------------------------------------------- the Kube API

    async def list_pages(self, namespaces: Iterable[str] | None) -> AsyncIterator[ListedPage]:
        """Limits, Jobs, then runs, `page_size` at a time, all from one snapshot taken at the first page."""
        self.calls.append(("list", ""))
        self._maybe_fail("list")
        version = int(next(_versions))
        snapshot = {k: copy.deepcopy(o) for k, o in sorted(self.objects.items())}
        for kind, plural in (("limit", LIMIT_PLURAL), ("job", "jobs"), ("run", FLOWRUN_PLURAL)):
            objs = [o for (k, _, _), o in snapshot.items() if k == kind]
            for start in range(0, max(len(objs), 1), self.page_size):
                if start:
                    self._maybe_fail("list")
                page = ListedPage(plural, objs[start : start + self.page_size], version)
                if self.on_page is not None:
                    self.on_page(page)
                yield page

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        kind = "run" if plural == FLOWRUN_PLURAL else "limit"
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get(("job", namespace, name))
        return copy.deepcopy(found) if found else None

    async def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", body["metadata"]["name"]))
        self._maybe_fail("create")
        if ("job", namespace, body["metadata"]["name"]) in self.objects:
            raise Conflict(body["metadata"]["name"])
        return copy.deepcopy(self.add("job", body))

    async def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))
        self._maybe_fail("delete")
        if ("job", namespace, name) not in self.objects:
            return
        # Foreground deletion: the Job stays, marked, until the test removes it (its pods are gone).
        self.update("job", name, lambda j: j["metadata"].__setitem__("deletionTimestamp", "2026-01-01T00:00:00Z"))

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("patch", name))
        self._maybe_fail("patch")
        kind = "run" if plural == FLOWRUN_PLURAL else "limit"
        if (kind, namespace, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        if (
            resource_version
            and self.objects[(kind, namespace, name)]["metadata"]["resourceVersion"] != resource_version
        ):
            raise ApiException(status=409, reason="Conflict")

        def mutate(obj: dict[str, Any]) -> None:
            merged = dict(obj.get("status") or {})
            for key, value in status.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = json.loads(json.dumps(value))
            obj["status"] = merged

        return copy.deepcopy(self.update(kind, name, mutate, namespace))

    async def delete_object(self, plural: str, namespace: str, name: str) -> None:
        kind = "run" if plural == FLOWRUN_PLURAL else "limit"
        if (kind, namespace, name) in self.objects:
            self.remove(kind, name, namespace)

    async def post_event(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], reason, message))


def flowrun(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body = {"flow": name, "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}, **spec}
    return {
        "apiVersion": "flowrun.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": body,
    }


def limit(name: str, value: int, labels: dict[str, str] | None = None, tag: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"limit": value}
    if tag:
        spec["tag"] = tag
    else:
        spec["selector"] = {"matchLabels": labels or {}}
    return {"apiVersion": "flowrun.io/v1alpha1", "kind": "ConcurrencyLimit", "metadata": {"name": name}, "spec": spec}


__all__ = ["LIMIT_PLURAL", "FakeKube", "flowrun", "limit"]
