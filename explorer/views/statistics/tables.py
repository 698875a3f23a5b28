"""Statistics ▸ HTTP Requests and DNS Queries: one row per request or query, with its answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from ...access import capture_for
from ...engine import tables as engine_tables
from ...engine.errors import EngineError
from ..common import not_found_page
from ..links import packet_url
from ..sortable import Cell, HeaderCell, SortColumn, header, sorted_records
from .page import StatisticPage
from .registry import statistic

HTTP_COLUMNS = [
    SortColumn("frame", "Frame", numeric=True),
    SortColumn("method", "Method"),
    SortColumn("host", "Host"),
    SortColumn("uri", "URI"),
    SortColumn("status", "Status", numeric=True),
    SortColumn("phrase", "Phrase"),
    SortColumn("response_frame", "Response frame", numeric=True),
    SortColumn("time", "Time (s)", numeric=True),
]
DNS_COLUMNS = [
    SortColumn("frame", "Frame", numeric=True),
    SortColumn("name", "Name"),
    SortColumn("type", "Type"),
    SortColumn("response_frame", "Response frame", numeric=True),
    SortColumn("rcode", "Rcode"),
    SortColumn("answers", "Answers"),
    SortColumn("time", "Time (s)", numeric=True),
]
# Cells holding a frame number link to that packet in the capture view.
FRAME_KEYS = {"frame", "response_frame"}


@dataclass
class Row:
    frame: int
    cells: list[Cell]


def frame_rows(page: StatisticPage, columns: list[SortColumn], records: list[Any]) -> list[Row]:
    """Return a row per record, its frame numbers linking to their packets."""
    rows = []
    for record in records:
        cells = []
        for column in columns:
            value = getattr(record, column.key)
            text = "" if value is None else str(value)
            linked = column.key in FRAME_KEYS and value is not None
            cells.append(Cell(text, column.numeric, packet_url(page.capture, value) if linked else ""))
        rows.append(Row(record.frame, cells))
    return rows


async def table_page(
    request: HttpRequest, capture_id: int, key: str, columns: list[SortColumn]
) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    sort = request.GET.get("sort", "")
    page = StatisticPage.of(request, capture, key, sort=sort)
    cells: list[HeaderCell] = []
    rows: list[Row] = []
    try:
        if key == "http_requests":
            records: list[Any] = await engine_tables.http_requests(capture.path, page.filter_text)
        else:
            records = await engine_tables.dns_queries(capture.path, page.filter_text)
        cells = header(columns, sort, lambda s: page.url(filter=page.filter_text, sort=s))
        rows = frame_rows(page, columns, sorted_records(records, sort, columns))
    except EngineError as error:
        page.error = error.message
    context = {"name": key, "sort": sort, "columns": cells, "rows": rows}
    return page.render(request, "explorer/table_page.html", context, partial="stats_table")


@statistic("http_requests", "HTTP Requests", order=70)
@not_found_page
@require_GET
async def http_requests(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show one row per HTTP request with its response, optionally limited to a display filter."""
    return await table_page(request, capture_id, "http_requests", HTTP_COLUMNS)


@statistic("dns_queries", "DNS Queries", order=80)
@not_found_page
@require_GET
async def dns_queries(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show one row per DNS query with its response, optionally limited to a display filter."""
    return await table_page(request, capture_id, "dns_queries", DNS_COLUMNS)
