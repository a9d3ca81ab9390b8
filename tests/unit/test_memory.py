"""The operator restarts itself on glibc's malloc once, and only when nobody chose an allocator."""

from __future__ import annotations

import pytest

from flowrun_operator import memory


def test_restarts_with_the_same_command_line_when_no_allocator_is_chosen() -> None:
    argv = ["/venv/bin/python", "-m", "flowrun_operator.main", "-n", "a"]
    assert memory.system_malloc_command({}, argv) == argv


@pytest.mark.parametrize("chosen", ["malloc", "pymalloc", "malloc_debug"])
def test_a_chosen_allocator_is_kept(chosen: str) -> None:
    assert memory.system_malloc_command({"PYTHONMALLOC": chosen}, ["python", "-m", "x"]) is None
