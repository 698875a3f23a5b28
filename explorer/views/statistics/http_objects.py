"""Statistics ▸ HTTP Objects: Wireshark's Export Objects → HTTP, each object a download away."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_GET

from ...access import capture_for
from ...engine import export as engine_export
from ...engine.errors import EngineError
from ..common import not_found_page
from .page import StatisticPage
from .registry import statistic


@statistic("http_objects", "HTTP Objects", order=60)
@not_found_page
@require_GET
async def http_objects(request: HttpRequest, capture_id: int) -> HttpResponse:
    """List the capture's HTTP objects, each with a download link, as Wireshark's Export Objects does."""
    capture = await capture_for(request, capture_id)
    # The objects are the whole capture's; the display filter is only carried on to the other tabs.
    page = StatisticPage.of(request, capture, "http_objects")
    objects: list[engine_export.HttpObject] = []
    try:
        objects = await engine_export.http_objects(capture.path)
    except EngineError as error:
        page.error = error.message
    context = {
        "objects": [(item, reverse("api:http_object", args=[capture.pk, item.index])) for item in objects],
        "total": sum(item.size for item in objects),
        "zip_url": reverse("api:http_objects_zip", args=[capture.pk]),
        "zip_limit": engine_export.ZIP_LIMIT,
    }
    return page.render(request, "explorer/http_objects.html", context)
