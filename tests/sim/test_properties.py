"""Property-based scenarios: the engine's invariants hold whatever hypothesis throws at it.

Reproduce a failure with the command printed in its message (SIM_SEED replays the same search), or with the
@reproduce_failure line hypothesis prints.
"""

from __future__ import annotations

import logging
import os
import random

from hypothesis import given, note, seed
from hypothesis import strategies as st

from sim.harness import Harness, ignored, variant
from sim.scenario import Scenario, scenarios

_PROFILE = os.environ.get("SIM_PROFILE", "ci")
# CI explores the same scenarios on every run (no flakiness); the long profile explores new ones each time.
SEED = int(os.environ.get("SIM_SEED") or (random.SystemRandom().randrange(2**32) if _PROFILE == "long" else 0))
IGNORED = ignored()


def check(scenario: Scenario, test: str) -> None:
    note(f"scenario: {scenario.describe()}")
    result = Harness(scenario).run()
    env = f"SIM_ENGINE={variant()}" + (f" SIM_IGNORE={','.join(sorted(IGNORED))}" if IGNORED else "")
    assert not result.violations, (
        "\n".join(result.violations[:5])
        + f"\nthis scenario: {env} .venv/bin/python tests/sim/replay.py '{scenario.describe()}'"
        + f"\nthe search (SIM_SHRINK=1 for a minimal example): SIM_SEED={SEED} SIM_PROFILE={_PROFILE} {env}"
        + f" .venv/bin/pytest tests/sim/test_properties.py -k {test}"
    )


def setup_module() -> None:
    # The engine logs every injected failure; the assertions say what matters.
    logging.getLogger("flowrun_operator").setLevel(logging.CRITICAL)


@seed(SEED)
@given(scenarios(faults=False, crashes=False))
def test_admission_without_failures(scenario: Scenario) -> None:
    check(scenario, "test_admission_without_failures")


@seed(SEED + 1)
@given(scenarios(faults=True, crashes=True))
def test_admission_with_failures_and_crashes(scenario: Scenario) -> None:
    check(scenario, "test_admission_with_failures_and_crashes")


__all__ = ["st"]
