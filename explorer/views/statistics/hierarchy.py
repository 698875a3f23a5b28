"""Statistics ▸ Protocol Hierarchy: packets and bytes per protocol, nested as the protocols are."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from ...access import capture_for
from ...engine import stats as engine_stats
from ...engine.errors import EngineError
from ...engine.stats import ProtocolNode
from ...models import Capture
from ..common import not_found_page
from ..links import filtered_url
from ..params import choice
from ..sortable import Cell
from .page import StatisticPage
from .registry import filter_and_kind, statistic

# The address type the Statistics page's tables open on, carried to them from this tab.
DEFAULT_KIND = "TCP"
# Deeper protocols are indented no further (the style sheet has this many steps).
MAX_DEPTH = 12


@dataclass
class Row:
    cells: list[Cell]
    filter: str
    apply_url: str
    depth: int
    percent_packets: float
    percent_bytes: float


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
                apply_url=filtered_url(capture, node.protocol),
                depth=min(depth, MAX_DEPTH),
                percent_packets=node.percent_packets,
                percent_bytes=node.percent_bytes,
            )
        )
        rows += hierarchy_rows(capture, node.children, depth + 1)
    return rows


# Its tab carries the address type of the tabs beside it, which show one, from one to the other.
@statistic(
    "hierarchy",
    "Protocol Hierarchy",
    order=30,
    url_name="statistics",
    tab_query=filter_and_kind(DEFAULT_KIND),
)
@not_found_page
@require_GET
async def hierarchy(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show the protocol hierarchy, optionally limited to a display filter."""
    capture = await capture_for(request, capture_id)
    sort = request.GET.get("sort", "")
    page = StatisticPage.of(request, capture, "hierarchy", sort=sort)
    # Not shown here, but carried on to the tabs that show one address type.
    page.kind = choice(request, "kind", engine_stats.KINDS, DEFAULT_KIND)
    rows: list[Row] = []
    try:
        rows = hierarchy_rows(capture, await engine_stats.protocol_hierarchy(capture.path, page.filter_text))
    except EngineError as error:
        page.error = error.message
    context = {"kind": page.kind, "sort": sort, "rows": rows}
    return page.render(request, "explorer/statistics.html", context, partial="stats_table")
