"""Live captures: the start page with its list, the live view, and stopping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from .. import access
from ..access import capture_for, user_of
from ..engine import dumpcap
from ..engine import packets as engine_packets
from ..engine.errors import EngineError
from ..live import staging
from ..live.interface import start_interface
from ..live.recording import request_stop
from ..live.ring import Ring
from ..models import LiveCapture
from .common import not_found_page, varies_on_htmx, wants_partial
from .packets import NUMBER_PLACEHOLDER, detail_context, tree_and_dumps

LIMIT_FIELDS = {"seconds": "duration", "packets": "packets", "kilobytes": "size"}
RING_FIELDS = {"ring_files": "ring buffer's number of files", "ring_kilobytes": "ring buffer's file size"}
MAX_LIMIT = 10**9
RING_REFUSED = (
    "This capture keeps a ring buffer of files, whose packet numbers start over in each file: "
    "details are shown once the capture is stored."
)


def _numbers(request: HttpRequest, fields: dict[str, str]) -> dict[str, int | None]:
    """Return the whole numbers of these form fields (None when empty); raise CaptureRefused."""
    values: dict[str, int | None] = {}
    for field, label in fields.items():
        text = request.POST.get(field, "").strip()
        if not text:
            values[field] = None
        elif text.isdigit() and 0 < int(text) <= MAX_LIMIT:
            values[field] = int(text)
        else:
            raise dumpcap.CaptureRefused(f"the {label} limit must be a whole number from 1 to {MAX_LIMIT}")
    return values


def _limits(request: HttpRequest) -> dumpcap.Limits:
    """Return the limits of the start form; raise CaptureRefused for one that is not a whole number."""
    return dumpcap.Limits(**_numbers(request, LIMIT_FIELDS))


def _ring(request: HttpRequest) -> Ring | None:
    """Return the ring buffer of the start form, if any; raise CaptureRefused for half of one."""
    values = _numbers(request, RING_FIELDS)
    files, kilobytes = values["ring_files"], values["ring_kilobytes"]
    if files is None and kilobytes is None:
        return None
    if files is None or kilobytes is None or files < 2:
        raise dumpcap.CaptureRefused("a ring buffer needs a number of files (2 or more) and a file size")
    return Ring(files, kilobytes)


async def _live_for(request: HttpRequest, live_id: int) -> LiveCapture:
    """Return the live capture if the requester may watch it, else raise Http404."""
    return await access.live_capture_for(await user_of(request), live_id)


@require_GET
@not_found_page
async def live_list(request: HttpRequest) -> HttpResponse:
    user = await user_of(request)
    if not user.is_authenticated:
        raise Http404("sign in to see live captures")
    allowed = await access.may_capture_on_interfaces(user)
    interfaces: list[dumpcap.Interface] = []
    problem = ""
    if allowed:
        try:
            interfaces = await dumpcap.interfaces()
        except dumpcap.CaptureRefused as error:
            problem = error.message
    lives = LiveCapture.objects.select_related("owner", "capture", "team")
    lives = lives.filter(access.watchable_live_captures(user))
    context = {
        "may_capture": allowed,
        "interfaces": interfaces,
        "teams": [team.name async for team in user.groups.order_by("name")],
        "interface_problem": problem,
        "lives": [live async for live in lives[:50]],
        "stream_url": request.build_absolute_uri("/api/live/NAME"),
    }
    return render(request, "explorer/live_list.html", context)


@require_POST
@not_found_page
async def live_start(request: HttpRequest) -> HttpResponse:
    user = await user_of(request)
    if not user.is_authenticated:
        raise Http404("sign in to capture")
    if not await access.may_capture_on_interfaces(user):
        raise PermissionDenied("you may not capture on this server's interfaces")
    try:
        limits, ring = _limits(request), _ring(request)
        team = await access.team_of(user, request.POST.get("team", ""))
        interface, capture_filter = request.POST.get("interface", ""), request.POST.get("filter", "").strip()
        live = await start_interface(user, interface, capture_filter, limits, ring, team)
    except (dumpcap.CaptureRefused, access.NotInTeam) as error:
        messages.error(request, f"Capture not started: {error.message}")
        return redirect("explorer:live_list")
    return redirect(live)


@require_GET
@not_found_page
async def live_view(request: HttpRequest, live_id: int) -> HttpResponse:
    live = await _live_for(request, live_id)
    detail_url = reverse("explorer:live_packet_detail", args=[live.pk, NUMBER_PLACEHOLDER])
    context = {
        "live": live,
        "detail_url": detail_url.replace(str(NUMBER_PLACEHOLDER), "{number}"),
        "may_stop": access.may_stop(await user_of(request), live),
    }
    return render(request, "explorer/live_view.html", context)


def _recorded_file(live: LiveCapture) -> Path:
    """Return the file the live capture is recorded into; raise EngineError if it cannot give details."""
    # The recording may run in another server process: its file, in the shared staging folder,
    # is found by the name it was given.
    files = staging.files_of(live.pk)
    if any(not file.is_first for file in files):
        raise EngineError(RING_REFUSED)
    if not files:
        raise EngineError("The recorded file is not there (any more): open the stored capture for details.")
    return files[0].path


async def _recorded_detail_context(live: LiveCapture, number: int) -> dict[str, Any]:
    """Return the template context of a packet's details read from the file being recorded."""
    if number < 1:
        return {"packet": number, "error": f"There is no packet {number}."}
    if live.state == LiveCapture.State.FAILED:
        reason = f": {live.message}" if live.message else "."
        return {"packet": number, "error": f"This capture failed and was not stored{reason}"}
    try:
        detail = await engine_packets.detail_of_file(_recorded_file(live), number)
    except EngineError as error:
        return {"packet": number, "error": error.message}
    return tree_and_dumps(detail)


@require_GET
@not_found_page
async def live_packet_detail(request: HttpRequest, live_id: int, number: int) -> HttpResponse:
    """Render a packet's tree and bytes for htmx: from the recording file, or once stored, the capture."""
    live = await _live_for(request, live_id)
    if not wants_partial(request):
        if live.capture_id is None:
            return redirect(live)
        return redirect(f"{reverse('explorer:capture', args=[live.capture_id])}?packet={number}")
    context: dict[str, Any] = {}
    if live.capture_id is None:
        context = await _recorded_detail_context(live, number)
        if "error" in context:
            # Stored while sharkd read the file, which then moved into the stored capture.
            live = await _live_for(request, live_id)
    if live.capture_id is not None and (not context or "error" in context):
        context = await detail_context(await capture_for(request, live.capture_id), number)
    return varies_on_htmx(render(request, "explorer/capture.html#packet_detail", context))


@require_POST
@not_found_page
async def live_stop(request: HttpRequest, live_id: int) -> HttpResponse:
    live = await _live_for(request, live_id)
    if not access.may_stop(await user_of(request), live):
        raise PermissionDenied("only its owner stops a live capture")
    if live.state == LiveCapture.State.RUNNING and not await request_stop(live):
        messages.error(request, "No server process is recording this capture any more.")
    return redirect(live)
