"""Settings read from the operator's environment: one parser, one wording of the errors.

A bad value raises ValueError naming the variable, the value and what was expected; `main` turns that into a
usage error at startup, so nothing starts with a setting it would only refuse later.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


def env_int(name: str, default: int, *, low: int | None = None, high: int | None = None) -> int:
    """`name` as an integer in [low, high] (either bound optional); `default` when unset or blank."""
    return _read(name, default, int, "an integer", low, high, positive=False)


def env_float(
    name: str,
    default: float,
    *,
    what: str = "a number",
    low: float | None = None,
    high: float | None = None,
    positive: bool = False,
) -> float:
    """`name` as a number in [low, high] (and > 0 with `positive`); `default` when unset or blank."""
    return _read(name, default, float, what, low, high, positive=positive)


def _read(
    name: str,
    default: N,
    parse: Callable[[str], N],
    what: str,
    low: float | None,
    high: float | None,
    *,
    positive: bool,
) -> N:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {raw!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {raw!r}")
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low:g}, got {raw!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high:g}, got {raw!r}")
    return value
