"""`flowrun-operator` options for leader election, metrics and liveness: bad values stop it at once with a
message naming the option, before anything connects to a cluster."""

from __future__ import annotations

import pytest

from flowrun_operator import main as entry


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as raised:
        entry.main(argv)
    assert raised.value.code not in (0, None)
    return capsys.readouterr().err + str(raised.value.code)


def test_unsafe_election_timings(capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(["--leader-elect", "--leader-election-lease-duration", "5"], capsys)
    assert "lease duration (5s) must be greater than the renew deadline (10s)" in err


def test_election_timings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEADER_ELECT", "true")
    monkeypatch.setenv("LEADER_ELECTION_RETRY_PERIOD", "9")
    assert "must be greater than 1.2 x the retry period (9s)" in fails([], capsys)
    monkeypatch.setenv("LEADER_ELECTION_RETRY_PERIOD", "soon")
    assert "LEADER_ELECTION_RETRY_PERIOD must be a number of seconds, got 'soon'" in fails([], capsys)


def test_bad_metrics_port(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--metrics-port must be 0..65535" in fails(["--metrics-port", "70000"], capsys)
    monkeypatch.setenv("METRICS_PORT", "http")
    assert "METRICS_PORT must be an integer" in fails([], capsys)


def test_bad_liveness_stall_seconds(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIVENESS_STALL_SECONDS", "-1")
    assert "LIVENESS_STALL_SECONDS must be > 0" in fails([], capsys)


def test_bad_position_refresh_budget(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("POSITION_REFRESHES_PER_DEPARTURE", "often")
    assert "POSITION_REFRESHES_PER_DEPARTURE must be a number, got 'often'" in fails([], capsys)
    monkeypatch.setenv("POSITION_REFRESHES_PER_DEPARTURE", "6")
    assert "POSITION_REFRESHES_PER_DEPARTURE must be between 0 and 5" in fails([], capsys)
