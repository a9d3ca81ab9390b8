"""Task graphs: cycle detection and the order tasks become ready in (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one dependency cycle as a path of task names (first name repeated at the end), or None.

    Unknown dependency names are ignored here; the CRD's validation rules refuse them.
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(depends_on, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for dep in depends_on.get(node, ()):
            if dep not in color:
                continue
            if color[dep] == grey:
                return [*stack[stack.index(dep) :], dep]
            if color[dep] == white and (cycle := visit(dep)):
                return cycle
        stack.pop()
        color[node] = black
        return None

    for node in depends_on:
        if color[node] == white and (cycle := visit(node)):
            return cycle
    return None
