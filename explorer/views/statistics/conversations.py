"""Statistics ▸ Conversations and Endpoints, per address type (Ethernet, IPv4, IPv6, TCP, UDP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from ...access import capture_for
from ...engine import stats as engine_stats
from ...engine.errors import EngineError
from ..common import not_found_page
from ..links import filtered_url
from ..params import choice
from ..sortable import Cell, HeaderCell, SortColumn, header, sorted_records
from .page import StatisticPage
from .registry import MenuEntry, filter_and_kind, statistic

DEFAULT_KIND = "TCP"

CONVERSATION_COLUMNS = [
    SortColumn("address_a", "Address A"),
    SortColumn("port_a", "Port A", numeric=True, largest_first=True),
    SortColumn("address_b", "Address B"),
    SortColumn("port_b", "Port B", numeric=True, largest_first=True),
    SortColumn("packets", "Packets", numeric=True, largest_first=True),
    SortColumn("bytes", "Bytes", numeric=True, largest_first=True),
    SortColumn("packets_ab", "Packets A → B", numeric=True, largest_first=True),
    SortColumn("bytes_ab", "Bytes A → B", numeric=True, largest_first=True),
    SortColumn("packets_ba", "Packets B → A", numeric=True, largest_first=True),
    SortColumn("bytes_ba", "Bytes B → A", numeric=True, largest_first=True),
    SortColumn("rel_start", "Rel Start", numeric=True, largest_first=True),
    SortColumn("duration", "Duration", numeric=True, largest_first=True),
]
ENDPOINT_COLUMNS = [
    SortColumn("address", "Address"),
    SortColumn("port", "Port", numeric=True, largest_first=True),
    SortColumn("packets", "Packets", numeric=True, largest_first=True),
    SortColumn("bytes", "Bytes", numeric=True, largest_first=True),
    SortColumn("tx_packets", "Tx Packets", numeric=True, largest_first=True),
    SortColumn("tx_bytes", "Tx Bytes", numeric=True, largest_first=True),
    SortColumn("rx_packets", "Rx Packets", numeric=True, largest_first=True),
    SortColumn("rx_bytes", "Rx Bytes", numeric=True, largest_first=True),
]
PORT_KEYS = {"port", "port_a", "port_b"}


@dataclass
class Row:
    cells: list[Cell]
    filter: str
    apply_url: str


def cell_text(key: str, value: Any) -> str:
    if key == "rel_start":
        return f"{value:.6f}"
    if key == "duration":
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def shown_columns(columns: list[SortColumn], kind: str) -> list[SortColumn]:
    """Return the columns of an address type: ports only for TCP and UDP."""
    return [c for c in columns if kind in engine_stats.PORT_KINDS or c.key not in PORT_KEYS]


async def address_table(request: HttpRequest, capture_id: int, key: str) -> HttpResponse:
    """Render the conversations or the endpoints of one address type, sorted as ?sort= asks."""
    capture = await capture_for(request, capture_id)
    kind = choice(request, "kind", engine_stats.KINDS, DEFAULT_KIND)
    sort = request.GET.get("sort", "")
    page = StatisticPage.of(request, capture, key, kind=kind, sort=sort)
    of_conversations = key == "conversations"
    columns = shown_columns(CONVERSATION_COLUMNS if of_conversations else ENDPOINT_COLUMNS, kind)
    cells: list[HeaderCell] = []
    rows: list[Row] = []
    try:
        tap = engine_stats.conversations if of_conversations else engine_stats.endpoints
        records: list[Any] = await tap(capture.path, kind, page.filter_text)
        cells = header(columns, sort, lambda s: page.url(filter=page.filter_text, sort=s, kind=kind))
        rows = [
            Row(
                cells=[Cell(cell_text(c.key, getattr(record, c.key)), c.numeric) for c in columns],
                filter=record.filter,
                apply_url=filtered_url(capture, record.filter),
            )
            for record in sorted_records(records, sort, columns)
        ]
    except EngineError as error:
        page.error = error.message
    context = {
        "kind": kind,
        "sort": sort,
        "kinds": [(k, page.url(kind=k, filter=page.filter_text)) for k in engine_stats.KINDS],
        "columns": cells,
        "rows": rows,
    }
    return page.render(request, "explorer/statistics.html", context, partial="stats_table")


@statistic(
    "conversations",
    "Conversations",
    order=10,
    url_name="statistics",
    tab_query=filter_and_kind(DEFAULT_KIND),
    # The Statistics page opens on its first tab, conversations.
    menu=MenuEntry("Statistics", "statistics-link"),
)
@not_found_page
@require_GET
async def conversations(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show the conversations of one address type, optionally limited to a display filter."""
    return await address_table(request, capture_id, "conversations")


@statistic("endpoints", "Endpoints", order=20, url_name="statistics", tab_query=filter_and_kind(DEFAULT_KIND))
@not_found_page
@require_GET
async def endpoints(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show the endpoints of one address type, optionally limited to a display filter."""
    return await address_table(request, capture_id, "endpoints")
