"""Finding captures: the search box and its filters, tags, and the hosts and protocols index.

A capture's `hosts` and `protocols` hold one lowercase word per address, DNS name or
protocol, each word with a space on both sides (" 10.0.0.1 10.0.0.11 "), so that a word is
found by looking for " word ": 10.0.0.1 never finds 10.0.0.11, nor `dns` finds `mdns`. They
are empty until the background summary of the capture has run (" " when it found nothing).

Every search starts from the captures the requester may read (access.visible_captures): it
narrows that set and never widens it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import unicodedata
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import annotations as notes
from .engine import summary as engine_summary
from .engine.errors import EngineError
from .models import Annotation, Capture, Tag

log = logging.getLogger(__name__)

MAX_QUERY_LENGTH = 200
MAX_TERMS = 8
TAG_MAX_LENGTH = 32
MAX_TAGS_PER_CAPTURE = 20
TAG_RULE = "letters, digits and . : + - _ without spaces, starting with a letter or a digit"
TAG_NAME = re.compile(r"[^\W_][\w.:+-]*")
# A quoted phrase or a run of non-blank characters.
TERM = re.compile(r'"([^"]*)"?|(\S+)')
# Summaries run one at a time: each is a whole pass over a capture.
SUMMARIES_AT_ONCE = 1


class SearchError(ValueError):
    """A search or filter the requester typed cannot be understood; the message says why."""


class BadTag(ValueError):
    """A tag name breaks the rules; the message says which."""


# Filters


@dataclass(frozen=True)
class Filters:
    """What the search box and the filters beside it ask for, as typed (also the API's query)."""

    q: str = ""
    owner: str = ""  # "mine" or a username
    tag: str = ""
    uploaded_after: str = ""  # a date (that day included) or a date and time
    uploaded_before: str = ""  # a date (that day included) or a date and time (excluded)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Filters:
        return cls(**{name: str(params.get(name) or "").strip() for name in cls.__dataclass_fields__})

    def active(self) -> bool:
        return any(asdict(self).values())

    def query_string(self) -> str:
        """Return the filters that are set as a URL query (without "?"), to carry them along."""
        return urlencode({name: value for name, value in asdict(self).items() if value})


def terms(text: str) -> list[str]:
    """Return the words and "quoted phrases" of a search; raise SearchError if it is too long."""
    if len(text) > MAX_QUERY_LENGTH:
        raise SearchError(f"a search is at most {MAX_QUERY_LENGTH} characters")
    found = [(quoted or bare).strip() for quoted, bare in TERM.findall(text)]
    found = [term for term in found if term]
    if len(found) > MAX_TERMS:
        raise SearchError(f"a search has at most {MAX_TERMS} words: each must match")
    return found


def word(text: str) -> str:
    """Return a term as stored among the host and protocol words (addresses canonical)."""
    return engine_summary.address(text) or text.lower()


def json_text(text: str) -> str:
    """Return text as it appears inside a JSON string (SQLite keeps JSON with \\u escapes)."""
    return json.dumps(text)[1:-1]


def term_matches(term: str) -> Q:
    """Return the condition for one search term: any of the places it may be found."""
    tagged = Capture.tags.through.objects.filter(tag__name__icontains=term).values("capture_id")
    annotated = Annotation.objects.filter(text__icontains=term).values("capture_id")
    condition = (
        Q(name__icontains=term)
        | Q(pk__in=tagged)
        | Q(comments__icontains=term)
        | Q(comments__icontains=json_text(term))
        | Q(pk__in=annotated)
    )
    if " " not in term:
        whole = word(term)
        condition |= Q(hosts__contains=f" {whole} ") | Q(protocols__contains=f" {whole} ")
        if "." in whole and re.search(r"[a-z]", whole):
            # A domain finds its subdomains too: espn.go.com finds broadband.espn.go.com.
            condition |= Q(hosts__contains=f".{whole} ")
    return condition


def moment(value: str, name: str, *, end: bool) -> datetime:
    """Return the instant a date filter means: a day's start, or the next day's for an end."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        start = datetime.combine(day + timedelta(days=1) if end else day, time.min)
        return timezone.make_aware(start)
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise SearchError(
            f"{name}: {value!r} is neither a date (2024-05-31) nor a date and time (2024-05-31T14:00:00Z)"
        ) from error
    return instant if timezone.is_aware(instant) else timezone.make_aware(instant)


def matching(visible: QuerySet[Capture], filters: Filters, user: Any) -> QuerySet[Capture]:
    """Return the visible captures the filters select; raise SearchError for one not understood."""
    found = visible
    for term in terms(filters.q):
        found = found.filter(term_matches(term))
    if filters.owner == "mine":
        found = found.filter(owner=user) if user is not None and user.is_authenticated else found.none()
    elif filters.owner:
        found = found.filter(owner__username=filters.owner)
    if filters.tag:
        found = found.filter(tags__name=filters.tag.lower())
    if filters.uploaded_after:
        found = found.filter(uploaded_at__gte=moment(filters.uploaded_after, "uploaded_after", end=False))
    if filters.uploaded_before:
        found = found.filter(uploaded_at__lt=moment(filters.uploaded_before, "uploaded_before", end=True))
    return found


async def owners(visible: QuerySet[Capture]) -> list[str]:
    """Return the usernames of the owners of the visible captures, for the owner filter."""
    users = get_user_model().objects.filter(pk__in=visible.values("owner_id")).order_by("username")
    return [name async for name in users.values_list("username", flat=True)]


async def tags_among(visible: QuerySet[Capture]) -> list[str]:
    """Return the tags of the visible captures (only those: a tag can say what a capture is)."""
    used = Capture.tags.through.objects.filter(capture__in=visible).values("tag_id")
    return [name async for name in Tag.objects.filter(pk__in=used).values_list("name", flat=True)]


# Tags


def tag_name(text: str) -> str:
    """Return a tag name trimmed and in lowercase; raise BadTag with the rule it breaks."""
    name = unicodedata.normalize("NFKC", text).strip().lower()
    if not name:
        raise BadTag("type a tag name")
    if len(name) > TAG_MAX_LENGTH:
        raise BadTag(f"a tag is at most {TAG_MAX_LENGTH} characters")
    if not TAG_NAME.fullmatch(name):
        raise BadTag(f"a tag is {TAG_RULE}")
    return name


async def tag_names(capture: Capture) -> list[str]:
    return [name async for name in capture.tags.values_list("name", flat=True)]


async def add_tag(capture: Capture, text: str) -> list[str]:
    """Tag the capture (a tag it has already is fine); return its tags."""
    name = tag_name(text)
    current = await tag_names(capture)
    if name not in current:
        if len(current) >= MAX_TAGS_PER_CAPTURE:
            raise BadTag(f"a capture has at most {MAX_TAGS_PER_CAPTURE} tags")
        try:
            tag, _ = await Tag.objects.aget_or_create(name=name)
        except IntegrityError:
            tag = await Tag.objects.aget(name=name)  # created by someone else meanwhile
        await capture.tags.aadd(tag)
    return await tag_names(capture)


async def remove_tag(capture: Capture, text: str) -> list[str]:
    """Take the tag off the capture (one it does not have is fine); return its tags."""
    name = tag_name(text)
    tag = await Tag.objects.filter(name=name).afirst()
    if tag is not None:
        await capture.tags.aremove(tag)
        # A tag no capture has is forgotten, so the suggestions stay those in use.
        await Tag.objects.filter(pk=tag.pk, captures__isnull=True).adelete()
    return await tag_names(capture)


# The hosts and protocols index


def words_field(words: list[str]) -> str:
    """Return words as stored in `hosts` and `protocols`: each between spaces."""
    return f" {' '.join(words)} " if words else " "


def words_of(stored: str) -> list[str]:
    return stored.split()


def summarized(capture: Capture) -> bool:
    return capture.protocols != ""


# The latest summary asked for, per capture: a key log attached while an older summary runs
# asks for a new one, and the older one's (undecrypted) result must not be stored after it.
_latest: dict[int, object] = {}


async def summarize(capture_id: int, path: Path) -> engine_summary.Summary:
    """Read the capture's hosts and protocols and store them; raise EngineError."""
    mine = _latest[capture_id] = object()
    found = await engine_summary.summarize(path)
    if _latest.get(capture_id) is not mine:
        return found
    del _latest[capture_id]
    # A capture deleted meanwhile updates nothing.
    await Capture.objects.filter(pk=capture_id).aupdate(
        hosts=words_field(found.hosts), protocols=words_field(found.protocols)
    )
    return found


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
_summaries: set[asyncio.Task[None]] = set()


@asynccontextmanager
async def _turn() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    slots = _slots.setdefault(loop, asyncio.Semaphore(SUMMARIES_AT_ONCE))
    async with slots:
        yield


async def _summarize_in_turn(capture_id: int, path: Path) -> None:
    try:
        async with _turn():
            await summarize(capture_id, path)
            # The file's own comments become annotations, which the search looks through.
            capture = await Capture.objects.filter(pk=capture_id).afirst()
            if capture is not None:
                await notes.read_file_comments(capture)
    except EngineError as error:
        log.warning("no summary of capture %s: %s", capture_id, error.message)
    except Exception:
        # A summary is a convenience: whatever goes wrong is logged and the server goes on.
        log.exception("no summary of capture %s", capture_id)


async def _queue_for_worker(capture_id: int) -> None:
    # Empty protocols put the capture in the worker's queue (explorer/worker.py); until the
    # worker is done, the search finds it by name, tags and comments only.
    await Capture.objects.filter(pk=capture_id).aupdate(protocols="")


def schedule_summary(capture: Capture) -> None:
    """Fill the capture's hosts and protocols in the background, after the current request."""
    # A context of its own: the request's would send the task's database calls to the
    # request's thread executor, which is gone once the response is sent.
    if settings.BACKGROUND_WORKER:
        summary = _queue_for_worker(capture.pk)
    else:
        summary = _summarize_in_turn(capture.pk, capture.path)
    task = asyncio.get_running_loop().create_task(summary, context=contextvars.Context())
    # The loop keeps only a weak reference to a task: this set keeps it until it is done.
    _summaries.add(task)
    task.add_done_callback(_summaries.discard)


async def summaries_done() -> None:
    """Wait for the summaries scheduled so far (a command must not exit before they end)."""
    while _summaries:
        await asyncio.gather(*list(_summaries), return_exceptions=True)
