"""Timing for the benchmarks: alternatives measured in turn, so that drift (thermal, page cache, other load)
hits each of them alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


def interleaved_times(
    alternatives: Mapping[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each alternative: ``repeats`` rounds, each calling every alternative once, in
    the mapping's order."""
    times: dict[str, list[float]] = {name: [] for name in alternatives}
    for _ in range(repeats):
        for name, run in alternatives.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times
