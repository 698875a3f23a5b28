"""The packet list, page by page through a display filter, and one packet's tree and bytes."""

from __future__ import annotations

import base64
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from ninja.errors import HttpError

from ..access import capture_for
from ..engine import packets as engine_packets
from ..engine.errors import EngineError
from .responses import as_built
from .schemas import Error, schema_of

router = Router()

PacketOut: Any = schema_of(engine_packets.PacketRow, "PacketOut")
TreeNodeOut: Any = schema_of(engine_packets.TreeNode, "TreeNodeOut")


class PacketPageOut(Schema):
    total: int
    displayed: int
    offset: int
    packets: list[PacketOut]


class DataSourceOut(Schema):
    name: str
    bytes: str  # base64


class PacketDetailOut(Schema):
    number: int
    columns: list[str]
    tree: list[TreeNodeOut]
    sources: list[DataSourceOut]
    bytes: str  # base64 of the frame, the first source
    follow: list[list[str]]


class PacketQuery(Schema):
    filter: str = ""
    offset: int = 0
    limit: int = 100
    time_format: str = engine_packets.DEFAULT_TIME_FORMAT


@router.get(
    "/captures/{capture_id}/packets",
    response={200: PacketPageOut, 400: Error, 404: Error},
    summary="A page of the packet list, optionally through a display filter",
)
async def packet_list(request: HttpRequest, capture_id: int, query: Query[PacketQuery]) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    if not 0 <= query.limit <= 1000 or query.offset < 0:
        raise HttpError(400, "offset must be >= 0 and limit between 0 and 1000")
    page = await engine_packets.packets(
        capture.path, query.filter, query.offset, query.limit, query.time_format, capture.precision_digits
    )
    return as_built(
        {
            "total": page.total,
            "displayed": page.displayed,
            "offset": query.offset,
            "packets": page.packets,
        }
    )


@router.get(
    "/captures/{capture_id}/packets/{number}/",
    response={200: PacketDetailOut, 400: Error, 404: Error},
    summary="A packet's protocol tree and bytes",
)
async def packet_detail(request: HttpRequest, capture_id: int, number: int) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    if number < 1:
        raise HttpError(404, f"no packet {number}")
    try:
        detail = await engine_packets.detail(capture.path, number)
    except EngineError as error:
        raise HttpError(404, error.message) from error
    sources = [{"name": s.name, "bytes": base64.b64encode(s.data).decode()} for s in detail.sources]
    return as_built(
        {
            "number": detail.number,
            "columns": detail.columns,
            "tree": detail.tree,
            "sources": sources,
            "bytes": sources[0]["bytes"],
            "follow": [list(pair) for pair in detail.follow],
        }
    )
