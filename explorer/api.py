"""The JSON API for scripts: the same engine calls as the pages, with an OpenAPI schema."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from ninja import Field, NinjaAPI, Query, Schema
from ninja.errors import HttpError
from ninja.responses import NinjaJSONEncoder
from pydantic import WithJsonSchema, field_validator

from . import annotations as notes
from . import captures, exports, marks, search
from .access import capture_for, user_of, visible_captures
from .availability import database_unavailable
from .engine import expert as engine_expert
from .engine import export as engine_export
from .engine import flows as engine_flows
from .engine import follow as engine_follow
from .engine import iograph as engine_iograph
from .engine import jsoncodec
from .engine import packets as engine_packets
from .engine import stats as engine_stats
from .engine import tables as engine_tables
from .engine.errors import EngineCrashed, EngineError
from .engine.follow import FollowResult
from .engine.sessions import SessionState, engine
from .models import Annotation, Capture, ExportJob
from .presence import messages as presence
from .uploads import staged_uploads

api = NinjaAPI(
    title="Capture Explorer API", version="1", urls_namespace="api", openapi_url="/schema/", docs_url="/docs"
)


class Error(Schema):
    error: str


def file_response(content_type: str = "application/octet-stream") -> dict[str, Any]:
    """Return the OpenAPI of a 200 answer that is a file to save, not JSON."""
    content = {content_type: {"schema": {"type": "string", "format": "binary"}}}
    disposition = {"schema": {"type": "string"}, "description": "attachment, with the file's name"}
    headers = {"Content-Disposition": disposition}
    return {"responses": {"200": {"description": "The file", "headers": headers, "content": content}}}


class CaptureOut(Schema):
    id: int
    url: str
    api_url: str
    download_url: str
    name: str
    size: int
    sha256: str
    uploaded_at: datetime
    format: str
    encapsulation: str
    link_types: list[str]
    time_precision: str
    packets: int
    data_size: int
    first_time: Decimal | None
    last_time: Decimal | None
    duration: Decimal | None
    data_byte_rate: float | None
    data_bit_rate: float | None
    average_packet_size: float | None
    average_packet_rate: float | None
    comments: list[str]
    tags: list[str]
    interfaces: list[dict[str, str]]
    warning: str
    status: str
    engine_sessions: int
    keylog_secrets: int | None


class UploadResult(Schema):
    captures: list[CaptureOut]
    errors: list[dict[str, str]]
    id: int | None
    url: str | None


class PacketOut(Schema):
    number: int
    time: str
    source: str
    destination: str
    protocol: str
    length: int
    info: str
    bg: str | None
    fg: str | None


class PacketPageOut(Schema):
    total: int
    displayed: int
    offset: int
    packets: list[PacketOut]


class TreeNodeOut(Schema):
    label: str
    filter: str | None
    start: int | None
    length: int | None
    source: int
    severity: str | None
    generated: bool
    kind: str | None
    children: list[TreeNodeOut]


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


class FilterCheckOut(Schema):
    valid: bool
    error: str | None


class FieldOut(Schema):
    field: str
    name: str


def status_of(state: SessionState) -> str:
    """Return "ready" when an engine session has the capture loaded, "loading" while one loads."""
    if state.loaded:
        return "ready"
    return "loading" if state.running else "stored"


async def captures_out(found: list[Capture], tags: list[list[str]] | None = None) -> list[dict[str, Any]]:
    """Describe captures, with the state of their engine sessions asked for all at once."""
    try:
        states = await engine().states([capture.path for capture in found])
    except EngineCrashed:
        # The engine service is away: the captures are still stored and listed.
        states = [SessionState(0, 0)] * len(found)
    return [
        capture_out(capture, state, tags[index] if tags else None)
        for index, (capture, state) in enumerate(zip(found, states, strict=True))
    ]


def capture_out(capture: Capture, state: SessionState, tags: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": capture.pk,
        "url": capture.get_absolute_url(),
        "api_url": f"/api/captures/{capture.pk}/",
        "download_url": f"/api/captures/{capture.pk}/download",
        "name": capture.name,
        "size": capture.size,
        "sha256": capture.sha256,
        "uploaded_at": capture.uploaded_at,
        "format": capture.file_type,
        "link_types": [t for t in capture.link_types.split(", ") if t],
        "comments": capture.comments,
        "tags": tags or [],
        "interfaces": capture.interfaces,
        "warning": capture.warning,
        "status": status_of(state),
        "engine_sessions": state.loaded,
        "keylog_secrets": captures.keylog_secrets(capture),
        **{k: v for k, v in capture.properties().items() if k != "format"},
    }


@api.exception_handler(EngineError)
def engine_refused(request: HttpRequest, exc: EngineError) -> Any:
    # The engine's message (a filter's syntax error, a stream that does not exist) is meant
    # for the person who sent the request.
    return api.create_response(request, {"error": exc.message}, status=400)


@api.exception_handler(EngineCrashed)
def engine_crashed(request: HttpRequest, exc: EngineCrashed) -> Any:
    # Not the request's fault: the engine died twice in a row (it was restarted once).
    return api.create_response(request, {"error": exc.message}, status=503)


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> Any:
    return api.create_response(request, {"error": str(exc)}, status=exc.status_code)


@api.exception_handler(DatabaseError)
def database_failed(request: HttpRequest, exc: DatabaseError) -> Any:
    return database_unavailable(request)


@api.exception_handler(PermissionDenied)
def not_allowed(request: HttpRequest, exc: PermissionDenied) -> Any:
    return api.create_response(request, {"error": str(exc) or "not allowed"}, status=403)


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> Any:
    return api.create_response(request, {"error": str(exc) or "not found"}, status=404)


@api.post(
    "/captures/",
    # 413 for a limit, 429 past the rate of uploads, 507 when the disk is full.
    response={201: UploadResult, 400: UploadResult, 413: Error, 429: Error, 507: Error},
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                            "keylog": {
                                "type": "string",
                                "format": "binary",
                                "description": "optional TLS key log (SSLKEYLOGFILE) for every file",
                            },
                        },
                        "required": ["file"],
                    }
                }
            }
        }
    },
    summary="Upload capture files (multipart field `file`, repeatable)",
)
async def upload(request: HttpRequest) -> tuple[int, dict[str, Any]]:
    user = await user_of(request)
    if not user.is_authenticated:
        raise HttpError(401, "sign in or send an API token (Authorization: Token <key>) to upload")
    uploads = staged_uploads(request)
    stored, rejected = await captures.store_uploads(uploads, user)
    errors = [{"name": name, "error": message} for name, message in rejected]
    if not uploads.files and not errors:
        errors.append({"name": "", "error": "no file in the request (multipart field `file`)"})
    body = {
        "captures": await captures_out(stored),
        "errors": errors,
        "id": stored[0].pk if stored else None,
        "url": stored[0].get_absolute_url() if stored else None,
    }
    # Refused only for limits (size, decompressed size, what the user may keep): 413.
    if not stored and any(e["error"] in captures.limit_messages() for e in errors):
        return 413, {"error": errors[0]["error"]}
    return (201 if stored else 400), body


class CaptureFilters(Schema):
    q: str = Field(
        "",
        description="Words that must all match, each in the name, a tag, a file comment, an annotation, "
        'or as a whole word among the addresses, DNS names and protocols; "quote" a phrase',
    )
    owner: str = Field("", description='"mine", or the username of the owner')
    tag: str = Field("", description="A tag the captures have")
    uploaded_after: str = Field(
        "", description="A date (that day included) or a date and time (UTC if unsaid)"
    )
    uploaded_before: str = Field("", description="A date (that day included) or a date and time (excluded)")


@api.get("/captures/", response={200: list[CaptureOut], 400: Error}, summary="List captures, or find some")
async def list_captures(request: HttpRequest, filters: Query[CaptureFilters]) -> list[dict[str, Any]]:
    user = await user_of(request)
    visible = visible_captures(user, getattr(request, "session", None))
    try:
        found = search.matching(visible, search.Filters(**filters.dict()), user)
    except search.SearchError as error:
        raise HttpError(400, str(error)) from error
    listed = [capture async for capture in found.prefetch_related("tags")]
    return await captures_out(listed, [[t.name for t in c.tags.all()] for c in listed])


@api.get("/captures/{capture_id}/", response={200: CaptureOut, 404: Error}, summary="Capture properties")
async def capture_detail(request: HttpRequest, capture_id: int) -> dict[str, Any]:
    capture = await capture_for(request, capture_id)
    (described,) = await captures_out([capture], [await search.tag_names(capture)])
    return described


@api.delete("/captures/{capture_id}/", response={204: None, 404: Error}, summary="Delete a capture")
async def delete_capture(request: HttpRequest, capture_id: int) -> tuple[int, None]:
    await captures.delete(await capture_for(request, capture_id, "manage"))
    return 204, None


MULTIPART_FILE = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        }
    }
}


class KeylogOut(Schema):
    secrets: int


@api.post(
    "/captures/{capture_id}/keylog",
    response={200: KeylogOut, 400: Error, 404: Error},
    openapi_extra=MULTIPART_FILE,
    summary="Attach a TLS key log (SSLKEYLOGFILE format, multipart field `file`) to decrypt TLS and QUIC",
)
async def attach_keylog(request: HttpRequest, capture_id: int) -> dict[str, int]:
    capture = await capture_for(request, capture_id, "write")
    uploads = staged_uploads(request)
    if uploads.errors or not uploads.files:
        raise HttpError(400, uploads.errors[0][1] if uploads.errors else "no file in the request")
    data = await sync_to_async(captures.staged_keylog_bytes)(uploads.files[0])
    return {"secrets": await captures.attach_keylog(capture, data)}


@api.delete(
    "/captures/{capture_id}/keylog", response={204: None, 404: Error}, summary="Remove the TLS key log"
)
async def detach_keylog(request: HttpRequest, capture_id: int) -> tuple[int, None]:
    await captures.detach_keylog(await capture_for(request, capture_id, "write"))
    return 204, None


@api.get(
    "/captures/{capture_id}/download",
    response={404: Error},
    openapi_extra=file_response(),
    summary="The original file",
)
async def download(request: HttpRequest, capture_id: int) -> StreamingHttpResponse:
    capture = await capture_for(request, capture_id)
    # Django's ASGI handler reads a synchronous file iterator into memory whole before
    # sending it; captures are large, so the file is streamed through an async iterator.
    response = StreamingHttpResponse(read_file(capture.path), content_type="application/octet-stream")
    response["Content-Length"] = str(capture.size)
    response["Content-Disposition"] = content_disposition_header(True, capture.name) or "attachment"
    return response


async def read_file(path: Path, block: int = 1024 * 1024) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with open(path, "rb") as handle:
        while chunk := await loop.run_in_executor(None, handle.read, block):
            yield chunk


@api.get(
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


def as_built(answer: dict[str, Any]) -> HttpResponse:
    """Answer with JSON built from the engine's dataclasses, which have the schema's fields and types.

    The packet list and details are the requests every viewer makes all the time: validating
    their rows or tree against the schema took a quarter of the server's time for them, and
    copying them into dicts (dataclasses.asdict) another twentieth. The codec encodes the
    dataclasses as they are.
    """
    return HttpResponse(jsoncodec.dumps(answer), content_type="application/json")


@api.get(
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


@api.get("/filters/check", response=FilterCheckOut, summary="Check a display filter's syntax")
async def check_filter(request: HttpRequest, filter: str = "") -> dict[str, Any]:  # noqa: A002
    error = await engine_packets.check_filter(filter)
    return {"valid": error is None, "error": error}


@api.get("/fields/complete", response=list[FieldOut], summary="Field names for display filter completion")
async def complete_field(request: HttpRequest, prefix: str = "") -> list[dict[str, str]]:
    return await engine_packets.complete_field(prefix)


class PeerOut(Schema):
    host: str | None
    port: int | None
    bytes: int
    packets: int


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


@api.get(
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


@api.get(
    "/captures/{capture_id}/follow/raw",
    response={400: Error, 404: Error},
    openapi_extra=file_response(),
    summary="A followed stream's bytes (one side or both) as a file",
)
async def follow_raw(request: HttpRequest, capture_id: int, query: Query[RawFollowQuery]) -> HttpResponse:
    capture, result = await followed(request, capture_id, query)
    response = HttpResponse(result.data(query.side), content_type="application/octet-stream")
    name = f"{Path(capture.name).stem}-{result.kind.lower()}-stream-{result.stream}-{query.side}.bin"
    response["Content-Disposition"] = content_disposition_header(True, name) or "attachment"
    return response


class StatsQuery(Schema):
    kind: str = "TCP"
    filter: str = ""


class ConversationOut(Schema):
    address_a: str
    port_a: str
    address_b: str
    port_b: str
    packets_ab: int
    bytes_ab: int
    packets_ba: int
    bytes_ba: int
    packets: int
    bytes: int
    rel_start: float
    duration: float
    filter: str


class EndpointOut(Schema):
    address: str
    port: str
    packets: int
    bytes: int
    tx_packets: int
    tx_bytes: int
    rx_packets: int
    rx_bytes: int
    filter: str


class ProtocolNodeOut(Schema):
    protocol: str
    packets: int
    bytes: int
    percent_packets: float
    percent_bytes: float
    children: list[ProtocolNodeOut]


@api.get(
    "/captures/{capture_id}/conversations",
    response={200: list[ConversationOut], 400: Error, 404: Error},
    summary="Conversations of one kind (Ethernet, IPv4, IPv6, TCP, UDP), optionally limited to a filter",
)
async def conversations(request: HttpRequest, capture_id: int, query: Query[StatsQuery]) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    return await many_rows(await engine_stats.conversations(capture.path, query.kind, query.filter))


@api.get(
    "/captures/{capture_id}/endpoints",
    response={200: list[EndpointOut], 400: Error, 404: Error},
    summary="Endpoints of one kind (Ethernet, IPv4, IPv6, TCP, UDP), optionally limited to a filter",
)
async def endpoints(request: HttpRequest, capture_id: int, query: Query[StatsQuery]) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    return await many_rows(await engine_stats.endpoints(capture.path, query.kind, query.filter))


async def many_rows(rows: list[Any]) -> HttpResponse:
    """Answer with a long list of flat dataclass rows, serialized off the event loop.

    A million-packet capture has ~180,000 TCP conversations: validating each row against its
    schema and encoding it in the event loop took longer than sharkd's tap itself and stalled
    every other request meanwhile. The rows already have the schema's fields and types.
    """
    body = await asyncio.to_thread(_dump_rows, rows)
    return HttpResponse(body, content_type="application/json")


def _dump_rows(rows: list[Any]) -> bytes:
    return json.dumps([vars(row) for row in rows], default=_json_number).encode()


def _json_number(value: Any) -> float:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


@api.get(
    "/captures/{capture_id}/protocol-hierarchy",
    response={200: list[ProtocolNodeOut], 400: Error, 404: Error},
    summary="Protocol hierarchy: frames, bytes and shares per protocol path, optionally limited to a filter",
)
async def protocol_hierarchy(request: HttpRequest, capture_id: int, filter: str = "") -> list[dict[str, Any]]:  # noqa: A002
    capture = await capture_for(request, capture_id)
    nodes = await engine_stats.protocol_hierarchy(capture.path, filter)
    return [asdict(node) for node in nodes]


class FlowQuery(Schema):
    filter: str = ""
    stream: int | None = None
    offset: int = 0
    limit: int = engine_flows.MAX_ARROWS


class FlowNodeOut(Schema):
    id: str
    label: str


class FlowArrowOut(Schema):
    frame: int
    time: str
    source: str
    destination: str
    flags: str
    seq: int | None
    ack: int | None
    len: int | None
    protocol: str
    summary: str


class FlowOut(Schema):
    filter: str
    nodes: list[FlowNodeOut]
    arrows: list[FlowArrowOut]
    total: int
    offset: int


@api.get(
    "/captures/{capture_id}/flow",
    response={200: FlowOut, 400: Error, 404: Error},
    summary="Flow graph: one arrow per packet between host:port nodes (a filter, a TCP stream, or all TCP)",
)
async def flow_graph(request: HttpRequest, capture_id: int, query: Query[FlowQuery]) -> dict[str, Any]:
    capture = await capture_for(request, capture_id)
    expression = engine_flows.flow_filter(query.filter, query.stream)
    flow = await engine_flows.flow(
        capture.path, expression, query.offset, query.limit, capture.precision_digits
    )
    return asdict(flow)


class ExpertItemOut(Schema):
    frame: int
    severity: str
    group: str
    protocol: str
    message: str


class ExpertSummaryOut(Schema):
    severity: str
    group: str
    protocol: str
    message: str
    count: int


class ExpertOut(Schema):
    items: list[ExpertItemOut]
    summary: list[ExpertSummaryOut]


@api.get(
    "/captures/{capture_id}/expert",
    response={200: ExpertOut, 400: Error, 404: Error},
    summary="Expert information: items in frame order, and counts per severity, group, protocol and message",
)
async def expert_info(request: HttpRequest, capture_id: int, filter: str = "") -> dict[str, Any]:  # noqa: A002
    capture = await capture_for(request, capture_id)
    items = await engine_expert.expert_items(capture.path, filter)
    summary = [
        {
            "severity": g.severity,
            "group": g.group,
            "protocol": g.protocol,
            "message": g.message,
            "count": g.count,
        }
        for g in engine_expert.summarize(items)
    ]
    return {"items": [asdict(item) for item in items], "summary": summary}


# Seconds as a number; the schema says so (a decimal is otherwise documented as any string too).
Seconds = Annotated[Decimal | None, WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "null"}]})]


class IOGraphQuery(Schema):
    interval: int = Field(1000, description="Interval in ms: 1, 10, 100, 1000, 10000, 60000 or 600000")
    graph: list[str] = Field(
        [], description="Unit of each series, packets or bytes; repeat once per series (at most 4)"
    )
    filter: list[str] = Field(
        [],
        description="Display filter of each series, paired with `graph` by position; empty for every packet",
    )
    start: Seconds = Field(
        None, description="Seconds from the first packet: answer from the interval holding this time"
    )
    end: Seconds = Field(
        None,
        description="Seconds from the first packet: answer up to the interval holding this time; "
        f"a range (or, without one, a capture) of more than {engine_iograph.MAX_INTERVALS:,} "
        "intervals is refused",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def blank_is_none(cls, value: Any) -> Any:
        """Read an empty bound (a form's empty field) as no bound."""
        return None if isinstance(value, str) and not value.strip() else value


class IOSeriesOut(Schema):
    filter: str
    unit: str
    values: list[int] = Field(description="One value per interval, from interval `first` on")


class IOGraphOut(Schema):
    interval_ms: int
    first: int = Field(description="The first interval answered; interval i starts at i × interval_ms")
    total: int = Field(description="Intervals in the whole capture at this interval")
    previous_active: int | None = Field(
        description="The last interval before the answer that may hold a packet of a series"
    )
    next_active: int | None = Field(
        description="The first interval after the answer that may hold a packet of a series"
    )
    series: list[IOSeriesOut]


@api.get(
    "/captures/{capture_id}/iograph",
    response={200: IOGraphOut, 400: Error, 404: Error},
    summary="I/O graph: packets or bytes per interval from the first packet, for up to four filters",
)
async def io_graph(request: HttpRequest, capture_id: int, query: Query[IOGraphQuery]) -> dict[str, Any]:
    capture = await capture_for(request, capture_id)
    series = engine_iograph.pair_series(query.graph, query.filter)
    graph = await engine_iograph.io_graph(capture.path, query.interval, series, query.start, query.end)
    return {
        "interval_ms": graph.interval_ms,
        "first": graph.first,
        "total": graph.total,
        "previous_active": graph.previous_active,
        "next_active": graph.next_active,
        "series": [asdict(s) for s in graph.series],
    }


class ExportQuery(Schema):
    filter: str = ""
    # Strings, so that a form's empty fields mean "no bound" rather than a validation error.
    first: str = ""
    last: str = ""
    # The export page's radio buttons: "all" ignores first and last, "marked" keeps only
    # the marked frames among the displayed ones.
    range: str = ""
    annotations: bool = Field(
        False, description="Add the annotations as pcapng comments: the frames', and the capture's"
    )


def frame_bound(value: str, name: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise HttpError(400, f"{name} must be a frame number")
    return int(value)


def file_stem(name: str) -> str:
    """Return a capture's name without its extension (both of .pcap.gz)."""
    stem = Path(name).stem
    return (Path(stem).stem if name.endswith(".gz") else stem) or "capture"


@api.get(
    "/captures/{capture_id}/export",
    response={400: Error, 404: Error, 503: Error},
    openapi_extra=file_response(),
    summary="Export specified packets: the displayed frames (optionally first..last) as pcapng",
    description="Queues the export as `POST .../exports` does and answers with its file once it "
    "is done. If it takes longer than the engine's request timeout, the answer is a 503 naming "
    "the export to ask for.",
)
async def export_packets(
    request: HttpRequest, capture_id: int, query: Query[ExportQuery]
) -> StreamingHttpResponse:
    capture = await capture_for(request, capture_id)
    everything = query.range in ("all", "marked")
    first = None if everything else frame_bound(query.first, "first")
    last = None if everything else frame_bound(query.last, "last")
    user = await user_of(request)
    job = await exports.queue(
        capture, user, query.filter, first, last, query.range == "marked", query.annotations
    )
    job = await exports.finished(job, settings.ENGINE_REQUEST_TIMEOUT)
    if job.state == ExportJob.State.FAILED:
        raise EngineError(job.error)
    path = exports.file_of(job)
    if path is None:
        raise HttpError(503, f"the export is still running: ask for {export_url(job)}")
    # Asked for and answered in one request: nobody fetches this file again.
    return export_file(capture, path, read_and_remove(path))


async def read_and_remove(path: Path) -> AsyncIterator[bytes]:
    try:
        async for chunk in read_file(path):
            yield chunk
    finally:
        path.unlink(missing_ok=True)


def export_file(
    capture: Capture, path: Path, content: AsyncIterator[bytes] | None = None
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(content or read_file(path), content_type="application/octet-stream")
    response["Content-Length"] = str(path.stat().st_size)
    name = f"{file_stem(capture.name)}-export.pcapng"
    response["Content-Disposition"] = content_disposition_header(True, name) or "attachment"
    return response


class ExportRequest(Schema):
    filter: str = Field("", description="Display filter: the frames it displays (all without one)")
    first: int | None = Field(
        None, ge=1, le=engine_export.LAST_FRAME_NUMBER, description="First frame number of a range"
    )
    last: int | None = Field(
        None, ge=1, le=engine_export.LAST_FRAME_NUMBER, description="Last frame number of a range"
    )
    frames: Literal["displayed", "marked"] = Field(
        "displayed", description='"marked": only the marked frames among the displayed ones'
    )
    annotations: bool = Field(
        False, description="Add the annotations as pcapng comments: the frames', and the capture's"
    )


class ExportOut(Schema):
    id: int
    state: Literal["queued", "running", "done", "failed"]
    error: str
    size: int
    created_at: datetime
    finished_at: datetime | None
    url: str
    file_url: str


def export_url(job: ExportJob) -> str:
    return f"/api/captures/{job.capture_id}/exports/{job.pk}"


def export_out(job: ExportJob) -> dict[str, Any]:
    return {
        "id": job.pk,
        "state": job.state,
        "error": job.error,
        "size": job.size,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "url": export_url(job),
        "file_url": export_url(job) + "/file",
    }


async def export_job(request: HttpRequest, capture_id: int, export_id: int) -> tuple[Capture, ExportJob]:
    """Return a capture the requester may read and one of its exports, as it is now."""
    capture = await capture_for(request, capture_id)
    return capture, await exports.current_of(capture, export_id)


@api.post(
    "/captures/{capture_id}/exports",
    response={202: ExportOut, 400: Error, 404: Error},
    summary="Queue an export of specified packets as pcapng",
    description="The export runs in a worker (or in the background of the server asked); ask for "
    "its `url` until its state is done, then fetch its `file_url`. A restarted worker or server "
    "runs it again; the file is kept for an hour.",
)
async def create_export(
    request: HttpRequest, capture_id: int, body: ExportRequest
) -> tuple[int, dict[str, Any]]:
    capture = await capture_for(request, capture_id)
    user = await user_of(request)
    marked_only = body.frames == "marked"
    job = await exports.queue(
        capture, user, body.filter, body.first, body.last, marked_only, body.annotations
    )
    return 202, export_out(job)


@api.get(
    "/captures/{capture_id}/exports/{export_id}",
    response={200: ExportOut, 404: Error},
    summary="An export's state",
)
async def export_state(request: HttpRequest, capture_id: int, export_id: int) -> dict[str, Any]:
    _, job = await export_job(request, capture_id, export_id)
    return export_out(job)


@api.get(
    "/captures/{capture_id}/exports/{export_id}/file",
    response={400: Error, 404: Error, 409: Error, 410: Error},
    openapi_extra=file_response(),
    summary="An export's pcapng file, once it is done",
)
async def export_file_of(request: HttpRequest, capture_id: int, export_id: int) -> Any:
    capture, job = await export_job(request, capture_id, export_id)
    if job.state == ExportJob.State.FAILED:
        return api.create_response(request, {"error": job.error}, status=400)
    if job.state != ExportJob.State.DONE:
        return api.create_response(
            request, {"error": f"the export is {job.state}: try again shortly"}, status=409
        )
    path = exports.file_of(job)
    if path is None:
        return api.create_response(
            request, {"error": "the export's file was removed after an hour: export again"}, status=410
        )
    return export_file(capture, path)


class MarksOut(Schema):
    frames: list[int]


@api.get("/captures/{capture_id}/marks", response={200: MarksOut, 404: Error}, summary="Marked frames")
async def marked_frames(request: HttpRequest, capture_id: int) -> dict[str, Any]:
    return {"frames": await marks.marked(await capture_for(request, capture_id))}


@api.put(
    "/captures/{capture_id}/marks/{number}",
    response={204: None, 400: Error, 404: Error},
    summary="Mark a frame",
)
async def mark_frame(request: HttpRequest, capture_id: int, number: int) -> tuple[int, None]:
    capture = await capture_for(request, capture_id, "write")
    await marks.mark(capture, number)
    await presence.marks_changed(capture)
    return 204, None


@api.delete(
    "/captures/{capture_id}/marks/{number}",
    response={204: None, 400: Error, 404: Error},
    summary="Unmark a frame",
)
async def unmark_frame(request: HttpRequest, capture_id: int, number: int) -> tuple[int, None]:
    capture = await capture_for(request, capture_id, "write")
    await marks.unmark(capture, number)
    await presence.marks_changed(capture)
    return 204, None


@api.delete("/captures/{capture_id}/marks", response={204: None, 404: Error}, summary="Unmark every frame")
async def unmark_all(request: HttpRequest, capture_id: int) -> tuple[int, None]:
    capture = await capture_for(request, capture_id, "write")
    await marks.unmark_all(capture)
    await presence.marks_changed(capture)
    return 204, None


class HttpObjectOut(Schema):
    index: int
    packet: int
    hostname: str
    content_type: str
    filename: str
    size: int
    download_url: str


@api.get(
    "/captures/{capture_id}/http-objects",
    response={200: list[HttpObjectOut], 400: Error, 404: Error},
    summary="HTTP objects (File → Export Objects → HTTP)",
)
async def http_objects(request: HttpRequest, capture_id: int) -> list[dict[str, Any]]:
    capture = await capture_for(request, capture_id)
    objects = await engine_export.http_objects(capture.path)
    return [
        {
            **{k: v for k, v in asdict(item).items() if k != "token"},
            "download_url": f"/api/captures/{capture.pk}/http-objects/{item.index}",
        }
        for item in objects
    ]


@api.get(
    "/captures/{capture_id}/http-objects.zip",
    response={400: Error, 404: Error},
    openapi_extra=file_response("application/zip"),
    summary="Every HTTP object in a zip (refused when they total 64 MB or more)",
)
async def http_objects_zip(request: HttpRequest, capture_id: int) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    data = await engine_export.http_objects_zip(capture.path)
    response = HttpResponse(data, content_type="application/zip")
    name = f"{file_stem(capture.name)}-http-objects.zip"
    response["Content-Disposition"] = content_disposition_header(True, name) or "attachment"
    return response


@api.get(
    "/captures/{capture_id}/http-objects/{index}",
    response={400: Error, 404: Error},
    openapi_extra=file_response(),
    summary="One HTTP object's bytes",
)
async def http_object(request: HttpRequest, capture_id: int, index: int) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    item, data = await engine_export.http_object(capture.path, index)
    response = HttpResponse(data, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, item.safe_name) or "attachment"
    return response


class HttpRequestOut(Schema):
    frame: int
    method: str
    host: str
    uri: str
    status: int | None
    phrase: str
    response_frame: int | None
    time: float | None = Field(description="Seconds from the request to its response (http.time)")


@api.get(
    "/captures/{capture_id}/http-requests",
    response={200: list[HttpRequestOut], 400: Error, 404: Error},
    summary="HTTP requests, one per row with its response, optionally limited to a display filter",
)
async def http_requests(request: HttpRequest, capture_id: int, filter: str = "") -> list[dict[str, Any]]:  # noqa: A002
    capture = await capture_for(request, capture_id)
    return [asdict(row) for row in await engine_tables.http_requests(capture.path, filter)]


class DnsQueryOut(Schema):
    frame: int
    name: str
    type: str
    response_frame: int | None
    rcode: str
    answers: str
    time: float | None = Field(description="Seconds from the query to its response (dns.time)")


@api.get(
    "/captures/{capture_id}/dns-queries",
    response={200: list[DnsQueryOut], 400: Error, 404: Error},
    summary="DNS queries, one per row with its response, optionally limited to a display filter",
)
async def dns_queries(request: HttpRequest, capture_id: int, filter: str = "") -> list[dict[str, Any]]:  # noqa: A002
    capture = await capture_for(request, capture_id)
    return [asdict(row) for row in await engine_tables.dns_queries(capture.path, filter)]


class TagsOut(Schema):
    tags: list[str]


@api.get("/captures/{capture_id}/tags", response={200: TagsOut, 404: Error}, summary="A capture's tags")
async def capture_tags(request: HttpRequest, capture_id: int) -> dict[str, Any]:
    return {"tags": await search.tag_names(await capture_for(request, capture_id))}


@api.put(
    "/captures/{capture_id}/tags/{name}",
    response={200: TagsOut, 400: Error, 403: Error, 404: Error},
    summary="Tag a capture (anyone who may annotate it)",
    description=f"A tag is kept in lowercase: up to {search.TAG_MAX_LENGTH} {search.TAG_RULE}.",
)
async def add_tag(request: HttpRequest, capture_id: int, name: str) -> dict[str, Any]:
    capture = await capture_for(request, capture_id, "write")
    try:
        return {"tags": await search.add_tag(capture, name)}
    except search.BadTag as error:
        raise HttpError(400, str(error)) from error


@api.delete(
    "/captures/{capture_id}/tags/{name}",
    response={200: TagsOut, 400: Error, 403: Error, 404: Error},
    summary="Take a tag off a capture",
)
async def remove_tag(request: HttpRequest, capture_id: int, name: str) -> dict[str, Any]:
    capture = await capture_for(request, capture_id, "write")
    try:
        return {"tags": await search.remove_tag(capture, name)}
    except search.BadTag as error:
        raise HttpError(400, str(error)) from error


class SummaryOut(Schema):
    summarized: bool = Field(description="False until the background summary after the upload has run")
    protocols: list[str]
    hosts: list[str] = Field(
        description="Addresses, busiest first, then names the capture's DNS answers gave"
    )


@api.get(
    "/captures/{capture_id}/summary",
    response={200: SummaryOut, 404: Error},
    summary="The protocols and hosts the search looks through",
)
async def capture_summary(request: HttpRequest, capture_id: int) -> dict[str, Any]:
    capture = await capture_for(request, capture_id)
    return {
        "summarized": search.summarized(capture),
        "protocols": search.words_of(capture.protocols),
        "hosts": search.words_of(capture.hosts),
    }


# ---- Annotations ---------------------------------------------------------------------------


class AnnotationOut(Schema):
    id: int
    frame: int | None = Field(description="The annotated frame, or null for a comment on the whole capture")
    text: str
    author: str | None = Field(description="The author's username; null for comments read from the file")
    from_file: bool = Field(description="A comment the uploaded pcapng file holds; nobody changes those")
    created_at: datetime
    updated_at: datetime


class AnnotationIn(Schema):
    frame: int | None = Field(None, description="The frame to annotate; null or absent for the capture")
    text: str = Field(description=f"Up to {notes.MAX_LENGTH:,} characters")


class AnnotationChange(Schema):
    text: str = Field(description=f"Up to {notes.MAX_LENGTH:,} characters")


@api.exception_handler(notes.AnnotationError)
def annotation_refused(request: HttpRequest, exc: notes.AnnotationError) -> Any:
    return api.create_response(request, {"error": exc.message}, status=400)


def annotation_out(annotation: Annotation) -> dict[str, Any]:
    """Return an annotation as the API and the live events show it (JSON types only)."""
    # Encoded as the API's responses are (times to the millisecond), so both read the same.
    data = AnnotationOut(
        id=annotation.pk,
        frame=annotation.frame,
        text=annotation.text,
        author=annotation.author.get_username() if annotation.author is not None else None,
        from_file=annotation.from_file,
        created_at=annotation.created_at,
        updated_at=annotation.updated_at,
    ).model_dump()
    return dict(json.loads(json.dumps(data, cls=NinjaJSONEncoder)))


@api.get(
    "/captures/{capture_id}/annotations",
    response={200: list[AnnotationOut], 404: Error},
    summary="Annotations: the capture's first, then by frame; comments of the file included",
)
async def list_annotations(request: HttpRequest, capture_id: int) -> list[dict[str, Any]]:
    capture = await capture_for(request, capture_id)
    return [annotation_out(annotation) for annotation in await notes.listing(capture)]


@api.post(
    "/captures/{capture_id}/annotations",
    response={201: AnnotationOut, 400: Error, 403: Error, 404: Error},
    summary="Annotate a frame, or the whole capture (anyone who may write to it)",
)
async def add_annotation(
    request: HttpRequest, capture_id: int, body: AnnotationIn
) -> tuple[int, dict[str, Any]]:
    capture = await capture_for(request, capture_id, "write")
    annotation = await notes.add(capture, await user_of(request), body.frame, body.text)
    data = annotation_out(annotation)
    await presence.annotation_created(capture.pk, data)
    return 201, data


@api.patch(
    "/captures/{capture_id}/annotations/{annotation_id}",
    response={200: AnnotationOut, 400: Error, 403: Error, 404: Error},
    summary="Change an annotation's text (its author only)",
)
async def edit_annotation(
    request: HttpRequest, capture_id: int, annotation_id: int, body: AnnotationChange
) -> dict[str, Any]:
    capture = await capture_for(request, capture_id, "write")
    annotation = await notes.edit(capture, await user_of(request), annotation_id, body.text)
    data = annotation_out(annotation)
    await presence.annotation_updated(capture.pk, data)
    return data


@api.delete(
    "/captures/{capture_id}/annotations/{annotation_id}",
    response={204: None, 403: Error, 404: Error},
    summary="Delete an annotation (its author only)",
)
async def delete_annotation(request: HttpRequest, capture_id: int, annotation_id: int) -> tuple[int, None]:
    capture = await capture_for(request, capture_id, "write")
    annotation = await notes.delete(capture, await user_of(request), annotation_id)
    await presence.annotation_deleted(capture.pk, annotation_out(annotation))
    return 204, None
