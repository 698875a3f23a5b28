"""Annotations on frames and on the whole capture; every viewer of the capture sees them change."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja.responses import NinjaJSONEncoder

from .. import annotations as notes
from ..access import capture_for, user_of
from ..models import Annotation
from ..presence import messages as presence
from .schemas import Error

router = Router()


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


@router.get(
    "/captures/{capture_id}/annotations",
    response={200: list[AnnotationOut], 404: Error},
    summary="Annotations: the capture's first, then by frame; comments of the file included",
)
async def list_annotations(request: HttpRequest, capture_id: int) -> list[dict[str, Any]]:
    capture = await capture_for(request, capture_id)
    return [annotation_out(annotation) for annotation in await notes.listing(capture)]


@router.post(
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


@router.patch(
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


@router.delete(
    "/captures/{capture_id}/annotations/{annotation_id}",
    response={204: None, 403: Error, 404: Error},
    summary="Delete an annotation (its author only)",
)
async def delete_annotation(request: HttpRequest, capture_id: int, annotation_id: int) -> tuple[int, None]:
    capture = await capture_for(request, capture_id, "write")
    annotation = await notes.delete(capture, await user_of(request), annotation_id)
    await presence.annotation_deleted(capture.pk, annotation_out(annotation))
    return 204, None
