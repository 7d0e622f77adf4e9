"""Wall-time helpers shared by the interfaces (the ONNX check) and the benchmarks, so that
neither imports the other. This module must not import torch."""

from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ["timeit"]


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
