from flowrun_operator.scheduling.dag import find_cycle


def test_no_cycle() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_self_cycle() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_cycle_path() -> None:
    cycle = find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_unknown_dependencies_are_ignored() -> None:
    assert find_cycle({"a": ["missing"]}) is None
