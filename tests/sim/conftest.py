"""The simulation suite: no cluster, virtual time, hypothesis profiles.

SIM_PROFILE=ci (default, what `make test` runs) or long; SIM_SEED=<n> replays a search; SIM_ENGINE=legacy runs
everything against the former Reconciler.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# A replay depends on SIM_SEED alone, not on a local example database.
_COMMON = settings(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", _COMMON, max_examples=int(os.environ.get("SIM_EXAMPLES", "450")))
settings.register_profile("long", _COMMON, max_examples=int(os.environ.get("SIM_EXAMPLES", "20000")))
settings.load_profile(os.environ.get("SIM_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sim: deterministic simulation of the admission engine (no cluster)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/sim/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.sim)
