"""The Follow Stream page: one stream's conversation as ASCII, a hex dump or raw hex."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from ..access import capture_for
from ..engine import follow as engine_follow
from ..engine.errors import EngineError
from ..engine.follow import FollowResult
from ..models import Capture
from .common import not_found_page
from .links import filtered_url, follow_url, packet_url
from .params import query_int

VIEWS = {"ascii": "ASCII", "hex": "Hex dump", "raw": "Raw"}
SIDES = ("both", "client", "server")

# Bytes of stream data put into one page, per view: about 2 MB of markup for each (a hex dump
# line spends 76 characters on 16 bytes). The rest is a download away.
PAGE_BYTES = {"ascii": 2 * 1024 * 1024, "raw": 1024 * 1024, "hex": 512 * 1024}

PRINTABLE = range(0x20, 0x7F)
KEPT = b"\n\t"


@dataclass
class ShownSegment:
    frame: int
    side: str
    size: int
    text: str
    url: str


def ascii_text(data: bytes) -> str:
    """Return data as Wireshark's ASCII view shows it: non-printables as '.', line breaks kept."""
    data = data.replace(b"\r\n", b"\n")
    return "".join(chr(b) if b in PRINTABLE or b in KEPT else "." for b in data)


def hex_text(data: bytes, offset: int) -> str:
    """Return a hex dump of data (offsets counting on from offset), 16 bytes a line."""
    lines = []
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        cells = " ".join(f"{b:02x}" for b in chunk[:8]) + "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if b in PRINTABLE else "." for b in chunk)
        lines.append(f"{offset + start:08x}  {cells:<48}  {text}")
    return "\n".join(lines)


def shown_segments(
    capture: Capture, result: FollowResult, view: str, side: str
) -> tuple[list[ShownSegment], int]:
    """Return the segments of the chosen side rendered for the view, within the page's budget."""
    budget = PAGE_BYTES[view]
    offsets = {"client": 0, "server": 0}
    shown = []
    for segment in result.segments:
        if side not in ("both", segment.side):
            continue
        data = segment.data[:budget]
        if view == "hex":
            text = hex_text(data, offsets[segment.side])
        elif view == "raw":
            text = data.hex()
        else:
            text = ascii_text(data)
        offsets[segment.side] += len(segment.data)
        url = packet_url(capture, segment.frame)
        shown.append(ShownSegment(segment.frame, segment.side, len(segment.data), text, url))
        budget -= len(data)
        if budget <= 0:
            break
    return shown, PAGE_BYTES[view] - max(budget, 0)


def page_state(view: str, side: str) -> dict[str, str]:
    """Return the view and side as query parameters, leaving out the defaults."""
    return {"view": "" if view == "ascii" else view, "side": "" if side == "both" else side}


def follow_context(capture: Capture, result: FollowResult, view: str, side: str) -> dict[str, Any]:
    """Return the template context of a followed stream: its text, switches and links."""
    state = page_state(view, side)

    def here(**changes: str) -> str:
        return follow_url(
            capture, result.kind, result.stream, substream=result.substream, **{**state, **changes}
        )

    def neighbour(step: int) -> str:
        return follow_url(capture, result.kind, result.stream + step, view=state["view"], side=state["side"])

    segments, shown_bytes = shown_segments(capture, result, view, side)
    raw_url = reverse("api:follow_raw", args=[capture.pk])
    raw_query: dict[str, Any] = {"kind": result.kind, "stream": result.stream}
    if result.substream is not None:
        raw_query["substream"] = result.substream
    # Neighbouring streams exist for whole connections, not for HTTP/2 or QUIC sub-streams.
    neighbours = result.substream is None
    return {
        "result": result,
        "segments": segments,
        "shown_bytes": shown_bytes,
        "total_bytes": len(result.data(side)),
        "views": [(key, label, here(view=page_state(key, side)["view"])) for key, label in VIEWS.items()],
        "sides": [(key, here(side=page_state(view, key)["side"])) for key in SIDES],
        "downloads": [(key, f"{raw_url}?{urlencode({**raw_query, 'side': key})}") for key in SIDES],
        "only_url": filtered_url(capture, result.filter),
        "exclude_url": filtered_url(capture, f"!({result.filter})"),
        "previous_url": neighbour(-1) if neighbours and result.stream > 0 else None,
        "next_url": neighbour(1) if neighbours else None,
    }


@not_found_page
@require_GET
async def follow(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show one stream's conversation, client and server in their colours."""
    capture = await capture_for(request, capture_id)
    kind = request.GET.get("kind", "TCP").upper()
    stream = query_int(request, "stream")
    view = request.GET.get("view", "ascii")
    view = view if view in VIEWS else "ascii"
    side = request.GET.get("side", "both")
    side = side if side in SIDES else "both"
    context: dict[str, Any] = {"capture": capture, "kind": kind, "stream": stream, "view": view, "side": side}
    try:
        if stream is None:
            raise EngineError("stream must be a number from 0 up")
        result = await engine_follow.follow(capture.path, kind, stream, query_int(request, "substream"))
    except EngineError as error:
        return render(request, "explorer/follow.html", {**context, "error": error.message}, status=400)
    return render(request, "explorer/follow.html", {**context, **follow_context(capture, result, view, side)})
