"""I/O graphs: packets or bytes per time interval for up to four display filters, from sharkd's `iograph`.

sharkd 4.0 answers `{"iograph": [{"items": [...]}, ...]}`, one entry per graph, in a sparse
encoding: a number is the value of the next interval, a hex string such as "1f" says that the
next value belongs to interval 0x1f (the ones skipped are zero), and trailing zero intervals
are left out. One unfiltered packet graph is always asked for too: its last interval is the
capture's last, so every series comes back as long as tshark's `-z io,stat` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from .errors import EngineError
from .sessions import engine
from .stats import _checked, _recall, _remember

INTERVALS_MS = [1, 10, 100, 1_000, 10_000, 60_000, 600_000]
UNITS = ["packets", "bytes"]
MAX_SERIES = 4
# Beyond this many intervals a graph says nothing a longer interval would not say better.
MAX_INTERVALS = 200_000


@dataclass
class Series:
    filter: str
    unit: str
    values: list[int]


@dataclass
class IOGraph:
    interval_ms: int
    series: list[Series]

    @property
    def intervals(self) -> int:
        return len(self.series[0].values) if self.series else 0


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


def _check(interval_ms: int, series: list[tuple[str, str]]) -> None:
    if interval_ms not in INTERVALS_MS:
        raise EngineError(
            f"unknown interval {interval_ms} ms: choose one of {', '.join(map(str, INTERVALS_MS))}"
        )
    if not 1 <= len(series) <= MAX_SERIES:
        raise EngineError(f"ask for 1 to {MAX_SERIES} series")
    for _, unit in series:
        if unit not in UNITS:
            raise EngineError(f"unknown unit {unit!r}: choose packets or bytes")


async def io_graph(path: Path, interval_ms: int, series: list[tuple[str, str]]) -> IOGraph:
    """Return the packets or bytes per interval of each (display filter, unit) series."""
    _check(interval_ms, series)
    expressions = [await _checked(path, filter_text) for filter_text, _ in series]
    key = (path, "iograph", interval_ms, tuple(zip(expressions, (unit for _, unit in series), strict=True)))
    if (known := _recall(key)) is not None:
        return IOGraph(interval_ms, [Series(s.filter, s.unit, list(s.values)) for s in known.series])
    sessions = engine().sessions(path)
    await sessions.wait_loaded()
    status = await sessions.call("status")
    duration = Decimal(str(status.get("duration") or 0))
    if duration * 1000 / interval_ms > MAX_INTERVALS:
        raise EngineError(
            f"{interval_ms} ms intervals would cut this capture into more than {MAX_INTERVALS:,} "
            "intervals: choose a longer interval"
        )
    params: dict[str, Any] = {"interval": interval_ms, "graph0": "packets"}
    for index, (expression, (_, unit)) in enumerate(zip(expressions, series, strict=True), start=1):
        params[f"graph{index}"] = unit
        if expression:
            params[f"filter{index}"] = expression
    result = await sessions.call("iograph", params)
    graphs = [decode(graph.get("items", [])) for graph in result.get("iograph", [])]
    if len(graphs) != len(series) + 1:
        raise EngineError("the engine answered with the wrong number of graphs")
    length = len(graphs[0])
    shown = [
        Series(expression or "", unit, (values + [0] * length)[:length])
        for expression, (_, unit), values in zip(expressions, series, graphs[1:], strict=True)
    ]
    graph = _remember(key, IOGraph(interval_ms, shown))
    return IOGraph(interval_ms, [Series(s.filter, s.unit, list(s.values)) for s in graph.series])
