"""Statistics ▸ Conversation graph: hosts as nodes, their conversations as edges weighted by bytes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from ...access import capture_for
from ...engine import stats as engine_stats
from ...engine.errors import EngineError
from ...engine.stats import Conversation
from ...models import Capture
from ..common import not_found_page
from ..links import filtered_url
from ..params import choice
from ..sortable import sort_value
from .page import StatisticPage
from .registry import Carried, statistic

GRAPH_KINDS = ["IPv4", "IPv6"]
MAX_HOSTS = 40
GRAPH_SIZE = 760
GRAPH_RADIUS = 280
NODE_RADIUS = 6
MIN_EDGE_WIDTH, MAX_EDGE_WIDTH = 1.0, 12.0


def graph_kind(carried: Carried) -> dict[str, str]:
    """Return the query of the tab: the address type carried if it is one drawn here, else IPv4."""
    kind = carried.get("kind", "")
    return {"kind": kind if kind in GRAPH_KINDS else GRAPH_KINDS[0], "filter": carried.get("filter", "")}


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
    kept = sorted(busiest, key=sort_value)
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
                url=filtered_url(capture, conv.filter),
            )
        )
    # Thin edges last, so they stay clickable above the thick ones.
    graph.edges.sort(key=lambda e: -e.width)
    return graph


@statistic("conversation_graph", "Conversation graph", order=90, tab_query=graph_kind)
@not_found_page
@require_GET
async def conversation_graph_page(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show hosts as nodes and their conversations as edges weighted by bytes."""
    capture = await capture_for(request, capture_id)
    kind = choice(request, "kind", GRAPH_KINDS, GRAPH_KINDS[0])
    page = StatisticPage.of(request, capture, "conversation_graph", kind=kind)
    graph = Graph(size=GRAPH_SIZE)
    try:
        found = await engine_stats.conversations(capture.path, kind, page.filter_text)
        graph = conversation_graph(capture, found)
    except EngineError as error:
        page.error = error.message
    context = {
        "kind": kind,
        "kinds": [(key, page.url(kind=key, filter=page.filter_text)) for key in GRAPH_KINDS],
        "graph": graph,
        "max_hosts": MAX_HOSTS,
    }
    return page.render(request, "explorer/conversation_graph.html", context)
