"""The flow graph: one arrow per packet between host:port nodes."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema

from ..access import capture_for
from ..engine import flows as engine_flows
from .schemas import Error, schema_of

router = Router()

FlowNodeOut: Any = schema_of(engine_flows.Node, "FlowNodeOut")
FlowArrowOut: Any = schema_of(engine_flows.Arrow, "FlowArrowOut")
FlowOut: Any = schema_of(engine_flows.Flow, "FlowOut")


class FlowQuery(Schema):
    filter: str = ""
    stream: int | None = None
    offset: int = 0
    limit: int = engine_flows.MAX_ARROWS


@router.get(
    "/captures/{capture_id}/flow",
    response={200: FlowOut, 400: Error, 404: Error},
    summary="Flow graph: one arrow per packet between host:port nodes (a filter, a TCP stream, or all TCP)",
)
async def flow_graph(request: HttpRequest, capture_id: int, query: Query[FlowQuery]) -> engine_flows.Flow:
    capture = await capture_for(request, capture_id)
    expression = engine_flows.flow_filter(query.filter, query.stream)
    return await engine_flows.flow(
        capture.path, expression, query.offset, query.limit, capture.precision_digits
    )
