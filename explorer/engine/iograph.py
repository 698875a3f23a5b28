"""I/O graphs: packets or bytes per time interval for up to four display filters.

Intervals count from frame 1's time stamp, as Wireshark's: a frame falls in interval
`floor(frame.time_relative / interval)` (sharkd truncates to microseconds first, which changes
nothing for intervals of whole milliseconds), and a frame earlier than frame 1 in none.

A series without a filter needs no dissection: its packets and bytes come from the record
headers (`timeline`), for any stretch of the capture. A filtered series comes from sharkd's
`iograph` while the range ends within its first MAX_INTERVALS intervals (sharkd 4.0 drops every
frame past interval 250,000). Beyond that, sharkd lists the frames the filter matches and they
are counted from the record headers too.

sharkd 4.0 answers `{"iograph": [{"items": [...]}, ...]}`, one entry per graph, in a sparse
encoding: a number is the value of the next interval, a hex string such as "1f" says that the
next value belongs to interval 0x1f (the ones skipped are zero), and trailing zero intervals
are left out.
"""

from __future__ import annotations

import json
import math
from array import array
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import timeline as timelines
from .errors import EngineError
from .sessions import engine
from .sharkd import MAX_REQUEST_BYTES
from .stats import _checked, _recall, _remember
from .timeline import Frames

INTERVALS_MS = [1, 10, 100, 1_000, 10_000, 60_000, 600_000]
UNITS = ["packets", "bytes"]
MAX_SERIES = 4
# The most intervals one answer holds; sharkd's `iograph` serves filtered series while a range
# ends below this (its own limit is 250,000).
MAX_INTERVALS = 200_000


@dataclass
class Series:
    filter: str
    unit: str
    values: list[int]


@dataclass
class IOGraph:
    """Values of intervals first..first+len(values)-1, out of the capture's `total` intervals."""

    interval_ms: int
    series: list[Series]
    first: int = 0
    total: int = 0
    # The nearest intervals outside the answer that may hold a packet of some series, if any.
    previous_active: int | None = None
    next_active: int | None = None

    @property
    def last(self) -> int:
        """Return the interval after the last one answered."""
        return self.first + (len(self.series[0].values) if self.series else 0)


def decode(items: list[Any]) -> list[int]:
    """Expand sharkd's sparse list of interval values."""
    values: list[int] = []
    for item in items:
        if isinstance(item, str):
            index = int(item, 16)
            values.extend([0] * max(index - len(values), 0))
        else:
            values.append(round(float(item)))
    return values


def pair_series(graphs: list[str], filters: list[str]) -> list[tuple[str, str]]:
    """Pair repeated `graph` and `filter` parameters by position into at most MAX_SERIES series.

    A missing unit is packets and a missing filter is every packet, so `?filter=dns` alone is
    one series of DNS packets and no parameter at all is one series of every packet.
    """
    count = min(max(len(graphs), len(filters), 1), MAX_SERIES)
    graphs = graphs + ["packets"] * (count - len(graphs))
    filters = filters + [""] * (count - len(filters))
    return [(filters[i].strip(), graphs[i] or "packets") for i in range(count)]


def interval_label(interval_ms: int) -> str:
    """Return an interval as people say it: 1 ms, 100 ms, 1 s, 1 min, 10 min."""
    if interval_ms < 1_000:
        return f"{interval_ms} ms"
    if interval_ms < 60_000:
        return f"{interval_ms // 1_000} s"
    return f"{interval_ms // 60_000} min"


def interval_range(interval_ms: int, start: Decimal | None, end: Decimal | None) -> tuple[int, int | None]:
    """Return the intervals that cover start..end seconds from frame 1: first, and last + 1 (None: all)."""
    first = math.floor(start * 1000 / interval_ms) if start is not None else 0
    last = math.ceil(end * 1000 / interval_ms) if end is not None else None
    return max(first, 0), last


def _check(
    interval_ms: int, series: list[tuple[str, str]], start: Decimal | None, end: Decimal | None
) -> None:
    if interval_ms not in INTERVALS_MS:
        raise EngineError(
            f"unknown interval {interval_ms} ms: choose one of {', '.join(map(str, INTERVALS_MS))}"
        )
    if not 1 <= len(series) <= MAX_SERIES:
        raise EngineError(f"ask for 1 to {MAX_SERIES} series")
    for _, unit in series:
        if unit not in UNITS:
            raise EngineError(f"unknown unit {unit!r}: choose packets or bytes")
    for bound in (start, end):
        if bound is not None and not (bound.is_finite() and bound >= 0):
            raise EngineError("start and end are seconds from the first packet, 0 or more")
    if start is not None and end is not None and end <= start:
        raise EngineError("the range must end after it starts")


async def _engine_values(path: Path, interval_ms: int, filtered: list[tuple[str, str]]) -> list[array[int]]:
    """Return sharkd's values of each filtered series, from interval 0 to the last it keeps."""
    key = (path, "iograph-engine", interval_ms, tuple(filtered))
    if (known := _recall(key)) is not None:
        return list(known)
    sessions = engine().sessions(path)
    await sessions.wait_loaded()
    values: list[array[int]] = []
    for batch in _batches(interval_ms, filtered):
        params = _iograph_params(interval_ms, batch)
        result = await sessions.call("iograph", params)
        graphs = result.get("iograph", [])
        if len(graphs) != len(batch):
            raise EngineError("the engine answered with the wrong number of graphs")
        values += [array("q", decode(graph.get("items", []))[:MAX_INTERVALS]) for graph in graphs]
    return list(_remember(key, values))


def _iograph_params(interval_ms: int, filtered: list[tuple[str, str]]) -> dict[str, Any]:
    params: dict[str, Any] = {"interval": interval_ms}
    for index, (expression, unit) in enumerate(filtered):
        params[f"graph{index}"] = unit
        params[f"filter{index}"] = expression
    return params


# Room on a request line for everything but the parameters: the JSON-RPC envelope and its id.
REQUEST_ENVELOPE = 100


def _batches(interval_ms: int, filtered: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Split the series into as few `iograph` requests as fit on sharkd's request line.

    Each filter fits (the filter limit sees to it), but four long ones together would not;
    every request walks the whole capture, so series share one whenever they can.
    """
    batches: list[list[tuple[str, str]]] = []
    for series in filtered:
        if batches:
            joined = _iograph_params(interval_ms, [*batches[-1], series])
            if len(json.dumps(joined, separators=(",", ":"))) + REQUEST_ENVELOPE <= MAX_REQUEST_BYTES:
                batches[-1].append(series)
                continue
        batches.append([series])
    return batches


def _nearest_before(values: array[int], index: int) -> int | None:
    return next((i for i in range(min(index, len(values)) - 1, -1, -1) if values[i]), None)


def _nearest_from(values: array[int], index: int) -> int | None:
    return next((i for i in range(index, len(values)) if values[i]), None)


def _closest(candidates: list[int | None], pick: Any) -> int | None:
    found = [c for c in candidates if c is not None]
    return pick(found) if found else None


async def io_graph(
    path: Path,
    interval_ms: int,
    series: list[tuple[str, str]],
    start: Decimal | None = None,
    end: Decimal | None = None,
) -> IOGraph:
    """Return the packets or bytes per interval of each (display filter, unit) series.

    start and end are seconds from frame 1; the answer covers the intervals that overlap them
    (the whole capture without them), at most MAX_INTERVALS of them.
    """
    _check(interval_ms, series, start, end)
    expressions = [await _checked(path, filter_text) for filter_text, _ in series]
    whole = await timelines.timeline(path)
    interval_ns = interval_ms * 1_000_000
    total = whole.everything.intervals(interval_ns)
    wanted_first, wanted_last = interval_range(interval_ms, start, end)
    first = min(wanted_first, total)
    last = total if wanted_last is None else max(min(wanted_last, total), first)
    if last - first > MAX_INTERVALS:
        where = "this range" if start is not None or end is not None else "this capture"
        raise EngineError(
            f"{interval_label(interval_ms)} intervals would cut {where} into {last - first:,} "
            f"intervals, more than {MAX_INTERVALS:,}: choose a longer interval or a shorter range"
        )
    pairs = tuple(zip(expressions, (unit for _, unit in series), strict=True))
    key = (path, "iograph", interval_ms, pairs, first, last)
    if (known := _recall(key)) is None:
        graph = await _compute(path, interval_ms, pairs, first, last, total)
        # Kept with compact values: an answer may hold MAX_INTERVALS values per series.
        compact = [array("q", s.values) for s in graph.series]
        for shown in graph.series:
            shown.values = []
        known = _remember(key, (graph, compact))
    graph, values = known
    return IOGraph(
        interval_ms,
        [Series(s.filter, s.unit, list(v)) for s, v in zip(graph.series, values, strict=True)],
        first=graph.first,
        total=graph.total,
        previous_active=graph.previous_active,
        next_active=graph.next_active,
    )


async def _compute(
    path: Path, interval_ms: int, pairs: tuple[tuple[str | None, str], ...], first: int, last: int, total: int
) -> IOGraph:
    whole = await timelines.timeline(path)
    interval_ns = interval_ms * 1_000_000
    # A filtered series comes from sharkd's iograph when that covers the range and the frames
    # the filter matches are not gathered already; otherwise from those frames.
    selections: dict[str, Frames] = {}
    for expression, _ in pairs:
        if expression and expression not in selections:
            found = timelines.known_selection(path, expression)
            if found is None and last > MAX_INTERVALS:
                found = await timelines.selection(path, expression)
            if found is not None:
                selections[expression] = found
    asked = sorted({(e, u) for e, u in pairs if e and e not in selections})
    from_engine: dict[tuple[str, str], array[int]] = {}
    if asked:
        from_engine = dict(zip(asked, await _engine_values(path, interval_ms, asked), strict=True))

    shown: list[Series] = []
    before: list[int | None] = []
    after: list[int | None] = []
    for expression, unit in pairs:
        if expression and (expression, unit) in from_engine:
            values = from_engine[(expression, unit)]
            window = list(values[first:last])
            shown.append(Series(expression, unit, window + [0] * (last - first - len(window))))
            before.append(_nearest_before(values, first))
            nearest = _nearest_from(values, last)
            if nearest is None and total > MAX_INTERVALS:
                # sharkd counted no further: from there on, the next interval holding any packet.
                nearest = whole.everything.next_active(interval_ns, max(last, MAX_INTERVALS))
            after.append(nearest)
            continue
        frames = selections[expression] if expression else whole.everything
        packets, size = frames.count(interval_ns, first, last)
        shown.append(Series(expression or "", unit, packets if unit == "packets" else size))
        before.append(frames.previous_active(interval_ns, first))
        after.append(frames.next_active(interval_ns, last))
    return IOGraph(
        interval_ms,
        shown,
        first=first,
        total=total,
        previous_active=_closest(before, max),
        next_active=_closest(after, min),
    )
