"""Statistics ▸ Flow Graph: a ladder diagram of TCP flows, drawn as SVG on the server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from ...access import capture_for
from ...engine import flows as engine_flows
from ...engine.errors import EngineError
from ...engine.flows import Arrow, Flow
from ...models import Capture
from ..common import not_found_page
from ..links import filtered_url, flow_url, packet_url
from ..params import query_int
from .registry import MenuEntry, statistic

# Geometry in SVG user units (pixels), for a 12 px monospace font.
CHAR_WIDTH = 7.3
TIME_WIDTH = 100
HEADER_HEIGHT = 56
ROW_HEIGHT = 34
MIN_COLUMN, MAX_COLUMN = 190, 420
SUMMARY_CHARS = 90
HEAD = 8  # length of an arrowhead
SELF_LOOP = 36  # how far an arrow from a node to itself reaches out

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


@dataclass
class ShownNode:
    label: str
    x: int
    box_x: int
    box_width: int


@dataclass
class ShownArrow:
    frame: int
    time: str
    y: int
    hit_y: int
    points: str
    head: str
    label: str
    label_x: int
    label_y: int
    label_anchor: str
    tooltip: str
    summary: str
    colour: str
    url: str


@dataclass
class Diagram:
    width: int
    height: int
    row_height: int
    lifeline_bottom: int
    summary_x: int
    nodes: list[ShownNode]
    arrows: list[ShownArrow]


def fit(text: str, chars: int) -> str:
    """Return text cut to a number of characters, an ellipsis marking the cut."""
    return text if len(text) <= chars else text[: max(chars - 1, 0)] + "…"


def colour_of(arrow: Arrow) -> str:
    if "RST" in arrow.flags.split(", "):
        return "#c62828"
    if "SYN" in arrow.flags.split(", ") or "FIN" in arrow.flags.split(", "):
        return "#1b5e20"
    return "#263238"


def layout(capture: Capture, flow: Flow, link_filter: str) -> Diagram:
    """Place the nodes' lifelines and one arrow per packet, a row each, time on the left."""
    longest = max(
        [len(node.label) for node in flow.nodes] + [len(arrow.label) for arrow in flow.arrows] + [0]
    )
    column = int(min(MAX_COLUMN, max(MIN_COLUMN, longest * CHAR_WIDTH + 30)))
    xs = {node.id: TIME_WIDTH + column // 2 + index * column for index, node in enumerate(flow.nodes)}
    nodes = []
    for node in flow.nodes:
        box_width = int(min(column - 10, len(node.label) * CHAR_WIDTH + 16))
        label = fit(node.label, int((column - 26) / CHAR_WIDTH))
        nodes.append(ShownNode(label, xs[node.id], xs[node.id] - box_width // 2, box_width))
    summary_x = TIME_WIDTH + len(flow.nodes) * column + 10
    arrows = []
    for row, arrow in enumerate(flow.arrows):
        y = HEADER_HEIGHT + 24 + row * ROW_HEIGHT
        x1, x2 = xs[arrow.source], xs[arrow.destination]
        if x1 == x2:
            # To itself: out to the right and back, the label beside the loop.
            points = f"{x1},{y - 8} {x1 + SELF_LOOP},{y - 8} {x1 + SELF_LOOP},{y} {x1 + 1},{y}"
            head = f"{x1 + 1},{y} {x1 + 1 + HEAD},{y - 4} {x1 + 1 + HEAD},{y + 4}"
            label_x, anchor, room = x1 + SELF_LOOP + 6, "start", column // 2 - SELF_LOOP - 6
        else:
            direction = 1 if x2 > x1 else -1
            tip = x2 - direction
            points = f"{x1},{y} {tip},{y}"
            head = f"{tip},{y} {tip - direction * HEAD},{y - 4} {tip - direction * HEAD},{y + 4}"
            # Over the arrow's leftmost stretch: the middle of a long arrow is screens away.
            left, span = min(x1, x2), min(abs(x2 - x1), column)
            label_x, anchor, room = left + span // 2, "middle", span - 12
        tooltip = f"{arrow.frame}: {arrow.source} → {arrow.destination} {arrow.label}\n{arrow.summary}"
        arrows.append(
            ShownArrow(
                frame=arrow.frame,
                time=arrow.time,
                y=y,
                hit_y=y - ROW_HEIGHT + 10,
                points=points,
                head=head,
                label=fit(arrow.label, int(room / CHAR_WIDTH)),
                label_x=label_x,
                label_y=y - 6,
                label_anchor=anchor,
                tooltip=tooltip,
                summary=fit(arrow.summary, SUMMARY_CHARS),
                colour=colour_of(arrow),
                url=packet_url(capture, arrow.frame, link_filter),
            )
        )
    height = HEADER_HEIGHT + 24 + max(len(arrows), 1) * ROW_HEIGHT
    width = summary_x + int(SUMMARY_CHARS * CHAR_WIDTH) + 10
    return Diagram(width, height, ROW_HEIGHT, height - 10, summary_x, nodes, arrows)


def svg_download(capture: Capture, svg: str) -> HttpResponse:
    response = HttpResponse(XML_DECLARATION + svg, content_type="image/svg+xml; charset=utf-8")
    name = f"{Path(capture.name).stem}-flow-graph.svg"
    response["Content-Disposition"] = content_disposition_header(True, name) or "attachment"
    return response


# Not a Statistics tab: the capture page's menu opens it on the packets its list shows.
@statistic("flow", "Flow Graph", order=100, tab=False, menu=MenuEntry("Flow graph", "flow-graph-link", True))
@not_found_page
@require_GET
async def flow(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show the packets of a filter or TCP stream as a ladder of arrows between endpoints."""
    capture = await capture_for(request, capture_id)
    filter_text = request.GET.get("filter", "")
    stream_text = request.GET.get("stream", "").strip()
    stream = query_int(request, "stream")
    offset = query_int(request, "offset") or 0
    context: dict[str, Any] = {"capture": capture, "filter_text": filter_text, "stream_text": stream_text}
    try:
        if stream_text and stream is None:
            raise EngineError("stream must be a number from 0 up")
        expression = engine_flows.flow_filter(filter_text, stream)
        result = await engine_flows.flow(capture.path, expression, offset, precision=capture.precision_digits)
    except EngineError as error:
        return render(request, "explorer/flow.html", {**context, "error": error.message}, status=400)
    # Packets open in the capture view through the same filter, unless it was the default.
    link_filter = expression if stream is not None or filter_text.strip() else ""
    context.update(
        flow=result,
        diagram=layout(capture, result, link_filter),
        first=offset + 1,
        last=offset + len(result.arrows),
    )
    if request.GET.get("format") == "svg":
        return svg_download(capture, render_to_string("explorer/flow_graph.svg", context, request))

    def page_url(at: int, svg: bool = False) -> str:
        return flow_url(capture, filter_text=filter_text.strip(), stream=stream, offset=at, svg=svg)

    page = engine_flows.MAX_ARROWS
    context.update(
        previous_url=page_url(max(offset - page, 0)) if offset > 0 else None,
        next_url=page_url(offset + page) if offset + page < result.total else None,
        download_url=page_url(offset, svg=True),
        capture_url=filtered_url(capture, link_filter) if link_filter else capture.get_absolute_url(),
    )
    return render(request, "explorer/flow.html", context)
