"""Export Specified Packets as pcapng: in one request, or as a job asked about until it is done."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from .. import exports
from ..access import capture_for, user_of
from ..engine import export as engine_export
from ..models import Capture, ExportJob
from .responses import file_download, read_and_remove
from .schemas import Error, file_response

router = Router()


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


def export_file(capture: Capture, path: Path, removed: bool = False) -> StreamingHttpResponse:
    """Answer with an export's file; removed once sent if nobody fetches it again."""
    content = read_and_remove(path) if removed else None
    return file_download(path, exports.file_name(capture, "export.pcapng"), content)


@router.get(
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
    first, last, marked_only = exports.chosen_frames(query.range, query.first, query.last)
    user = await user_of(request)
    job = await exports.queue(capture, user, query.filter, first, last, marked_only, query.annotations)
    path = await exports.finished_file(job, settings.ENGINE_REQUEST_TIMEOUT)
    if path is None:
        raise HttpError(503, f"the export is still running: ask for {export_url(job)}")
    # Asked for and answered in one request: nobody fetches this file again.
    return export_file(capture, path, removed=True)


@router.post(
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


@router.get(
    "/captures/{capture_id}/exports/{export_id}",
    response={200: ExportOut, 404: Error},
    summary="An export's state",
)
async def export_state(request: HttpRequest, capture_id: int, export_id: int) -> dict[str, Any]:
    _, job = await export_job(request, capture_id, export_id)
    return export_out(job)


@router.get(
    "/captures/{capture_id}/exports/{export_id}/file",
    response={400: Error, 404: Error, 409: Error, 410: Error},
    openapi_extra=file_response(),
    summary="An export's pcapng file, once it is done",
)
async def export_file_of(request: HttpRequest, capture_id: int, export_id: int) -> StreamingHttpResponse:
    capture, job = await export_job(request, capture_id, export_id)
    if job.state == ExportJob.State.FAILED:
        raise HttpError(400, job.error)
    if job.state != ExportJob.State.DONE:
        raise HttpError(409, f"the export is {job.state}: try again shortly")
    path = exports.file_of(job)
    if path is None:
        raise HttpError(410, "the export's file was removed after an hour: export again")
    return export_file(capture, path)
