"""The Expert Information page: expert items by severity and message, each opening to its packets."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from ..access import capture_for
from ..engine import expert as engine_expert
from ..engine.errors import EngineError
from ..models import Capture
from .common import not_found_page, varies_on_htmx, wants_partial
from .statistics import apply_url, sort_key, stats_tabs

# Packets listed under one message; the rest are a click away as a capture filter.
PACKETS_LISTED = 500

# (key, label, numeric): the sortable columns of every severity's table.
COLUMNS = [
    ("message", "Summary", False),
    ("group", "Group", False),
    ("protocol", "Protocol", False),
    ("count", "Count", True),
]


@dataclass
class Column:
    key: str
    label: str
    numeric: bool
    href: str
    direction: str  # aria-sort: "ascending", "descending" or ""


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


def page_url(capture: Capture, **params: str) -> str:
    query = urlencode({key: value for key, value in params.items() if value})
    return reverse("explorer:expert", args=[capture.pk]) + (f"?{query}" if query else "")


def columns(capture: Capture, filter_text: str, sort: str) -> list[Column]:
    header = []
    for key, label, numeric in COLUMNS:
        direction, next_sort = "", f"-{key}" if numeric else key
        if sort.removeprefix("-") == key:
            direction = "descending" if sort.startswith("-") else "ascending"
            next_sort = key if sort.startswith("-") else f"-{key}"
        header.append(
            Column(key, label, numeric, page_url(capture, filter=filter_text, sort=next_sort), direction)
        )
    return header


def row(capture: Capture, group: engine_expert.ExpertGroup) -> Row:
    frames = list(dict.fromkeys(group.frames))  # a frame may carry one message more than once
    return Row(
        message=group.message,
        group=group.group,
        protocol=group.protocol,
        count=group.count,
        filter=group.filter,
        apply_url=apply_url(capture, group.filter),
        packets=[Packet(n, f"{capture.get_absolute_url()}?packet={n}") for n in frames[:PACKETS_LISTED]],
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
        field = sort.removeprefix("-")
        if field in {key for key, _, _ in COLUMNS}:
            chosen.sort(key=lambda g: sort_key(getattr(g, field)), reverse=sort.startswith("-"))
        rows = [row(capture, g) for g in chosen]
        severity_filter = engine_expert.severity_filter(severity)
        found.append(
            Section(
                severity,
                sum(g.count for g in chosen),
                severity_filter,
                apply_url(capture, severity_filter),
                rows,
            )
        )
    return found


@not_found_page
@require_GET
async def expert(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show the expert items by severity and message, optionally only those of frames matching a filter."""
    capture = await capture_for(request, capture_id)
    filter_text = request.GET.get("filter", "").strip()
    sort = request.GET.get("sort", "")
    if sort.removeprefix("-") not in {key for key, _, _ in COLUMNS}:
        sort = ""
    found: list[Section] = []
    error = ""
    try:
        items = await engine_expert.expert_items(capture.path, filter_text)
        found = sections(capture, engine_expert.summarize(items), sort)
    except EngineError as error_raised:
        error = error_raised.message
    context = {
        "capture": capture,
        "view": "expert",
        "views": stats_tabs(capture, filter_text),
        "filter_text": filter_text,
        "sort": sort,
        "columns": columns(capture, filter_text, sort),
        "sections": found,
        "total": sum(section.count for section in found),
        "error": error,
        "download_url": reverse("api:download", args=[capture.pk]),
        "clear_url": page_url(capture, sort=sort),
        "kept": {"sort": sort},
    }
    template = "explorer/expert.html"
    if wants_partial(request):
        template += "#expert_table"
    return varies_on_htmx(render(request, template, context, status=400 if error else 200))
