"""Sharing a capture: its visibility and team, and share links that reproduce one view of it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.models import Group
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..access import OPENED_LINKS, capture_for, opened_link_ids, rights, user_of
from ..models import Capture, ShareLink, Visibility
from ..tokens import create_link, link_for_key, link_is_active
from .common import not_found_page

EXPIRIES = {
    "never": None,
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
EXPIRY_LABELS = {
    "never": "Never",
    "1h": "In an hour",
    "1d": "In a day",
    "7d": "In a week",
    "30d": "In 30 days",
}
MAX_VIEW_LENGTH = 4000


def shared_view(capture: Capture, view: str) -> str:
    """Return the view to share if it is one of this capture's pages, else its packet list."""
    home = capture.get_absolute_url()
    if not view.startswith(home) or len(view) > MAX_VIEW_LENGTH or "//" in view or "\\" in view:
        return home
    return view


def link_url(request: HttpRequest, link: ShareLink) -> str:
    return request.build_absolute_uri(reverse("explorer:open_link", args=[link.key]))


async def teams_for(user: Any) -> list[Group]:
    groups = Group.objects.all() if getattr(user, "is_staff", False) else Group.objects.filter(user=user)
    return [g async for g in groups.order_by("name")]


@not_found_page
@require_GET
async def sharing(request: HttpRequest, capture_id: int) -> HttpResponse:
    """The capture's sharing page: who may see it, and its share links."""
    capture = await capture_for(request, capture_id, "write")
    # The page names the owner and the team: fetched here, not from the template.
    capture = await Capture.objects.select_related("owner", "team").aget(pk=capture.pk)
    allowed = await rights(request, capture)
    user = await user_of(request)
    links = [link async for link in capture.share_links.select_related("created_by")]
    context = {
        "capture": capture,
        "can_manage": allowed.manage,
        "visibilities": Visibility.choices,
        "teams": await teams_for(user),
        "links": [(link, link_url(request, link), link_is_active(link)) for link in links],
        "expiries": EXPIRY_LABELS.items(),
        "download_url": reverse("api:download", args=[capture.pk]),
    }
    return render(request, "explorer/sharing.html", context)


@not_found_page
@require_POST
async def sharing_update(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Change who may see the capture (owner, staff)."""
    capture = await capture_for(request, capture_id, "manage")
    visibility = request.POST.get("visibility", "")
    if visibility not in Visibility.values:
        messages.error(request, "Choose who may see the capture.")
        return redirect("explorer:sharing", capture_id=capture.pk)
    team = None
    if visibility == Visibility.TEAM:
        team_id = request.POST.get("team", "")
        teams = {str(t.pk): t for t in await teams_for(await user_of(request))}
        team = teams.get(team_id)
        if team is None:
            messages.error(request, "Choose one of your teams.")
            return redirect("explorer:sharing", capture_id=capture.pk)
    capture.visibility = visibility
    capture.team = team
    await capture.asave(update_fields=["visibility", "team"])
    messages.success(request, f"Visible to: {capture.get_visibility_display().lower()}.")
    return redirect("explorer:sharing", capture_id=capture.pk)


@not_found_page
@require_POST
async def share(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Create a share link of one view of the capture; answer JSON to scripts, else redirect."""
    capture = await capture_for(request, capture_id, "write")
    expiry = request.POST.get("expires", "never")
    if expiry not in EXPIRIES:
        expiry = "never"
    lifetime = EXPIRIES[expiry]
    view = shared_view(capture, request.POST.get("view", ""))
    link = await create_link(
        capture, await user_of(request), view, timezone.now() + lifetime if lifetime else None
    )
    url = link_url(request, link)
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse(
            {
                "url": url,
                "view": view,
                "expires_at": link.expires_at.isoformat() if link.expires_at else None,
                "anonymous": capture.visibility == Visibility.LINK,
            },
            status=201,
        )
    messages.success(request, f"Share link created: {url}")
    return redirect("explorer:sharing", capture_id=capture.pk)


@not_found_page
@require_POST
async def revoke_link(request: HttpRequest, capture_id: int, link_id: int) -> HttpResponse:
    """Revoke a share link: its holders lose access on their next request."""
    capture = await capture_for(request, capture_id, "write")
    allowed = await rights(request, capture)
    user = await user_of(request)
    links = ShareLink.objects.filter(capture=capture, pk=link_id, revoked_at__isnull=True)
    if not allowed.manage:
        links = links.filter(created_by=user)
    if await links.aupdate(revoked_at=timezone.now()):
        messages.success(request, "Link revoked.")
    return redirect("explorer:sharing", capture_id=capture.pk)


@require_http_methods(["GET"])
async def open_link(request: HttpRequest, key: str) -> HttpResponse:
    """Open a share link: remember it in this browser's session and show its view."""
    link = await link_for_key(key)
    if link is None:
        raise Http404("no such link")
    if not link_is_active(link):
        return render(request, "explorer/link_closed.html", {"link": link}, status=410)
    ids = opened_link_ids(request.session)
    if link.pk not in ids:
        request.session[OPENED_LINKS] = [*ids, link.pk][-50:]
    return redirect(link.view)
