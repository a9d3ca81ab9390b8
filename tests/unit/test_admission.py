from datetime import UTC, datetime, timedelta

from flowrun_operator.scheduling.admission import Request, admit, ordinal

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def req(key: str, *limits: str, priority: int = 0, age: int = 0) -> Request:
    return Request(key, priority, T0 + timedelta(seconds=age), limits)


def test_fifo_within_one_limit() -> None:
    result = admit([req("c", "gpu", age=3), req("a", "gpu", age=1), req("b", "gpu", age=2)], {"gpu": 2}, {})
    assert result.admitted == ["a", "b"]
    assert [w.describe() for w in result.waiting["c"]] == ["waiting for gpu: 2/2 in use, 1st in line"]
    assert result.usage["gpu"].in_use == 2
    assert result.usage["gpu"].pending == 1
    assert result.usage["gpu"].active == ("a", "b")


def test_priority_before_creation_time() -> None:
    result = admit([req("old", "gpu", age=1), req("urgent", "gpu", age=5, priority=10)], {"gpu": 1}, {})
    assert result.admitted == ["urgent"]
    assert result.waiting["old"][0].position == 1


def test_holders_count_against_the_limit() -> None:
    result = admit([req("new", "gpu")], {"gpu": 2}, {"gpu": ["x", "y"]})
    assert result.admitted == []
    assert result.waiting["new"][0].in_use == 2


def test_limit_lowered_below_holders_admits_nobody_and_preempts_nobody() -> None:
    result = admit([req("new", "gpu")], {"gpu": 1}, {"gpu": ["x", "y", "z"]})
    assert result.admitted == []
    assert result.usage["gpu"].in_use == 3
    assert result.usage["gpu"].active == ("x", "y", "z")


def test_zero_limit_pauses_everything() -> None:
    result = admit([req("a", "paused"), req("b", "paused")], {"paused": 0}, {})
    assert result.admitted == []
    assert [result.waiting[k][0].position for k in ("a", "b")] == [1, 2]


def test_needs_a_slot_in_every_matching_limit() -> None:
    result = admit([req("both", "a", "b")], {"a": 1, "b": 1}, {"b": ["busy"]})
    assert result.admitted == []
    assert [w.limit for w in result.waiting["both"]] == ["b"]
    # the slot of `a` was not taken by the blocked request
    assert result.usage["a"].in_use == 0


def test_waiting_for_one_limit_never_blocks_another() -> None:
    result = admit([req("first", "a", age=0), req("second", "b", age=1)], {"a": 0, "b": 1}, {})
    assert result.admitted == ["second"]
    assert result.waiting["first"][0].limit == "a"


def test_unlimited_requests_are_admitted() -> None:
    result = admit([req("free")], {"gpu": 0}, {})
    assert result.admitted == ["free"]


def test_unknown_limit_names_are_ignored() -> None:
    result = admit([req("r", "deleted-limit")], {}, {})
    assert result.admitted == ["r"]


def test_positions_per_limit() -> None:
    requests = [req(f"r{i}", "gpu", age=i) for i in range(5)]
    result = admit(requests, {"gpu": 1}, {})
    assert result.admitted == ["r0"]
    assert [result.waiting[f"r{i}"][0].position for i in range(1, 5)] == [1, 2, 3, 4]


def test_ordinal() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip
