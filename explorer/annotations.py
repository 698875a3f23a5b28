"""Annotations: comments on a packet or on a whole capture, written by people or read from the file.

Anyone who may write to a capture adds them; only the author changes or deletes one (staff
too). Comments read from the capture file stay as the file has them: the file keeps them
anyway, and an export copies them with its frames.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, QuerySet
from django.http import Http404

from .engine import comments
from .models import Annotation, Capture

log = logging.getLogger(__name__)

MAX_LENGTH = 10_000


class AnnotationError(Exception):
    """A refused annotation; the message says why, for the person who wrote it."""

    @property
    def message(self) -> str:
        return str(self)


def clean_text(text: str) -> str:
    """Return the text to store, without surrounding blank space, or raise AnnotationError."""
    text = text.strip()
    if not text:
        raise AnnotationError("an annotation needs some text")
    if len(text) > MAX_LENGTH:
        raise AnnotationError(
            f"an annotation holds at most {MAX_LENGTH:,} characters; this one has {len(text):,}"
        )
    if "\0" in text:
        raise AnnotationError("an annotation cannot contain NUL characters")
    try:
        text.encode()
    except UnicodeEncodeError as error:
        raise AnnotationError("an annotation must be valid Unicode text") from error
    return text


def check_frame(capture: Capture, frame: int | None) -> int | None:
    """Return the frame to annotate (None: the whole capture), or raise AnnotationError."""
    if frame is not None and not 1 <= frame <= capture.packets:
        raise AnnotationError(f"there is no frame {frame}: the capture has frames 1 to {capture.packets}")
    return frame


def of_capture(capture: Capture) -> QuerySet[Annotation]:
    # Capture comments first, then by frame; within a frame the file's own comments first.
    return (
        Annotation.objects.filter(capture=capture)
        .select_related("author")
        .order_by(F("frame").asc(nulls_first=True), "-from_file", "created_at", "id")
    )


async def listing(capture: Capture) -> list[Annotation]:
    """Return a capture's annotations, its file's comments included."""
    await read_file_comments(capture)
    return [annotation async for annotation in of_capture(capture)]


async def add(capture: Capture, author: Any, frame: int | None, text: str) -> Annotation:
    """Add an annotation by author on a frame, or on the capture when frame is None."""
    if author is None or not author.is_authenticated:
        raise PermissionDenied("sign in to annotate")
    return await Annotation.objects.acreate(
        capture=capture, frame=check_frame(capture, frame), author=author, text=clean_text(text)
    )


def may_change(user: Any, annotation: Annotation) -> bool:
    """Return whether user may edit or delete the annotation: its author, or staff."""
    if annotation.from_file or user is None or not user.is_authenticated:
        return False
    return bool(user.is_staff or user.is_superuser or annotation.author_id == user.pk)


async def _changeable(capture: Capture, user: Any, annotation_id: int) -> Annotation:
    try:
        annotation = await of_capture(capture).aget(pk=annotation_id)
    except Annotation.DoesNotExist as error:
        raise Http404("no such annotation") from error
    if annotation.from_file:
        raise PermissionDenied("comments read from the capture file cannot be changed")
    if not may_change(user, annotation):
        raise PermissionDenied("only its author can change or delete an annotation")
    return annotation


async def edit(capture: Capture, user: Any, annotation_id: int, text: str) -> Annotation:
    """Replace an annotation's text; only its author (or staff) may."""
    annotation = await _changeable(capture, user, annotation_id)
    annotation.text = clean_text(text)
    await annotation.asave(update_fields=["text", "updated_at"])
    return annotation


async def delete(capture: Capture, user: Any, annotation_id: int) -> Annotation:
    """Delete an annotation; only its author (or staff) may. Return it as it was."""
    annotation = await _changeable(capture, user, annotation_id)
    deleted_id = annotation.pk
    await annotation.adelete()
    annotation.pk = deleted_id  # Django clears it; the caller reports which one went
    return annotation


async def read_file_comments(capture: Capture) -> None:
    """Copy the file's comments into annotations, once, the first time they are listed.

    Not while the upload is stored: reading the options of every packet block takes Python
    about two seconds per million packets, which the upload would wait for, and reading them
    on first listing also covers captures stored before annotations existed. The flag is set
    in the same transaction that adds the rows, so concurrent first listings add them once.
    """
    if capture.file_comments_read:
        return
    try:
        found = await asyncio.to_thread(comments.read, capture.path)
    except OSError as error:
        log.warning("cannot read the comments of %s: %s", capture.path, error)
        return
    rows = [
        Annotation(capture=capture, frame=None, from_file=True, text=text)
        # Only pcapng files carry comments; capinfos reports them for any other format it
        # may learn to read them from.
        for text in (found.section if found is not None else capture.comments)
    ]
    if found is not None:
        rows += [
            Annotation(capture=capture, frame=frame, from_file=True, text=text)
            for frame, texts in sorted(found.packets.items())
            if frame <= capture.packets
            for text in texts
        ]
    await sync_to_async(_add_file_comments)(capture.pk, rows)
    capture.file_comments_read = True


def _add_file_comments(capture_id: int, rows: list[Annotation]) -> None:
    with transaction.atomic():
        claimed = Capture.objects.filter(pk=capture_id, file_comments_read=False).update(
            file_comments_read=True
        )
        if claimed:
            Annotation.objects.bulk_create(rows, batch_size=500)


async def for_export(capture: Capture) -> comments.Comments:
    """Return the comments an export adds: every annotation but those the file already has."""
    added = comments.Comments()
    async for annotation in of_capture(capture).filter(from_file=False):
        if annotation.frame is None:
            added.section.append(annotation.text)
        else:
            added.packets.setdefault(annotation.frame, []).append(annotation.text)
    return added
