"""Captures: upload, list and search, properties, the original file, deletion."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from .. import captures, search
from ..access import capture_for, user_of, visible_captures
from ..engine.errors import EngineCrashed
from ..engine.sessions import SessionState, engine
from ..models import Capture
from ..uploads import staged_uploads
from .responses import file_download
from .schemas import Error, file_response

router = Router()


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


class SummaryOut(Schema):
    summarized: bool = Field(description="False until the background summary after the upload has run")
    protocols: list[str]
    hosts: list[str] = Field(
        description="Addresses, busiest first, then names the capture's DNS answers gave"
    )


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


@router.post(
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


@router.get("/captures/", response={200: list[CaptureOut], 400: Error}, summary="List captures, or find some")
async def list_captures(request: HttpRequest, filters: Query[CaptureFilters]) -> list[dict[str, Any]]:
    user = await user_of(request)
    visible = visible_captures(user, getattr(request, "session", None))
    try:
        found = search.matching(visible, search.Filters(**filters.dict()), user)
    except search.SearchError as error:
        raise HttpError(400, str(error)) from error
    listed = [capture async for capture in found.prefetch_related("tags")]
    return await captures_out(listed, [[t.name for t in c.tags.all()] for c in listed])


@router.get("/captures/{capture_id}/", response={200: CaptureOut, 404: Error}, summary="Capture properties")
async def capture_detail(request: HttpRequest, capture_id: int) -> dict[str, Any]:
    capture = await capture_for(request, capture_id)
    (described,) = await captures_out([capture], [await search.tag_names(capture)])
    return described


@router.delete("/captures/{capture_id}/", response={204: None, 404: Error}, summary="Delete a capture")
async def delete_capture(request: HttpRequest, capture_id: int) -> tuple[int, None]:
    await captures.delete(await capture_for(request, capture_id, "manage"))
    return 204, None


@router.get(
    "/captures/{capture_id}/download",
    response={404: Error},
    openapi_extra=file_response(),
    summary="The original file",
)
async def download(request: HttpRequest, capture_id: int) -> StreamingHttpResponse:
    capture = await capture_for(request, capture_id)
    return file_download(capture.path, capture.name, size=capture.size)


@router.get(
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
