"""A capture's tags, which the capture list's search finds it by."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError

from .. import search
from ..access import capture_for
from .schemas import Error

router = Router()


class TagsOut(Schema):
    tags: list[str]


@router.get("/captures/{capture_id}/tags", response={200: TagsOut, 404: Error}, summary="A capture's tags")
async def capture_tags(request: HttpRequest, capture_id: int) -> dict[str, Any]:
    return {"tags": await search.tag_names(await capture_for(request, capture_id))}


@router.put(
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


@router.delete(
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
