"""Expert information: items in frame order, and counts per severity, group, protocol and message."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from ..access import capture_for
from ..engine import expert as engine_expert
from .schemas import Error, schema_of

router = Router()

ExpertItemOut: Any = schema_of(engine_expert.ExpertItem, "ExpertItemOut")


class ExpertSummaryOut(Schema):
    severity: str
    group: str
    protocol: str
    message: str
    count: int


class ExpertOut(Schema):
    items: list[ExpertItemOut]
    summary: list[ExpertSummaryOut]


@router.get(
    "/captures/{capture_id}/expert",
    response={200: ExpertOut, 400: Error, 404: Error},
    summary="Expert information: items in frame order, and counts per severity, group, protocol and message",
)
async def expert_info(request: HttpRequest, capture_id: int, filter: str = "") -> dict[str, Any]:  # noqa: A002
    capture = await capture_for(request, capture_id)
    items = await engine_expert.expert_items(capture.path, filter)
    # The groups without their frames, which the items list already.
    return {"items": items, "summary": engine_expert.summarize(items)}
