"""Follow a stream: its payloads in order, client and server, as JSON or as a file."""

from __future__ import annotations

import base64
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema

from ..access import capture_for
from ..engine import follow as engine_follow
from ..engine.follow import FollowResult
from ..models import Capture
from .responses import attachment
from .schemas import Error, file_response, schema_of

router = Router()

PeerOut: Any = schema_of(engine_follow.Peer, "PeerOut")


class SegmentOut(Schema):
    frame: int
    side: str
    bytes: str  # base64


class FollowOut(Schema):
    kind: str
    stream: int
    substream: int | None
    filter: str
    client: PeerOut
    server: PeerOut
    segments: list[SegmentOut]


class FollowQuery(Schema):
    kind: str = "TCP"
    stream: int = 0
    substream: int | None = None


class RawFollowQuery(FollowQuery):
    side: Literal["client", "server", "both"] = "both"


async def followed(request: HttpRequest, capture_id: int, query: FollowQuery) -> tuple[Capture, FollowResult]:
    capture = await capture_for(request, capture_id)
    return capture, await engine_follow.follow(capture.path, query.kind, query.stream, query.substream)


@router.get(
    "/captures/{capture_id}/follow",
    response={200: FollowOut, 400: Error, 404: Error},
    summary="Follow a stream: its payloads in order, marked client or server",
)
async def follow_stream(request: HttpRequest, capture_id: int, query: Query[FollowQuery]) -> dict[str, Any]:
    _, result = await followed(request, capture_id, query)
    segments = [
        {"frame": segment.frame, "side": segment.side, "bytes": base64.b64encode(segment.data).decode()}
        for segment in result.segments
    ]
    return {**asdict(result), "segments": segments}


@router.get(
    "/captures/{capture_id}/follow/raw",
    response={400: Error, 404: Error},
    openapi_extra=file_response(),
    summary="A followed stream's bytes (one side or both) as a file",
)
async def follow_raw(request: HttpRequest, capture_id: int, query: Query[RawFollowQuery]) -> HttpResponse:
    capture, result = await followed(request, capture_id, query)
    response = HttpResponse(result.data(query.side), content_type="application/octet-stream")
    name = f"{Path(capture.name).stem}-{result.kind.lower()}-stream-{result.stream}-{query.side}.bin"
    attachment(response, name)
    return response
