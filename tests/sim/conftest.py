"""The simulation suite: no cluster, virtual time, hypothesis profiles.

SIM_PROFILE=ci (default, what `make test` runs) or long; SIM_SEED=<n> replays a search; SIM_SHRINK=1 shrinks a
failure to a minimal scenario; SIM_ENGINE=legacy runs everything against the former Reconciler.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

# A replay depends on SIM_SEED alone, not on a local example database.
_COMMON = settings(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Shrinking a failure re-runs hundreds of scenarios: CI reports the failing scenario as found (with the command
# that replays it) and stays within its minute; SIM_SHRINK=1 asks for the minimal example.
_PHASES = tuple(Phase) if os.environ.get("SIM_SHRINK") else (Phase.explicit, Phase.reuse, Phase.generate)
settings.register_profile("ci", _COMMON, max_examples=int(os.environ.get("SIM_EXAMPLES", "450")), phases=_PHASES)
settings.register_profile("long", _COMMON, max_examples=int(os.environ.get("SIM_EXAMPLES", "20000")), phases=_PHASES)
settings.load_profile(os.environ.get("SIM_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sim: deterministic simulation of the admission engine (no cluster)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/sim/" in item.path.as_posix():
            item.add_marker(pytest.mark.sim)
