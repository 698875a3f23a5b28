"""Statistics ▸ I/O Graph: packets or bytes per interval for up to four filters, drawn as SVG on the server.

All state is in the URL: `interval` (ms), repeated `graph` (packets or bytes) and `filter`
pairs, one pair per series in order, and an optional zoom range `start`/`end` in seconds
from the first packet. Every bar links to the capture view, filtered to its series and interval.

A capture can span years: the page asks the engine for one window of at most MAX_BARS
intervals at a time and links to the stretches before and after it, and over empty stretches
to the nearest ones with packets to draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_GET

from ...access import capture_for
from ...engine import iograph as engine_iograph
from ...engine import packets as engine_packets
from ...engine.errors import EngineError
from ...engine.iograph import IOGraph
from ...models import Capture
from ..common import not_found_page
from .page import StatisticPage
from .registry import named, statistic

INTERVAL_LABELS = {1: "1 ms", 10: "10 ms", 100: "100 ms", 1_000: "1 s", 10_000: "10 s", 60_000: "1 min"}
INTERVAL_LABELS[600_000] = "10 min"
DEFAULT_INTERVAL_MS = 1_000
# One colour per series position, distinguishable on white and by most colour-blind viewers.
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
# Bars drawn at most; a wider range is shown from its start, with a link to the next stretch.
MAX_BARS = 1_000

# Geometry in SVG user units (pixels).
WIDTH, HEIGHT = 960, 340
LEFT, RIGHT, TOP, BOTTOM = 70, 16, 14, 46
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


@dataclass
class SeriesForm:
    index: int
    filter: str
    unit: str
    colour: str
    error: str
    remove_url: str


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    url: str
    title: str
    series: int
    interval: int


@dataclass
class Tick:
    position: float
    label: str


@dataclass
class ZoomBand:
    x: float
    width: float
    url: str
    title: str


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    right: int = WIDTH - RIGHT
    bottom: int = HEIGHT - BOTTOM
    plot_width: int = PLOT_WIDTH
    plot_height: int = PLOT_HEIGHT
    bars: list[Bar] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    bands: list[ZoomBand] = field(default_factory=list)
    y_label: str = ""
    x_label: str = ""


def seconds_text(ms: int) -> str:
    """Return milliseconds as seconds without trailing zeros: 300 → "0.3", 5000 → "5"."""
    whole, fraction = divmod(ms, 1000)
    return f"{whole}.{fraction:03d}".rstrip("0").rstrip(".")


def decimal_text(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def query_seconds(request: HttpRequest, name: str) -> Decimal | None:
    try:
        value = Decimal(request.GET.get(name, "").strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None


def time_filter(series_filter: str, start_ms: int, end_ms: int) -> str:
    """Return the display filter of one series' packets in [start, end)."""
    window = (
        f"frame.time_relative >= {seconds_text(start_ms)} && frame.time_relative < {seconds_text(end_ms)}"
    )
    return f"({series_filter}) && {window}" if series_filter else window


def nice_step(span: float, count: int) -> float:
    """Return a 1, 2 or 5 times a power of ten step that cuts span into about count pieces."""
    if span <= 0:
        return 1.0
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return float(factor * power)
    return float(10 * power)


def number_label(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


class GraphPage:
    """The URL of the page for a state, and the state changes its links make."""

    def __init__(
        self,
        capture: Capture,
        interval_ms: int,
        series: list[tuple[str, str]],
        start: Decimal | None,
        end: Decimal | None,
    ) -> None:
        self.capture = capture
        self.interval_ms = interval_ms
        self.series = series
        self.start = start
        self.end = end

    def url(
        self,
        *,
        series: list[tuple[str, str]] | None = None,
        start: Decimal | None = None,
        end: Decimal | None = None,
        zoomed: bool = True,
        interval_ms: int | None = None,
    ) -> str:
        query: list[tuple[str, str]] = [("interval", str(interval_ms or self.interval_ms))]
        for filter_text, unit in self.series if series is None else series:
            query += [("graph", unit), ("filter", filter_text)]
        if zoomed:
            start = self.start if start is None else start
            end = self.end if end is None else end
            if start is not None:
                query.append(("start", decimal_text(start)))
            if end is not None:
                query.append(("end", decimal_text(end)))
        return reverse("explorer:io_graph", args=[self.capture.pk]) + "?" + urlencode(query)

    def seconds(self, index: int) -> Decimal:
        """Return when an interval starts, in seconds from the first packet."""
        return Decimal(index * self.interval_ms) / 1000

    def window(self, first: int, last: int) -> str:
        """Return the URL of intervals first..last-1 at this interval."""
        return self.url(start=self.seconds(first), end=self.seconds(last))


def duration_text(seconds: Decimal) -> str:
    """Return a time from the first packet as a clock reads it: "2.5 s", "0:16:40", "730 d 0:00:00.2"."""
    if seconds < 60:
        return f"{decimal_text(seconds)} s"
    whole = int(seconds)
    fraction = decimal_text(seconds - whole)[1:] if seconds != whole else ""
    days, rest = divmod(whole, 86_400)
    clock = f"{rest // 3600}:{rest // 60 % 60:02d}:{rest % 60:02d}{fraction}"
    return f"{days:,} d {clock}" if days else clock


def draw(page: GraphPage, graph: IOGraph) -> Chart:
    """Lay out grouped bars for the graph's intervals, the axes' ticks and the zoom bands."""
    chart = Chart()
    first, last = graph.first, graph.last
    bins = max(last - first, 1)
    slot = PLOT_WIDTH / bins
    gap = slot * 0.15 if slot >= 6 else 0.0
    width = (slot - gap) / max(len(graph.series), 1)
    peak = max([max(s.values, default=0) for s in graph.series] + [0])
    step = nice_step(peak, 5) if peak else 1.0
    top = step * math.ceil(peak / step) if peak else 5.0
    chart.y_ticks = [
        Tick(TOP + PLOT_HEIGHT - PLOT_HEIGHT * (k * step) / top, number_label(k * step))
        for k in range(int(round(top / step)) + 1)
    ]
    units = {s.unit for s in graph.series}
    chart.y_label = "Packets and bytes" if len(units) > 1 else units.pop().capitalize()
    chart.x_label = f"Time (s) · {INTERVAL_LABELS[graph.interval_ms]} intervals"
    for number, series in enumerate(graph.series):
        for offset, value in enumerate(series.values):
            if value <= 0:
                continue
            index = first + offset
            height = max(PLOT_HEIGHT * value / top, 1.0)
            start_ms, end_ms = index * graph.interval_ms, (index + 1) * graph.interval_ms
            link_filter = time_filter(series.filter, start_ms, end_ms)
            chart.bars.append(
                Bar(
                    x=round(LEFT + offset * slot + gap / 2 + number * width, 2),
                    y=round(TOP + PLOT_HEIGHT - height, 2),
                    width=round(max(width, 0.5), 2),
                    height=round(height, 2),
                    colour=PALETTE[number % len(PALETTE)],
                    url=f"{page.capture.get_absolute_url()}?{urlencode({'filter': link_filter})}",
                    title=f"{series.filter or 'All packets'}: {value:,} {series.unit} "
                    f"from {seconds_text(start_ms)} s to {seconds_text(end_ms)} s",
                    series=number,
                    interval=index,
                )
            )
    # Time ticks at round seconds; between two ticks, a band below the axis zooms in on them.
    # Far into a long capture the seconds are large numbers: offsets stay exact as Decimals.
    t0, t1 = page.seconds(first), page.seconds(first + bins)
    tick = Decimal(f"{nice_step(float(t1 - t0), 8):.0e}")
    digits = max(0, -tick.normalize().as_tuple().exponent)  # type: ignore[operator]
    marks: list[Decimal] = []
    mark = math.ceil(t0 / tick) * tick
    while mark <= t1:
        marks.append(mark)
        mark += tick
    span = float(t1 - t0)
    for mark in marks:
        chart.x_ticks.append(
            Tick(round(LEFT + float(mark - t0) / span * PLOT_WIDTH, 2), f"{mark:,.{digits}f}")
        )
    edges = [t0] + [m for m in marks if t0 < m < t1] + [t1]
    interval_s = page.seconds(1)
    for a, b in zip(edges, edges[1:], strict=False):
        if b - a < interval_s * 2:
            continue  # nothing finer to see than the interval itself
        chart.bands.append(
            ZoomBand(
                x=round(LEFT + float(a - t0) / span * PLOT_WIDTH, 2),
                width=round(float(b - a) / span * PLOT_WIDTH, 2),
                url=page.url(start=a, end=b),
                title=f"Zoom in on {a:,.{digits}f}–{b:,.{digits}f} s",
            )
        )
    return chart


def series_forms(page: GraphPage, problems: list[str]) -> list[SeriesForm]:
    forms = []
    for index, (filter_text, unit) in enumerate(page.series):
        others = page.series[:index] + page.series[index + 1 :]
        forms.append(
            SeriesForm(
                index=index + 1,
                filter=filter_text,
                unit=unit,
                colour=PALETTE[index % len(PALETTE)],
                error=problems[index],
                remove_url=page.url(series=others) if others else "",
            )
        )
    return forms


def fitting_interval(span_ms: int, at_least: int) -> int | None:
    """Return the shortest offered interval, at_least or longer, that cuts span_ms into MAX_BARS or fewer."""
    return next((i for i in engine_iograph.INTERVALS_MS if i >= at_least and span_ms <= i * MAX_BARS), None)


async def shown_window(
    page: GraphPage, series: list[tuple[str, str]], first: int, last: int | None
) -> tuple[IOGraph, int]:
    """Ask the engine for at most MAX_BARS intervals from first; return them and where the range ends."""
    stop = first + MAX_BARS if last is None else min(last, first + MAX_BARS)
    path = page.capture.path
    graph = await engine_iograph.io_graph(
        path, page.interval_ms, series, page.seconds(first), page.seconds(stop)
    )
    if graph.total and graph.first >= graph.total:
        # The range starts after the capture ends: show its start instead.
        graph = await engine_iograph.io_graph(
            path, page.interval_ms, series, Decimal(0), page.seconds(MAX_BARS)
        )
        last = None
    return graph, graph.total if last is None else min(last, graph.total)


@dataclass
class Navigation:
    """Links to other stretches of the capture, and what the page says about the one shown."""

    links: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    caption: str = ""
    reset_label: str = "Whole capture"


def navigation(page: GraphPage, graph: IOGraph, range_first: int, range_last: int) -> Navigation:
    """Return the links to other stretches, the notes and the caption of the shown window."""
    first, last, total = graph.first, graph.last, graph.total
    width = max(last - first, 1)
    label = INTERVAL_LABELS[page.interval_ms]
    found = Navigation()
    links = found.links
    if last > first and not any(any(s.values) for s in graph.series):
        found.notes.append("No packets of these series in this stretch.")
    if range_last - range_first > width:
        where = "this range" if page.start is not None or page.end is not None else "this capture"
        found.notes.append(
            f"{range_last - range_first:,} intervals of {label} in {where}: showing {width:,} at a time. "
            "Choose a longer interval, or move along with Earlier and Later."
        )
    if first > 0 or last < total:
        found.caption = (
            f"Intervals {first + 1:,}–{last:,} of {total:,}: {page.seconds(first):,f} s to "
            f"{page.seconds(last):,f} s from the first packet "
            f"({duration_text(page.seconds(first))} to {duration_text(page.seconds(last))})"
        )
        # The whole capture at an interval that draws it in MAX_BARS bars, else its first stretch.
        fit = fitting_interval(total * page.interval_ms, page.interval_ms)
        if fit is None:
            found.reset_label = "Start of capture"
        elif fit != page.interval_ms:
            found.reset_label = f"Whole capture ({INTERVAL_LABELS[fit]})"
        if page.start is not None or page.end is not None or fit not in (None, page.interval_ms):
            links["reset"] = page.url(zoomed=False, interval_ms=fit or page.interval_ms)
        # Twice as long around the same centre, at an interval that keeps it within MAX_BARS.
        span_ms = 2 * width * page.interval_ms
        wider = fitting_interval(span_ms, page.interval_ms) or engine_iograph.INTERVALS_MS[-1]
        span_ms = min(span_ms, wider * MAX_BARS)
        centre_ms = (first + last) * page.interval_ms // 2
        start_ms = max(centre_ms - span_ms // 2, 0)
        end_ms = min(start_ms + span_ms, total * page.interval_ms)
        links["out"] = page.url(start=Decimal(start_ms) / 1000, end=Decimal(end_ms) / 1000, interval_ms=wider)
    if first > 0:
        start = max(first - width, 0)
        links["earlier"] = page.window(start, start + width)
    if last < total:
        links["later"] = page.window(last, last + width)
    # Jumps over stretches with nothing to draw, where Earlier and Later would show none.
    if graph.previous_active is not None and graph.previous_active < first - width:
        end = graph.previous_active + 1
        links["previous_activity"] = page.window(max(end - width, 0), end)
    if graph.next_active is not None and graph.next_active >= last + width:
        links["next_activity"] = page.window(graph.next_active, graph.next_active + width)
    return found


@statistic("iograph", "I/O Graph", order=50, url_name="io_graph")
@not_found_page
@require_GET
async def io_graph(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show packets or bytes per interval for each series, at most MAX_BARS intervals at a time."""
    capture = await capture_for(request, capture_id)
    interval_text = request.GET.get("interval", "")
    interval_ms = int(interval_text) if interval_text.isdigit() else DEFAULT_INTERVAL_MS
    if interval_ms not in engine_iograph.INTERVALS_MS:
        interval_ms = DEFAULT_INTERVAL_MS
    series = engine_iograph.pair_series(request.GET.getlist("graph"), request.GET.getlist("filter"))
    start, end = query_seconds(request, "start"), query_seconds(request, "end")
    if start is not None and end is not None and end <= start:
        start = end = None
    page = GraphPage(capture, interval_ms, series, start, end)
    problems = [await engine_packets.check_filter(f) or "" for f, _ in series]
    error = ""
    chart: Chart | None = None
    moves = Navigation()
    if not any(problems):
        first, last = engine_iograph.interval_range(interval_ms, start, end)
        try:
            graph, range_last = await shown_window(page, series, first, last)
        except EngineError as error_raised:
            error = error_raised.message
        else:
            if graph.last > graph.first:
                chart = draw(page, graph)
            moves = navigation(page, graph, min(first, graph.first), range_last)
    add_series = series + [("", "packets")]
    # The tabs carry the first series' filter, the one the other statistics are limited to.
    shown = StatisticPage(capture, named("iograph"), series[0][0], error=error)
    context = {
        "interval_ms": interval_ms,
        "intervals": list(INTERVAL_LABELS.items()),
        "units": engine_iograph.UNITS,
        "series": series_forms(page, problems),
        "add_url": page.url(series=add_series) if len(series) < engine_iograph.MAX_SERIES else "",
        "start": decimal_text(start) if start is not None else "",
        "end": decimal_text(end) if end is not None else "",
        "chart": chart,
        "notes": moves.notes,
        "links": moves.links,
        "caption": moves.caption,
        "reset_label": moves.reset_label,
    }
    status = 400 if error or any(problems) else 200
    return shown.render(request, "explorer/io_graph.html", context, partial="io_body", status=status)
