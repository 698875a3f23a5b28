"""Live captures: the start page with its list, the live view, and stopping."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from .. import livecapture
from ..access import user_of
from ..engine import dumpcap
from ..models import LiveCapture
from .common import not_found_page

LIMIT_FIELDS = {"seconds": "duration", "packets": "packets", "kilobytes": "size"}
RING_FIELDS = {"ring_files": "ring buffer's number of files", "ring_kilobytes": "ring buffer's file size"}
MAX_LIMIT = 10**9


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


def _ring(request: HttpRequest) -> livecapture.Ring | None:
    """Return the ring buffer of the start form, if any; raise CaptureRefused for half of one."""
    values = _numbers(request, RING_FIELDS)
    files, kilobytes = values["ring_files"], values["ring_kilobytes"]
    if files is None and kilobytes is None:
        return None
    if files is None or kilobytes is None or files < 2:
        raise dumpcap.CaptureRefused("a ring buffer needs a number of files (2 or more) and a file size")
    return livecapture.Ring(files, kilobytes)


async def _live_for(request: HttpRequest, live_id: int) -> LiveCapture:
    """Return the live capture if the requester may watch it, else raise Http404."""
    live = await LiveCapture.objects.filter(pk=live_id).select_related("capture").afirst()
    if live is None or not await livecapture.may_view(await user_of(request), live):
        raise Http404("no such live capture")
    return live


@require_GET
@not_found_page
async def live_list(request: HttpRequest) -> HttpResponse:
    user = await user_of(request)
    if not user.is_authenticated:
        raise Http404("sign in to see live captures")
    allowed = await livecapture.may_capture(user)
    interfaces: list[dumpcap.Interface] = []
    problem = ""
    if allowed:
        try:
            interfaces = await dumpcap.interfaces()
        except dumpcap.CaptureRefused as error:
            problem = error.message
    lives = LiveCapture.objects.select_related("owner", "capture", "team")
    lives = lives.filter(livecapture.watchable_by(user))
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
    if not await livecapture.may_capture(user):
        raise PermissionDenied("you may not capture on this server's interfaces")
    try:
        limits, ring = _limits(request), _ring(request)
        team = await livecapture.team_of(user, request.POST.get("team", ""))
        interface, capture_filter = request.POST.get("interface", ""), request.POST.get("filter", "").strip()
        live = await livecapture.start_interface(user, interface, capture_filter, limits, ring, team)
    except dumpcap.CaptureRefused as error:
        messages.error(request, f"Capture not started: {error.message}")
        return redirect("explorer:live_list")
    return redirect(live)


@require_GET
@not_found_page
async def live_view(request: HttpRequest, live_id: int) -> HttpResponse:
    live = await _live_for(request, live_id)
    context = {"live": live, "may_stop": livecapture.may_stop(await user_of(request), live)}
    return render(request, "explorer/live_view.html", context)


@require_POST
@not_found_page
async def live_stop(request: HttpRequest, live_id: int) -> HttpResponse:
    live = await _live_for(request, live_id)
    if not livecapture.may_stop(await user_of(request), live):
        raise PermissionDenied("only its owner stops a live capture")
    if live.state == LiveCapture.State.RUNNING and not await livecapture.request_stop(live):
        messages.error(request, "No server process is recording this capture any more.")
    return redirect(live)
