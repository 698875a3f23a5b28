"""The Statistics page: conversations, endpoints and the protocol hierarchy of a capture."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from ..access import capture_for
from ..engine import stats as engine_stats
from ..engine.errors import EngineError
from ..engine.stats import ProtocolNode
from ..models import Capture
from .common import not_found_page, varies_on_htmx, wants_partial

VIEWS = {"conversations": "Conversations", "endpoints": "Endpoints", "hierarchy": "Protocol Hierarchy"}
DEFAULT_VIEW = "conversations"
DEFAULT_KIND = "TCP"

# (key, label, numeric) per table; the key names the row's field and the ?sort= value.
CONVERSATION_COLUMNS = [
    ("address_a", "Address A", False),
    ("port_a", "Port A", True),
    ("address_b", "Address B", False),
    ("port_b", "Port B", True),
    ("packets", "Packets", True),
    ("bytes", "Bytes", True),
    ("packets_ab", "Packets A → B", True),
    ("bytes_ab", "Bytes A → B", True),
    ("packets_ba", "Packets B → A", True),
    ("bytes_ba", "Bytes B → A", True),
    ("rel_start", "Rel Start", True),
    ("duration", "Duration", True),
]
ENDPOINT_COLUMNS = [
    ("address", "Address", False),
    ("port", "Port", True),
    ("packets", "Packets", True),
    ("bytes", "Bytes", True),
    ("tx_packets", "Tx Packets", True),
    ("tx_bytes", "Tx Bytes", True),
    ("rx_packets", "Rx Packets", True),
    ("rx_bytes", "Rx Bytes", True),
]
PORT_KEYS = {"port", "port_a", "port_b"}


@dataclass
class Column:
    key: str
    label: str
    numeric: bool
    href: str
    direction: str  # aria-sort: "ascending", "descending" or ""


@dataclass
class Cell:
    text: str
    numeric: bool


@dataclass
class Row:
    cells: list[Cell]
    filter: str
    apply_url: str
    depth: int = 0
    percent_packets: float = 0.0
    percent_bytes: float = 0.0


def choice(request: HttpRequest, name: str, allowed: list[str], default: str) -> str:
    value = request.GET.get(name, default)
    return value if value in allowed else default


def page_url(capture: Capture, **params: str) -> str:
    """Return the statistics page's URL with the given query, leaving out empty values."""
    query = urlencode({key: value for key, value in params.items() if value})
    return reverse("explorer:statistics", args=[capture.pk]) + (f"?{query}" if query else "")


def stats_tabs(capture: Capture, filter_text: str, kind: str = DEFAULT_KIND) -> list[tuple[str, str, str]]:
    """Return (key, label, URL) of every statistics tab, each keeping the display filter."""
    tabs = [
        (key, label, page_url(capture, view=key, kind=kind, filter=filter_text))
        for key, label in VIEWS.items()
    ]
    query = f"?{urlencode({'filter': filter_text})}" if filter_text else ""
    for key, label, name in (
        ("expert", "Expert Information", "expert"),
        ("iograph", "I/O Graph", "io_graph"),
        ("http_objects", "HTTP Objects", "http_objects"),
        ("http_requests", "HTTP Requests", "http_requests"),
        ("dns_queries", "DNS Queries", "dns_queries"),
    ):
        tabs.append((key, label, reverse(f"explorer:{name}", args=[capture.pk]) + query))
    graph_query = urlencode({"kind": kind if kind in ("IPv4", "IPv6") else "IPv4", "filter": filter_text})
    graph_url = reverse("explorer:conversation_graph", args=[capture.pk]) + f"?{graph_query}"
    tabs.append(("conversation_graph", "Conversation graph", graph_url))
    return tabs


def apply_url(capture: Capture, row_filter: str) -> str:
    return f"{capture.get_absolute_url()}?{urlencode({'filter': row_filter})}"


def sort_key(value: Any) -> Any:
    """Order ports and counts as numbers, addresses as text; empty cells last."""
    if isinstance(value, str) and value.isdigit():
        return (0, int(value), "")
    if isinstance(value, (int, float, Decimal)):
        return (0, value, "")
    return (1, 0, str(value))


def cell_text(key: str, value: Any) -> str:
    if key == "rel_start":
        return f"{value:.6f}"
    if key == "duration":
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(
    capture: Capture, params: dict[str, str], columns: list[tuple[str, str, bool]], records: list[Any]
) -> tuple[list[Column], list[Row]]:
    """Return the header cells (with their sort links) and the rows, sorted as ?sort= asks."""
    sort = params.get("sort", "")
    keys = [key for key, _, _ in columns]
    if sort.removeprefix("-") in keys:
        field = sort.removeprefix("-")
        records = sorted(records, key=lambda r: sort_key(getattr(r, field)), reverse=sort.startswith("-"))
    header = []
    for key, label, numeric in columns:
        direction, next_sort = "", f"-{key}" if numeric else key
        if sort.removeprefix("-") == key:
            direction = "descending" if sort.startswith("-") else "ascending"
            next_sort = key if sort.startswith("-") else f"-{key}"
        header.append(
            Column(key, label, numeric, page_url(capture, **{**params, "sort": next_sort}), direction)
        )
    rows = [
        Row(
            cells=[Cell(cell_text(key, getattr(record, key)), numeric) for key, _, numeric in columns],
            filter=record.filter,
            apply_url=apply_url(capture, record.filter),
        )
        for record in records
    ]
    return header, rows


def hierarchy_rows(capture: Capture, nodes: list[ProtocolNode], depth: int = 0) -> list[Row]:
    rows = []
    for node in nodes:
        rows.append(
            Row(
                cells=[
                    Cell(node.protocol, False),
                    Cell(f"{node.packets:,}", True),
                    Cell(f"{node.bytes:,}", True),
                ],
                filter=node.protocol,
                apply_url=apply_url(capture, node.protocol),
                depth=min(depth, 12),
                percent_packets=node.percent_packets,
                percent_bytes=node.percent_bytes,
            )
        )
        rows += hierarchy_rows(capture, node.children, depth + 1)
    return rows


@not_found_page
@require_GET
async def statistics(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show conversations, endpoints or the protocol hierarchy, optionally limited to a display filter."""
    capture = await capture_for(request, capture_id)
    view = choice(request, "view", list(VIEWS), DEFAULT_VIEW)
    kind = choice(request, "kind", engine_stats.KINDS, DEFAULT_KIND)
    filter_text = request.GET.get("filter", "").strip()
    params = {"view": view, "filter": filter_text, "sort": request.GET.get("sort", "")}
    if view != "hierarchy":
        params["kind"] = kind
    columns: list[Column] = []
    rows: list[Row] = []
    error = ""
    try:
        if view == "conversations":
            found = await engine_stats.conversations(capture.path, kind, filter_text)
            chosen = [
                c for c in CONVERSATION_COLUMNS if kind in engine_stats.PORT_KINDS or c[0] not in PORT_KEYS
            ]
            columns, rows = table(capture, params, chosen, found)
        elif view == "endpoints":
            hosts = await engine_stats.endpoints(capture.path, kind, filter_text)
            chosen = [c for c in ENDPOINT_COLUMNS if kind in engine_stats.PORT_KINDS or c[0] not in PORT_KEYS]
            columns, rows = table(capture, params, chosen, hosts)
        else:
            rows = hierarchy_rows(capture, await engine_stats.protocol_hierarchy(capture.path, filter_text))
    except EngineError as error_raised:
        error = error_raised.message
    context = {
        "capture": capture,
        "view": view,
        "kind": kind,
        "filter_text": filter_text,
        "sort": params["sort"],
        "views": stats_tabs(capture, filter_text, kind),
        "kinds": [
            (key, page_url(capture, view=view, kind=key, filter=filter_text)) for key in engine_stats.KINDS
        ],
        "columns": columns,
        "rows": rows,
        "error": error,
        "download_url": reverse("api:download", args=[capture.pk]),
        "clear_url": page_url(capture, view=view, kind=kind if view != "hierarchy" else ""),
        "kept": {"view": view, "kind": kind if view != "hierarchy" else "", "sort": params["sort"]},
    }
    template = "explorer/statistics.html"
    if wants_partial(request):
        template += "#stats_table"
    return varies_on_htmx(render(request, template, context, status=400 if error else 200))
