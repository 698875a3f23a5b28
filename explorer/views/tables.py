"""Statistics tabs: HTTP requests, DNS queries and the conversation graph of a capture."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from ..access import capture_for
from ..engine import stats as engine_stats
from ..engine import tables as engine_tables
from ..engine.errors import EngineError
from ..engine.stats import Conversation
from ..models import Capture
from .common import not_found_page, varies_on_htmx, wants_partial
from .statistics import Column, apply_url, choice, sort_key, stats_tabs

# (key, label, numeric) per table; the key names the record's field and the ?sort= value.
HTTP_COLUMNS = [
    ("frame", "Frame", True),
    ("method", "Method", False),
    ("host", "Host", False),
    ("uri", "URI", False),
    ("status", "Status", True),
    ("phrase", "Phrase", False),
    ("response_frame", "Response frame", True),
    ("time", "Time (s)", True),
]
DNS_COLUMNS = [
    ("frame", "Frame", True),
    ("name", "Name", False),
    ("type", "Type", False),
    ("response_frame", "Response frame", True),
    ("rcode", "Rcode", False),
    ("answers", "Answers", False),
    ("time", "Time (s)", True),
]
# Cells holding a frame number link to that packet in the capture view.
FRAME_KEYS = {"frame", "response_frame"}

GRAPH_KINDS = ["IPv4", "IPv6"]
MAX_HOSTS = 40
GRAPH_SIZE = 760
GRAPH_RADIUS = 280
NODE_RADIUS = 6
MIN_EDGE_WIDTH, MAX_EDGE_WIDTH = 1.0, 12.0


@dataclass
class Cell:
    text: str
    numeric: bool
    url: str = ""


@dataclass
class Row:
    frame: int
    cells: list[Cell]


def packet_url(capture: Capture, number: int) -> str:
    return f"{capture.get_absolute_url()}?packet={number}"


def view_url(capture: Capture, name: str, **params: str) -> str:
    query = urlencode({key: value for key, value in params.items() if value})
    return reverse(f"explorer:{name}", args=[capture.pk]) + (f"?{query}" if query else "")


def sort_value(value: Any) -> Any:
    return sort_key("" if value is None else value)


def table(
    capture: Capture,
    name: str,
    filter_text: str,
    sort: str,
    columns: list[tuple[str, str, bool]],
    records: list[Any],
) -> tuple[list[Column], list[Row]]:
    """Return the header cells (with their sort links) and the rows, sorted as ?sort= asks."""
    keys = [key for key, _, _ in columns]
    field_name = sort.removeprefix("-")
    if field_name in keys:
        # Empty cells (no response yet) stay last whichever way the column is sorted.
        present = [r for r in records if getattr(r, field_name) not in (None, "")]
        empty = [r for r in records if getattr(r, field_name) in (None, "")]
        present.sort(key=lambda r: sort_value(getattr(r, field_name)), reverse=sort.startswith("-"))
        records = present + empty
    header = []
    for key, label, numeric in columns:
        direction, next_sort = "", key
        if field_name == key:
            direction = "descending" if sort.startswith("-") else "ascending"
            next_sort = key if sort.startswith("-") else f"-{key}"
        href = view_url(capture, name, filter=filter_text, sort=next_sort)
        header.append(Column(key, label, numeric, href, direction))
    rows = []
    for record in records:
        cells = []
        for key, _, numeric in columns:
            value = getattr(record, key)
            text = "" if value is None else str(value)
            url = packet_url(capture, value) if key in FRAME_KEYS and value is not None else ""
            cells.append(Cell(text, numeric, url))
        rows.append(Row(record.frame, cells))
    return header, rows


async def _table_page(
    request: HttpRequest, capture_id: int, name: str, title: str, columns: list[tuple[str, str, bool]]
) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    filter_text = request.GET.get("filter", "").strip()
    sort = request.GET.get("sort", "")
    header: list[Column] = []
    rows: list[Row] = []
    error = ""
    try:
        if name == "http_requests":
            records: list[Any] = await engine_tables.http_requests(capture.path, filter_text)
        else:
            records = await engine_tables.dns_queries(capture.path, filter_text)
        header, rows = table(capture, name, filter_text, sort, columns, records)
    except EngineError as raised:
        error = raised.message
    context = {
        "capture": capture,
        "name": name,
        "title": title,
        "view": name,
        "views": stats_tabs(capture, filter_text),
        "filter_text": filter_text,
        "sort": sort,
        "columns": header,
        "rows": rows,
        "error": error,
        "download_url": reverse("api:download", args=[capture.pk]),
        "clear_url": view_url(capture, name, sort=sort),
        "action_url": view_url(capture, name),
        "kept": {"sort": sort},
    }
    template = "explorer/table_page.html"
    if wants_partial(request):
        template += "#stats_table"
    return varies_on_htmx(render(request, template, context, status=400 if error else 200))


@not_found_page
@require_GET
async def http_requests(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show one row per HTTP request with its response, optionally limited to a display filter."""
    return await _table_page(request, capture_id, "http_requests", "HTTP Requests", HTTP_COLUMNS)


@not_found_page
@require_GET
async def dns_queries(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show one row per DNS query with its response, optionally limited to a display filter."""
    return await _table_page(request, capture_id, "dns_queries", "DNS Queries", DNS_COLUMNS)


@dataclass
class GraphNode:
    address: str
    x: float
    y: float
    label_x: float
    label_y: float
    anchor: str
    bytes: int


@dataclass
class GraphEdge:
    a: str
    b: str
    x1: float
    y1: float
    x2: float
    y2: float
    mid_x: float
    mid_y: float
    width: float
    packets: int
    bytes: int
    filter: str
    url: str


@dataclass
class Graph:
    size: int
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    hosts: int = 0
    truncated: bool = False


def conversation_graph(capture: Capture, conversations: list[Conversation], limit: int = MAX_HOSTS) -> Graph:
    """Lay the busiest hosts out on a circle (by address, so the layout is the same each time)."""
    traffic: dict[str, int] = {}
    for conv in conversations:
        for address in (conv.address_a, conv.address_b):
            traffic[address] = traffic.get(address, 0) + conv.bytes
    busiest = sorted(traffic, key=lambda a: (-traffic[a], a))[:limit]
    kept = sorted(busiest, key=sort_key)
    graph = Graph(size=GRAPH_SIZE, hosts=len(traffic), truncated=len(traffic) > limit)
    centre = GRAPH_SIZE / 2
    places: dict[str, tuple[float, float]] = {}
    for index, address in enumerate(kept):
        angle = 2 * math.pi * index / max(len(kept), 1) - math.pi / 2
        cos, sin = math.cos(angle), math.sin(angle)
        x, y = centre + GRAPH_RADIUS * cos, centre + GRAPH_RADIUS * sin
        places[address] = (x, y)
        graph.nodes.append(
            GraphNode(
                address=address,
                x=round(x, 1),
                y=round(y, 1),
                label_x=round(x + 12 * cos, 1),
                label_y=round(y + 12 * sin + 4, 1),
                anchor="start" if cos > 0.2 else "end" if cos < -0.2 else "middle",
                bytes=traffic[address],
            )
        )
    shown = [c for c in conversations if c.address_a in places and c.address_b in places]
    heaviest = max((c.bytes for c in shown), default=1) or 1
    for conv in shown:
        (x1, y1), (x2, y2) = places[conv.address_a], places[conv.address_b]
        width = MIN_EDGE_WIDTH + (MAX_EDGE_WIDTH - MIN_EDGE_WIDTH) * math.sqrt(conv.bytes / heaviest)
        graph.edges.append(
            GraphEdge(
                a=conv.address_a,
                b=conv.address_b,
                x1=round(x1, 1),
                y1=round(y1, 1),
                x2=round(x2, 1),
                y2=round(y2, 1),
                mid_x=round((x1 + x2) / 2, 1),
                mid_y=round((y1 + y2) / 2, 1),
                width=round(width, 2),
                packets=conv.packets,
                bytes=conv.bytes,
                filter=conv.filter,
                url=apply_url(capture, conv.filter),
            )
        )
    # Thin edges last, so they stay clickable above the thick ones.
    graph.edges.sort(key=lambda e: -e.width)
    return graph


@not_found_page
@require_GET
async def conversation_graph_page(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show hosts as nodes and their conversations as edges weighted by bytes."""
    capture = await capture_for(request, capture_id)
    kind = choice(request, "kind", GRAPH_KINDS, GRAPH_KINDS[0])
    filter_text = request.GET.get("filter", "").strip()
    graph = Graph(size=GRAPH_SIZE)
    error = ""
    try:
        found = await engine_stats.conversations(capture.path, kind, filter_text)
        graph = conversation_graph(capture, found)
    except EngineError as raised:
        error = raised.message
    context = {
        "capture": capture,
        "view": "conversation_graph",
        "views": stats_tabs(capture, filter_text, kind),
        "kind": kind,
        "kinds": [
            (key, view_url(capture, "conversation_graph", kind=key, filter=filter_text))
            for key in GRAPH_KINDS
        ],
        "filter_text": filter_text,
        "graph": graph,
        "error": error,
        "max_hosts": MAX_HOSTS,
        "download_url": reverse("api:download", args=[capture.pk]),
        "clear_url": view_url(capture, "conversation_graph", kind=kind),
        "kept": {"kind": kind},
    }
    return render(request, "explorer/conversation_graph.html", context, status=400 if error else 200)
