"""Statistics: conversations, endpoints and the protocol hierarchy, optionally through a filter."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema

from ..access import capture_for
from ..engine import stats as engine_stats
from .responses import many_rows
from .schemas import Error, schema_of

router = Router()

ConversationOut: Any = schema_of(engine_stats.Conversation, "ConversationOut")
EndpointOut: Any = schema_of(engine_stats.Endpoint, "EndpointOut")
ProtocolNodeOut: Any = schema_of(engine_stats.ProtocolNode, "ProtocolNodeOut")


class StatsQuery(Schema):
    kind: str = "TCP"
    filter: str = ""


@router.get(
    "/captures/{capture_id}/conversations",
    response={200: list[ConversationOut], 400: Error, 404: Error},
    summary="Conversations of one kind (Ethernet, IPv4, IPv6, TCP, UDP), optionally limited to a filter",
)
async def conversations(request: HttpRequest, capture_id: int, query: Query[StatsQuery]) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    return await many_rows(await engine_stats.conversations(capture.path, query.kind, query.filter))


@router.get(
    "/captures/{capture_id}/endpoints",
    response={200: list[EndpointOut], 400: Error, 404: Error},
    summary="Endpoints of one kind (Ethernet, IPv4, IPv6, TCP, UDP), optionally limited to a filter",
)
async def endpoints(request: HttpRequest, capture_id: int, query: Query[StatsQuery]) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    return await many_rows(await engine_stats.endpoints(capture.path, query.kind, query.filter))


@router.get(
    "/captures/{capture_id}/protocol-hierarchy",
    response={200: list[ProtocolNodeOut], 400: Error, 404: Error},
    summary="Protocol hierarchy: frames, bytes and shares per protocol path, optionally limited to a filter",
)
async def protocol_hierarchy(
    request: HttpRequest,
    capture_id: int,
    filter: str = "",  # noqa: A002
) -> list[engine_stats.ProtocolNode]:
    capture = await capture_for(request, capture_id)
    return await engine_stats.protocol_hierarchy(capture.path, filter)
