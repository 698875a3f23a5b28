"""Statistics ▸ Expert Information: expert items by severity and message, each opening to its packets."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from ...access import capture_for
from ...engine import expert as engine_expert
from ...engine.errors import EngineError
from ...models import Capture
from ..common import not_found_page
from ..links import filtered_url, packet_url
from ..sortable import SortColumn, chosen_sort, header, sorted_records
from .page import StatisticPage
from .registry import statistic

# Packets listed under one message; the rest are a click away as a capture filter.
PACKETS_LISTED = 500

# The sortable columns of every severity's table.
COLUMNS = [
    SortColumn("message", "Summary"),
    SortColumn("group", "Group"),
    SortColumn("protocol", "Protocol"),
    SortColumn("count", "Count", numeric=True, largest_first=True),
]


@dataclass
class Packet:
    number: int
    url: str


@dataclass
class Row:
    message: str
    group: str
    protocol: str
    count: int
    filter: str
    apply_url: str
    packets: list[Packet]
    more: int


@dataclass
class Section:
    severity: str
    count: int
    filter: str
    apply_url: str
    rows: list[Row]


def row(capture: Capture, group: engine_expert.ExpertGroup) -> Row:
    frames = list(dict.fromkeys(group.frames))  # a frame may carry one message more than once
    return Row(
        message=group.message,
        group=group.group,
        protocol=group.protocol,
        count=group.count,
        filter=group.filter,
        apply_url=filtered_url(capture, group.filter),
        packets=[Packet(n, packet_url(capture, n)) for n in frames[:PACKETS_LISTED]],
        more=max(len(frames) - PACKETS_LISTED, 0),
    )


def sections(capture: Capture, groups: list[engine_expert.ExpertGroup], sort: str) -> list[Section]:
    """Return one section per severity present, most severe first, its rows sorted as ?sort= asks."""
    found = []
    for severity in engine_expert.SEVERITIES + sorted(
        {g.severity for g in groups} - set(engine_expert.SEVERITIES)
    ):
        chosen = [g for g in groups if g.severity == severity]
        if not chosen:
            continue
        rows = [row(capture, g) for g in sorted_records(chosen, sort, COLUMNS)]
        severity_filter = engine_expert.severity_filter(severity)
        found.append(
            Section(
                severity,
                sum(g.count for g in chosen),
                severity_filter,
                filtered_url(capture, severity_filter),
                rows,
            )
        )
    return found


@statistic("expert", "Expert Information", order=40)
@not_found_page
@require_GET
async def expert(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show the expert items by severity and message, optionally only those of frames matching a filter."""
    capture = await capture_for(request, capture_id)
    sort = chosen_sort(request.GET.get("sort", ""), COLUMNS)
    page = StatisticPage.of(request, capture, "expert", sort=sort)
    found: list[Section] = []
    try:
        items = await engine_expert.expert_items(capture.path, page.filter_text)
        found = sections(capture, engine_expert.summarize(items), sort)
    except EngineError as error:
        page.error = error.message
    context = {
        "sort": sort,
        "columns": header(COLUMNS, sort, lambda s: page.url(filter=page.filter_text, sort=s)),
        "sections": found,
        "total": sum(section.count for section in found),
    }
    return page.render(request, "explorer/expert.html", context, partial="expert_table")
