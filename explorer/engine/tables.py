"""HTTP requests and DNS queries, one row per request or query paired with its answer.

Built from sharkd `frames` rows with custom columns (occurrence 0: every occurrence, joined
by commas), pairing each answer to its question by http.request_in / dns.response_to.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .sessions import engine
from .stats import _checked, _recall, _remember

HTTP_FILTER = "http.request || http.response"
HTTP_COLUMNS = [
    "http.request.method:0",
    "http.host:0",
    "http.request.uri:0",
    "http.response.code:0",
    "http.response.phrase:0",
    "http.response_in:0",
    "http.request_in:0",
    "http.time:0",
]

DNS_FILTER = "dns"
DNS_COLUMNS = [
    "dns.flags.response:0",
    "dns.qry.name:0",
    "dns.qry.type:0",
    "dns.response_in:0",
    "dns.response_to:0",
    "dns.time:0",
    "dns.flags.rcode:0",
    "dns.a:0",
    "dns.aaaa:0",
    "dns.cname:0",
]


@dataclass
class HttpRequest:
    frame: int
    method: str
    host: str
    uri: str
    status: int | None
    phrase: str
    response_frame: int | None
    time: Decimal | None


@dataclass
class DnsQuery:
    frame: int
    name: str
    type: str
    response_frame: int | None
    rcode: str
    answers: str
    time: Decimal | None


def _number(text: str) -> int | None:
    first = text.split(",", 1)[0]
    return int(first) if first.isdigit() else None


def _seconds(text: str) -> Decimal | None:
    if not text:
        return None
    try:
        return Decimal(text.split(",", 1)[0])
    except InvalidOperation:
        return None


def combined_filter(filter_text: str, base: str) -> str:
    """Return the base filter, ANDed with the user's own when there is one."""
    return f"({filter_text}) && ({base})" if filter_text else base


async def _rows(path: Path, expression: str, columns: list[str]) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"filter": expression, **{f"column{i}": c for i, c in enumerate(columns)}}
    rows: list[dict[str, Any]] = await engine().sessions(path).call("frames", params, filter_text=expression)
    return rows


async def http_requests(path: Path, filter_text: str = "") -> list[HttpRequest]:
    """Return every HTTP request the filter shows, in frame order, with its response if any."""
    user = await _checked(path, filter_text)
    expression = combined_filter(user or "", HTTP_FILTER)
    key = (path, "http-requests", expression)
    if (known := _recall(key)) is not None:
        return list(known)
    raw_rows = await _rows(path, expression, HTTP_COLUMNS)
    requests: list[tuple[int, list[str]]] = []
    responses: dict[int, list[str]] = {}
    by_request: dict[int, int] = {}
    for raw in raw_rows:
        number, cells = int(raw["num"]), raw["c"]
        if cells[0]:
            requests.append((number, cells))
        if cells[3] or cells[6]:
            responses[number] = cells
            request_frame = _number(cells[6])
            if request_frame is not None:
                by_request.setdefault(request_frame, number)
    result = []
    for number, cells in requests:
        response_frame = _number(cells[5])
        if response_frame is None:
            response_frame = by_request.get(number)
        response = responses.get(response_frame) if response_frame is not None else None
        result.append(
            HttpRequest(
                frame=number,
                method=cells[0],
                host=cells[1],
                uri=cells[2],
                status=_number(response[3]) if response else None,
                phrase=response[4] if response else "",
                response_frame=response_frame,
                time=_seconds(response[7]) if response else None,
            )
        )
    return list(_remember(key, result))


def _type_name(text: str) -> str:
    """Return "A" of "A (Host Address)", each of several types."""
    return ", ".join(part.split(" (", 1)[0] for part in text.split("),")) if text else ""


async def dns_queries(path: Path, filter_text: str = "") -> list[DnsQuery]:
    """Return every DNS query the filter shows, in frame order, with its response if any."""
    user = await _checked(path, filter_text)
    expression = combined_filter(user or "", DNS_FILTER)
    key = (path, "dns-queries", expression)
    if (known := _recall(key)) is not None:
        return list(known)
    raw_rows = await _rows(path, expression, DNS_COLUMNS)
    queries: list[tuple[int, list[str]]] = []
    responses: dict[int, list[str]] = {}
    by_query: dict[int, int] = {}
    for raw in raw_rows:
        number, cells = int(raw["num"]), raw["c"]
        if "query" in cells[0].lower():
            queries.append((number, cells))
        elif cells[0]:
            responses[number] = cells
            query_frame = _number(cells[4])
            if query_frame is not None:
                by_query.setdefault(query_frame, number)
    result = []
    for number, cells in queries:
        response_frame = _number(cells[3])
        if response_frame is None:
            response_frame = by_query.get(number)
        response = responses.get(response_frame) if response_frame is not None else None
        answers = ""
        if response:
            answers = ",".join(value for value in (response[7], response[8], response[9]) if value)
        result.append(
            DnsQuery(
                frame=number,
                name=cells[1],
                type=_type_name(cells[2]),
                response_frame=response_frame,
                rcode=response[6] if response else "",
                answers=answers,
                time=_seconds(response[5]) if response else None,
            )
        )
    return list(_remember(key, result))
