"""The capture view (packet list, details, bytes) and its packet detail fragment."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from ..access import capture_for, rights
from ..engine import packets as engine_packets
from ..engine.errors import EngineError
from ..engine.packets import PacketDetail, TreeNode
from ..models import Capture
from . import hexdump
from .common import not_found_page, varies_on_htmx, wants_partial
from .links import follow_links, stream_flow_url
from .statistics.registry import menu as statistics_menu

TIME_FORMAT_LABELS = {
    "relative": "Since beginning of capture",
    "absolute": "Absolute date and time",
    "utc": "UTC date and time",
    "delta_displayed": "Since previous displayed packet",
    "delta": "Since previous captured packet",
    "epoch": "Seconds since epoch",
}

# sharkd names expert severities "Chat", "Note", "Warning", "Error" and "Comment".
SEVERITIES = {"chat": "chat", "note": "note", "warn": "warn", "warning": "warn", "error": "error"}

# How long the page waits for the details of ?packet=N: a capture that is still loading
# would hold the whole page back, so past this the script fetches them after the load.
INITIAL_DETAIL_WAIT = 5.0

NUMBER_PLACEHOLDER = 999_999_999


def time_format_of(request: HttpRequest) -> str:
    value = request.GET.get("time", engine_packets.DEFAULT_TIME_FORMAT)
    return value if value in engine_packets.TIME_FORMATS else engine_packets.DEFAULT_TIME_FORMAT


def packet_of(request: HttpRequest) -> int | None:
    value = request.GET.get("packet", "")
    return int(value) if value.isdigit() and int(value) >= 1 else None


def _normalize_severity(nodes: list[TreeNode]) -> None:
    for node in nodes:
        if node.severity:
            node.severity = SEVERITIES.get(node.severity.lower(), "comment")
        _normalize_severity(node.children)


def _source_label(name: str, size: int) -> str:
    return name if "byte" in name else f"{name} ({size} bytes)"


async def detail_context(capture: Capture, number: int) -> dict[str, Any]:
    """Return the template context of a packet's tree and hex dumps, or of the engine's error."""
    if number < 1:
        return {"packet": number, "error": f"There is no packet {number}."}
    try:
        detail = await engine_packets.detail(capture.path, number)
    except EngineError as error:
        return {"packet": number, "error": error.message}
    context = tree_and_dumps(detail)
    context["follow_links"] = follow_links(capture, detail.follow)
    context["flow_link"] = stream_flow_url(capture, detail.follow)
    return context


def tree_and_dumps(detail: PacketDetail) -> dict[str, Any]:
    """Return the template context of a packet's tree and hex dumps, without links to other pages."""
    _normalize_severity(detail.tree)
    dumps = [
        hexdump.dump(index, _source_label(source.name, len(source.data)), source.data)
        for index, source in enumerate(detail.sources)
    ]
    return {"packet": detail.number, "tree": detail.tree, "dumps": dumps}


async def initial_detail(capture: Capture, number: int) -> dict[str, Any]:
    """Return the details of the packet in the page's URL, unless the engine is still loading."""
    task = asyncio.ensure_future(detail_context(capture, number))
    try:
        # Shielded, so that a slow answer still completes (and warms the engine) after we stop
        # waiting for it, instead of a request being cut off halfway through.
        return await asyncio.wait_for(asyncio.shield(task), INITIAL_DETAIL_WAIT)
    except TimeoutError:
        return {"packet": number, "pending": True}


@not_found_page
@require_GET
async def capture(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show a capture in three panes: packet list, packet details and packet bytes."""
    capture = await capture_for(request, capture_id)
    allowed = await rights(request, capture)
    time_format = time_format_of(request)
    packet = packet_of(request)
    detail = await initial_detail(capture, packet) if packet else {}
    detail_url = reverse("explorer:packet_detail", args=[capture.pk, NUMBER_PLACEHOLDER])
    context = {
        "capture": capture,
        "filter_text": request.GET.get("filter", ""),
        "time_format": time_format,
        "time_formats": TIME_FORMAT_LABELS.items(),
        "packet": packet,
        "field": request.GET.get("field", "")[:200],
        "download_url": reverse("api:download", args=[capture.pk]),
        "statistics_menu": statistics_menu(capture, request.GET.get("filter", "")),
        "urls": {
            "packets": reverse("api:packet_list", args=[capture.pk]),
            "detail": detail_url.replace(str(NUMBER_PLACEHOLDER), "{number}"),
            "websocket": f"/ws/captures/{capture.pk}/",
            "check": reverse("api:check_filter"),
            "complete": reverse("api:complete_field"),
            "marks": reverse("api:marked_frames", args=[capture.pk]),
            "annotations": reverse("api:list_annotations", args=[capture.pk]),
            "live": f"/ws/captures/{capture.pk}/live/",
        },
        # Read-only viewers see the annotations without the controls to add or change them.
        "can_write": allowed.write,
        **detail,
    }
    return render(request, "explorer/capture.html", context)


@not_found_page
@require_GET
async def packet_detail(request: HttpRequest, capture_id: int, number: int) -> HttpResponse:
    """Render a packet's tree and bytes as a fragment for htmx; without htmx, show the page."""
    capture = await capture_for(request, capture_id)
    if not wants_partial(request):
        query = request.GET.copy()
        query["packet"] = str(number)
        return redirect(f"{capture.get_absolute_url()}?{urlencode(sorted(query.items()))}")
    context = await detail_context(capture, number)
    return varies_on_htmx(render(request, "explorer/capture.html#packet_detail", context))
