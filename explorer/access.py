"""Who may do what with a capture: one place used by every view, API function and consumer.

- The owner, staff and superusers may do everything: change visibility, share, delete.
- Members of the capture's team (visibility "team") may read and annotate.
- Anyone holding a valid share link of a capture whose owner allowed links (visibility
  "link") may read it, without an account; an opened link is remembered in the session.
- Nobody else learns that the capture exists: they get 404, as for a missing one.

Live captures (being recorded) have rules of their own:

- Staff, and users given "Can capture on the server's interfaces", record from an interface.
- Any user sends a capture stream of their own (with an API token).
- Its owner, staff and the members of the team named for it watch it; nobody else learns that
  it exists. Only its owner and staff stop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404, HttpRequest
from django.utils import timezone

from .models import Capture, LiveCapture, ShareLink, Visibility
from .prepared import PreparedQuery

Need = Literal["read", "write", "manage"]
# Session key: ids of the share links this browser has opened.
OPENED_LINKS = "opened_share_links"
User = get_user_model()
# Set by capture_for on the capture it read: {user pk: whether that user is in its team}, read
# with the capture in one query instead of a second one.
TEAM_MEMBERSHIP = "_team_membership"


@dataclass(frozen=True)
class Rights:
    read: bool = False
    write: bool = False  # annotate, mark packets, attach a key log
    manage: bool = False  # change visibility and team, share, delete

    def allows(self, need: Need) -> bool:
        return bool(getattr(self, need))


NOTHING = Rights()
READ_ONLY = Rights(read=True)
MEMBER = Rights(read=True, write=True)
EVERYTHING = Rights(read=True, write=True, manage=True)


async def user_of(request: HttpRequest) -> Any:
    """Return the requester: the user of an API token, of the session, or AnonymousUser."""
    token_user = getattr(request, "token_user", None)
    if token_user is not None:
        return token_user
    auser = getattr(request, "auser", None)
    return await auser() if auser is not None else AnonymousUser()


def active_links() -> QuerySet[ShareLink]:
    now = timezone.now()
    return ShareLink.objects.filter(revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )


def opened_link_ids(session: Any) -> list[int]:
    if session is None:
        return []
    ids = session.get(OPENED_LINKS, [])
    return [i for i in ids if isinstance(i, int)] if isinstance(ids, list) else []


async def rights_of(user: Any, session: Any, capture: Capture) -> Rights:
    """Return what this user, with this session's opened share links, may do with a capture."""
    if user is not None and user.is_authenticated:
        if user.is_staff or user.is_superuser or capture.owner_id == user.pk:
            return EVERYTHING
        shared_with_team = capture.visibility == Visibility.TEAM and capture.team_id is not None
        if shared_with_team and await in_team(user, capture):
            return MEMBER
    if capture.visibility == Visibility.LINK:
        ids = opened_link_ids(session)
        if ids and await active_links().filter(capture=capture, pk__in=ids).aexists():
            return READ_ONLY
    return NOTHING


async def in_team(user: Any, capture: Capture) -> bool:
    """Tell whether a signed-in user is a member of the capture's team."""
    known = getattr(capture, TEAM_MEMBERSHIP, {})
    if user.pk in known:
        return bool(known[user.pk])
    return await user.groups.filter(pk=capture.team_id).aexists()


async def rights(request: HttpRequest, capture: Capture) -> Rights:
    return await rights_of(await user_of(request), getattr(request, "session", None), capture)


def _capture_with_membership(capture_id: int, user_id: int) -> QuerySet[Capture]:
    member = User.groups.through.objects.filter(user_id=user_id, group_id=OuterRef("team_id"))
    return Capture.objects.filter(pk=capture_id).annotate(requester_in_team=Exists(member))


# Every page, packet and API request of a capture looks it up: built once (explorer/prepared.py).
CAPTURE = PreparedQuery(Capture, lambda capture_id: Capture.objects.filter(pk=capture_id), 1)
# With whether the requester is in the capture's team, for the access rules, in the same query.
CAPTURE_WITH_MEMBERSHIP = PreparedQuery(Capture, _capture_with_membership, 2)
# The keys a 64-bit integer column can hold: the ORM answers "none" past them on its own.
MIN_KEY, MAX_KEY = -(2**63), 2**63 - 1


async def capture_for(request: HttpRequest, capture_id: int, need: Need = "read") -> Capture:
    """Return the capture if the requester may do what `need` says, else raise.

    Http404 when the requester may not even read it (its existence stays private),
    PermissionDenied when they may read it but not do this.
    """
    if not MIN_KEY <= capture_id <= MAX_KEY:
        raise Http404("no such capture")  # a database refuses to compare such a number
    user = await user_of(request)
    if user.is_authenticated:
        capture = await CAPTURE_WITH_MEMBERSHIP.first(capture_id, user.pk)
    else:
        capture = await CAPTURE.first(capture_id)
    if capture is None:
        raise Http404("no such capture")
    if user.is_authenticated:
        in_team = capture.requester_in_team  # type: ignore[attr-defined]
        setattr(capture, TEAM_MEMBERSHIP, {user.pk: bool(in_team)})
    allowed = await rights_of(user, getattr(request, "session", None), capture)
    if not allowed.read:
        raise Http404("no such capture")
    if not allowed.allows(need):
        raise PermissionDenied(f"you may look at this capture but not {VERBS[need]}")
    return capture


async def capture_for_scope(scope: dict[str, Any], capture_id: int) -> Capture:
    """Return the capture a websocket may follow (read rights), else raise Http404."""
    try:
        capture = await Capture.objects.aget(pk=capture_id)
    except Capture.DoesNotExist as error:
        raise Http404("no such capture") from error
    if not (await rights_of(scope.get("user"), scope.get("session"), capture)).read:
        raise Http404("no such capture")
    return capture


VERBS = {"read": "read it", "write": "change its marks, annotations or keys", "manage": "manage it"}


def visible_captures(user: Any, session: Any) -> QuerySet[Capture]:
    """Return the captures this user (and this session's opened links) may read."""
    captures = Capture.objects.all()
    if user is not None and user.is_authenticated and (user.is_staff or user.is_superuser):
        return captures
    visible = Q(pk__in=[])
    if user is not None and user.is_authenticated:
        visible |= Q(owner=user) | Q(visibility=Visibility.TEAM, team__in=user.groups.all())
    ids = opened_link_ids(session)
    if ids:
        linked = active_links().filter(pk__in=ids).values("capture_id")
        visible |= Q(visibility=Visibility.LINK, pk__in=linked)
    return captures.filter(visible)


# ---- live captures ------------------------------------------------------------------------------


async def may_capture_on_interfaces(user: Any) -> bool:
    """Tell whether the user may record from the server's interfaces."""
    if user is None or not user.is_authenticated:
        return False
    return bool(user.is_staff or user.is_superuser or await user.ahas_perm("explorer.start_live_capture"))


def may_stream(user: Any) -> bool:
    """Tell whether the user may send a live capture stream of their own (within their quotas)."""
    return user is not None and bool(user.is_authenticated)


async def may_watch(user: Any, live: LiveCapture) -> bool:
    """Tell whether the user may watch a live capture: its owner, its team's members and staff."""
    if user is None or not user.is_authenticated:
        return False
    if user.is_staff or user.is_superuser or live.owner_id == user.pk:
        return True
    return live.team_id is not None and await user.groups.filter(pk=live.team_id).aexists()


def may_stop(user: Any, live: LiveCapture) -> bool:
    """Tell whether the user may stop a live capture: its owner and staff, not the team watching."""
    return bool(user.is_staff or user.is_superuser or live.owner_id == user.pk)


def watchable_live_captures(user: Any) -> Q:
    """The live captures the user may watch, as a filter (for a signed-in user)."""
    if user.is_staff or user.is_superuser:
        return Q()
    return Q(owner=user) | Q(team__in=user.groups.all())


async def live_capture_for(user: Any, live_id: int) -> LiveCapture:
    """Return the live capture (with its stored capture) if the user may watch it, else raise Http404."""
    if not MIN_KEY <= live_id <= MAX_KEY:
        raise Http404("no such live capture")
    live = await LiveCapture.objects.filter(pk=live_id).select_related("capture").afirst()
    if live is None or not await may_watch(user, live):
        raise Http404("no such live capture")
    return live


class NotInTeam(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def team_of(user: Any, name: str) -> Group | None:
    """Return the user's team of that name, to watch a live capture (None for no name); raise NotInTeam."""
    if not name:
        return None
    team = await user.groups.filter(name=name).afirst()
    if team is None:
        raise NotInTeam(f"you are not a member of a team named {name!r}")
    return cast(Group, team)
