"""Export Specified Packets and Export Objects → HTTP: the pages; the files come from the API."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from .. import annotations as notes
from .. import marks
from ..access import capture_for
from ..engine import export as engine_export
from ..engine.errors import EngineError
from .common import not_found_page
from .statistics import stats_tabs


@not_found_page
@require_GET
async def export(request: HttpRequest, capture_id: int) -> HttpResponse:
    """A form choosing the packets to export (the current filter, a frame range) as pcapng."""
    capture = await capture_for(request, capture_id)
    context = {
        "capture": capture,
        "filter_text": request.GET.get("filter", "").strip(),
        "marked": len(await marks.marked(capture)),
        "annotations": len(await notes.listing(capture)),
        "export_url": reverse("api:export_packets", args=[capture.pk]),
        "download_url": reverse("api:download", args=[capture.pk]),
    }
    return render(request, "explorer/export.html", context)


@not_found_page
@require_GET
async def http_objects(request: HttpRequest, capture_id: int) -> HttpResponse:
    """List the capture's HTTP objects, each with a download link, as Wireshark's Export Objects does."""
    capture = await capture_for(request, capture_id)
    error = ""
    objects: list[engine_export.HttpObject] = []
    try:
        objects = await engine_export.http_objects(capture.path)
    except EngineError as raised:
        error = raised.message
    context = {
        "capture": capture,
        "view": "http_objects",
        "views": stats_tabs(capture, request.GET.get("filter", "").strip()),
        "objects": [(item, reverse("api:http_object", args=[capture.pk, item.index])) for item in objects],
        "total": sum(item.size for item in objects),
        "zip_url": reverse("api:http_objects_zip", args=[capture.pk]),
        "zip_limit": engine_export.ZIP_LIMIT,
        "error": error,
        "download_url": reverse("api:download", args=[capture.pk]),
    }
    return render(request, "explorer/http_objects.html", context, status=400 if error else 200)
