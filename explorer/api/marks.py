"""Marked frames: listed, marked and unmarked; every viewer of the capture sees the change."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from .. import marks
from ..access import capture_for
from ..presence import messages as presence
from .schemas import Error

router = Router()


class MarksOut(Schema):
    frames: list[int]


@router.get("/captures/{capture_id}/marks", response={200: MarksOut, 404: Error}, summary="Marked frames")
async def marked_frames(request: HttpRequest, capture_id: int) -> dict[str, Any]:
    return {"frames": await marks.marked(await capture_for(request, capture_id))}


@router.delete("/captures/{capture_id}/marks", response={204: None, 404: Error}, summary="Unmark every frame")
async def unmark_all(request: HttpRequest, capture_id: int) -> tuple[int, None]:
    capture = await capture_for(request, capture_id, "write")
    await marks.unmark_all(capture)
    await presence.marks_changed(capture)
    return 204, None


@router.put(
    "/captures/{capture_id}/marks/{number}",
    response={204: None, 400: Error, 404: Error},
    summary="Mark a frame",
)
async def mark_frame(request: HttpRequest, capture_id: int, number: int) -> tuple[int, None]:
    capture = await capture_for(request, capture_id, "write")
    await marks.mark(capture, number)
    await presence.marks_changed(capture)
    return 204, None


@router.delete(
    "/captures/{capture_id}/marks/{number}",
    response={204: None, 400: Error, 404: Error},
    summary="Unmark a frame",
)
async def unmark_frame(request: HttpRequest, capture_id: int, number: int) -> tuple[int, None]:
    capture = await capture_for(request, capture_id, "write")
    await marks.unmark(capture, number)
    await presence.marks_changed(capture)
    return 204, None
