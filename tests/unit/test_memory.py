"""Process-level memory and garbage-collection settings (flowrun_operator.memory)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from flowrun_operator import memory


class Node:
    other: Any = None


def test_garbage_collection_is_tuned_and_the_loaded_objects_are_frozen() -> None:
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        memory.tune_garbage_collection()
        assert gc.get_threshold() == memory.GC_THRESHOLDS != before
        assert gc.get_freeze_count() > 10_000, "the imported modules' objects are out of the collector's walk"
        # A reference cycle made after the freeze is still found and freed.
        cycle = Node()
        cycle.other = cycle
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
