"""Links between the pages: a capture filtered or at a packet, a followed stream, a flow graph.

Built here once for every view that links to another page, so that no view imports another
view's module for its URLs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.urls import reverse

from ..engine import follow as engine_follow
from ..models import Capture


def page_url(capture: Capture, url_name: str, **params: str) -> str:
    """Return one of a capture's pages with the given query, leaving out empty values."""
    query = urlencode({key: value for key, value in params.items() if value})
    return reverse(f"explorer:{url_name}", args=[capture.pk]) + (f"?{query}" if query else "")


def filtered_url(capture: Capture, display_filter: str) -> str:
    """Return the capture view showing the packets a display filter matches ("Apply as filter")."""
    return f"{capture.get_absolute_url()}?{urlencode({'filter': display_filter})}"


def packet_url(capture: Capture, number: int, display_filter: str = "") -> str:
    """Return the capture view with one packet selected, under a display filter if given."""
    query: dict[str, Any] = {"packet": number}
    if display_filter:
        query["filter"] = display_filter
    return f"{capture.get_absolute_url()}?{urlencode(query)}"


def follow_url(
    capture: Capture, kind: str, stream: int, *, substream: int | None = None, view: str = "", side: str = ""
) -> str:
    """Return the follow page of a stream in the view and side given (left out when default)."""
    query: dict[str, Any] = {"kind": kind, "stream": stream}
    if substream is not None:
        query["substream"] = substream
    query.update({key: value for key, value in (("view", view), ("side", side)) if value})
    return f"{reverse('explorer:follow', args=[capture.pk])}?{urlencode(query)}"


def follow_links(capture: Capture, hints: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return (label, url) for each of a packet's follow hints that the engine can follow."""
    links = []
    for kind, expression in hints:
        parsed = engine_follow.parse_hint(kind, expression)
        if parsed is not None:
            links.append((f"{kind} stream", follow_url(capture, kind, parsed[0], substream=parsed[1])))
    return links


def flow_url(
    capture: Capture, *, filter_text: str = "", stream: int | None = None, offset: int = 0, svg: bool = False
) -> str:
    """Return the flow graph page of a filter or a TCP stream (parameters left out when empty)."""
    query: dict[str, Any] = {}
    if stream is not None:
        query["stream"] = stream
    elif filter_text:
        query["filter"] = filter_text
    if offset:
        query["offset"] = offset
    if svg:
        query["format"] = "svg"
    url = reverse("explorer:flow", args=[capture.pk])
    return f"{url}?{urlencode(query)}" if query else url


def stream_flow_url(capture: Capture, hints: list[tuple[str, str]]) -> str | None:
    """Return the flow graph of a packet's TCP stream, from its follow hints, if it has one."""
    for kind, expression in hints:
        # The flow graph draws TCP (sharkd's seqa:tcp tap): its stream is a TCP stream.
        parsed = engine_follow.parse_hint(kind, expression) if kind == "TCP" else None
        if parsed is not None:
            return flow_url(capture, stream=parsed[0])
    return None
