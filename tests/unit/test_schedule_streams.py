"""What the FlowSchedule controller knows of its runs when its watch stream has to start over (410 Gone): the
fresh list of the scope replaces it, deletions included, and other namespaces are left as they were."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from flowrun_operator.api.flowschedule import SCHEDULE_LABEL
from flowrun_operator.schedules.controller import ScheduleController


def run(namespace: str, name: str, schedule: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "labels": {SCHEDULE_LABEL: schedule}},
        "spec": {"flow": "f"},
        "status": {},
    }


class ListingApi:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.version = 10

    async def list_runs_at(
        self, namespaces: Iterable[str] | None, schedule: str | None = None
    ) -> tuple[list[dict[str, Any]], dict[str | None, int]]:
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        self.version += 1
        found = [i for i in self.items if scopes == [None] or i["metadata"]["namespace"] in scopes]
        return found, dict.fromkeys(scopes, self.version)


def test_a_fresh_list_replaces_the_known_runs_of_its_scope_only() -> None:
    api = ListingApi()
    api.items = [run("a", "nightly-1", "nightly"), run("a", "nightly-2", "nightly"), run("b", "hourly-1", "hourly")]
    controller = ScheduleController(api, ["a", "b"])  # type: ignore[arg-type]

    async def scenario() -> tuple[dict[str | None, int], int]:
        seeded = await controller.seed()
        # Meanwhile (unseen by the stream): nightly-1 and hourly-1 deleted, nightly-3 created.
        api.items = [run("a", "nightly-2", "nightly"), run("a", "nightly-3", "nightly")]
        return seeded, await controller.relist("a")

    seeded, version = asyncio.run(scenario())
    assert seeded == {"a": 11, "b": 11}
    assert version == 12
    assert sorted(controller.orphans[("a", "nightly")]) == ["nightly-2", "nightly-3"]
    assert sorted(controller.orphans[("b", "hourly")]) == ["hourly-1"]  # namespace b was not re-listed
