"""HTTP requests and DNS queries, one row per request or query with its answer."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

from ..access import capture_for
from ..engine import tables as engine_tables
from .schemas import Error, schema_of

router = Router()

HttpRequestOut: Any = schema_of(
    engine_tables.HttpRequest, "HttpRequestOut", time="Seconds from the request to its response (http.time)"
)
DnsQueryOut: Any = schema_of(
    engine_tables.DnsQuery, "DnsQueryOut", time="Seconds from the query to its response (dns.time)"
)


@router.get(
    "/captures/{capture_id}/http-requests",
    response={200: list[HttpRequestOut], 400: Error, 404: Error},
    summary="HTTP requests, one per row with its response, optionally limited to a display filter",
)
async def http_requests(
    request: HttpRequest,
    capture_id: int,
    filter: str = "",  # noqa: A002
) -> list[engine_tables.HttpRequest]:
    capture = await capture_for(request, capture_id)
    return await engine_tables.http_requests(capture.path, filter)


@router.get(
    "/captures/{capture_id}/dns-queries",
    response={200: list[DnsQueryOut], 400: Error, 404: Error},
    summary="DNS queries, one per row with its response, optionally limited to a display filter",
)
async def dns_queries(
    request: HttpRequest,
    capture_id: int,
    filter: str = "",  # noqa: A002
) -> list[engine_tables.DnsQuery]:
    capture = await capture_for(request, capture_id)
    return await engine_tables.dns_queries(capture.path, filter)
