"""Export Specified Packets: the page and the export's progress; the files come from the API."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from .. import annotations as notes
from .. import exports, marks
from ..access import capture_for, user_of
from ..engine.errors import EngineError
from ..models import Capture, ExportJob
from .common import not_found_page, wants_partial


@not_found_page
@require_GET
async def export(request: HttpRequest, capture_id: int, job: dict[str, Any] | None = None) -> HttpResponse:
    """A form choosing the packets to export (the current filter, a frame range) as pcapng."""
    capture = await capture_for(request, capture_id)
    context = {
        **(job or {}),
        "capture": capture,
        "filter_text": request.GET.get("filter", "").strip(),
        "marked": len(await marks.marked(capture)),
        "annotations": len(await notes.listing(capture)),
        "export_url": reverse("explorer:export_start", args=[capture.pk]),
        "download_url": reverse("api:download", args=[capture.pk]),
    }
    return render(request, "explorer/export.html", context)


@not_found_page
@require_POST
async def export_start(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Queue the export the form describes; show its progress (htmx) or go to its page."""
    capture = await capture_for(request, capture_id)
    form = request.POST
    try:
        first, last, marked_only = exports.chosen_frames(
            form.get("range", "all"), form.get("first", ""), form.get("last", "")
        )
        job = await exports.queue(
            capture,
            await user_of(request),
            form.get("filter", ""),
            first,
            last,
            marked_only,
            form.get("annotations") == "1",
        )
    except EngineError as error:
        if wants_partial(request):
            # htmx swaps in only a successful answer: the refusal is this fragment's content.
            context = {"capture": capture, "error": error.message}
            return render(request, "explorer/export.html#export_job", context)
        messages.error(request, f"Not exported: {error.message}")
        return redirect("explorer:export", capture_id=capture.pk)
    if wants_partial(request):
        return render(request, "explorer/export.html#export_job", job_context(capture, job))
    return redirect("explorer:export_job", capture_id=capture.pk, export_id=job.pk)


@not_found_page
@require_GET
async def export_job(request: HttpRequest, capture_id: int, export_id: int) -> HttpResponse:
    """An export's progress, then its download link; htmx asks again until it has ended."""
    capture = await capture_for(request, capture_id)
    context = job_context(capture, await exports.current_of(capture, export_id))
    if wants_partial(request):
        return render(request, "explorer/export.html#export_job", context)
    return await export(request, capture_id, context)


def job_context(capture: Capture, job: ExportJob) -> dict[str, Any]:
    return {
        "capture": capture,
        "job": job,
        "job_url": reverse("explorer:export_job", args=[capture.pk, job.pk]),
        "file_url": reverse("api:export_file_of", args=[capture.pk, job.pk]),
        "file_kept": exports.file_of(job) is not None,
    }
