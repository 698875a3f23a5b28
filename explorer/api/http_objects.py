"""File → Export Objects → HTTP: the objects listed, fetched one by one or all in a zip."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema

from .. import exports
from ..access import capture_for
from ..engine import export as engine_export
from .responses import attachment
from .schemas import Error, file_response

router = Router()


class HttpObjectOut(Schema):
    index: int
    packet: int
    hostname: str
    content_type: str
    filename: str
    size: int
    download_url: str


@router.get(
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


@router.get(
    "/captures/{capture_id}/http-objects.zip",
    response={400: Error, 404: Error},
    openapi_extra=file_response("application/zip"),
    summary="Every HTTP object in a zip (refused when they total 64 MB or more)",
)
async def http_objects_zip(request: HttpRequest, capture_id: int) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    data = await engine_export.http_objects_zip(capture.path)
    response = HttpResponse(data, content_type="application/zip")
    attachment(response, exports.file_name(capture, "http-objects.zip"))
    return response


@router.get(
    "/captures/{capture_id}/http-objects/{index}",
    response={400: Error, 404: Error},
    openapi_extra=file_response(),
    summary="One HTTP object's bytes",
)
async def http_object(request: HttpRequest, capture_id: int, index: int) -> HttpResponse:
    capture = await capture_for(request, capture_id)
    item, data = await engine_export.http_object(capture.path, index)
    response = HttpResponse(data, content_type="application/octet-stream")
    attachment(response, item.safe_name)
    return response
