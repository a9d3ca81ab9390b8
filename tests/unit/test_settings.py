"""Settings from the environment: defaults when unset, and a bad value named with what was expected."""

from __future__ import annotations

import pytest

from flowrun_operator.settings import env_flag, env_float, env_int


def test_unset_and_blank_give_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_SETTING", raising=False)
    assert env_float("X_SETTING", 2.5) == 2.5
    monkeypatch.setenv("X_SETTING", "  ")
    assert env_int("X_SETTING", 7) == 7
    assert env_flag("X_SETTING") is False


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("TRUE", True), (" on ", True), ("no", False)])
def test_flags(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("X_SETTING", raw)
    assert env_flag("X_SETTING") is expected


def test_values_within_bounds_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_SETTING", "0")
    assert env_float("X_SETTING", 1.0, low=0, high=5) == 0.0
    monkeypatch.setenv("X_SETTING", "5")
    assert env_float("X_SETTING", 1.0, low=0, high=5) == 5.0
    assert env_int("X_SETTING", 1, low=5) == 5


@pytest.mark.parametrize(
    ("raw", "checks", "message"),
    [
        ("soon", {"what": "a number of seconds"}, "X_SETTING must be a number of seconds, got 'soon'"),
        ("nan", {}, "X_SETTING must be a finite number, got 'nan'"),
        ("inf", {"positive": True}, "X_SETTING must be a finite number, got 'inf'"),
        ("0", {"positive": True}, "X_SETTING must be > 0, got '0'"),
        ("5.5", {"low": 0, "high": 5}, "X_SETTING must be between 0 and 5, got '5.5'"),
        ("-1", {"low": 0}, "X_SETTING must be >= 0, got '-1'"),
        ("9", {"high": 8}, "X_SETTING must be <= 8, got '9'"),
    ],
)
def test_bad_floats_are_named(
    monkeypatch: pytest.MonkeyPatch, raw: str, checks: dict[str, object], message: str
) -> None:
    monkeypatch.setenv("X_SETTING", raw)
    with pytest.raises(ValueError) as raised:
        env_float("X_SETTING", 1.0, **checks)  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_bad_ints_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_SETTING", "1.5")
    with pytest.raises(ValueError, match=r"X_SETTING must be an integer, got '1.5'"):
        env_int("X_SETTING", 0)
    monkeypatch.setenv("X_SETTING", "70000")
    with pytest.raises(ValueError, match=r"X_SETTING must be between 0 and 65535, got '70000'"):
        env_int("X_SETTING", 0, low=0, high=65535)
