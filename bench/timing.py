"""Small timing helpers shared by the raw and server halves."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
REPEATS = 5


async def timed(call: Awaitable[T]) -> tuple[float, T]:
    """(seconds, result) of awaiting call."""
    started = time.perf_counter()
    result = await call
    return time.perf_counter() - started, result


async def median_of(make_call: Callable[[int], Awaitable[Any]], repeats: int = REPEATS) -> dict[str, Any]:
    """Run make_call(i) sequentially `repeats` times; median and all samples in seconds."""
    samples = [(await timed(make_call(i)))[0] for i in range(repeats)]
    return {"median_s": statistics.median(samples), "samples_s": samples}


def spread(total: int, count: int = REPEATS) -> list[int]:
    """count frame numbers (1-based) spread evenly over 1..total."""
    if total <= 0:
        return []
    return sorted({1 + (total - 1) * i // max(count - 1, 1) for i in range(count)})


def page_offsets(total: int, limit: int) -> dict[str, int]:
    """Offsets of the first page, the middle page and the last full page."""
    return {"start": 0, "middle": total // 2, "end": max(total - limit, 0)}
