"""What one user may keep: a number of captures and megabytes of stored files.

Checked while an upload streams in (its bytes are not written past what is left), before each
file is stored, and once more after, since two uploads of one user may be stored at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, Sum

from .models import Capture

MB = 1024 * 1024


@dataclass(frozen=True)
class Allowance:
    """What a user may still store; None where there is no limit."""

    captures: int | None = None
    bytes: int | None = None

    def refusal(self, size: int) -> str | None:
        """Return why a file of this size may not be stored, or None if it may."""
        if self.captures is not None and self.captures < 1:
            return count_message()
        if self.bytes is not None and size > self.bytes:
            return storage_message()
        return None

    def after(self, size: int) -> Allowance:
        """Return what is left once a file of this size is stored."""
        return Allowance(
            None if self.captures is None else self.captures - 1,
            None if self.bytes is None else self.bytes - size,
        )


UNLIMITED = Allowance()


def count_message() -> str:
    return (
        f"upload limit reached: one user may keep {settings.UPLOAD_MAX_CAPTURES_PER_USER:,} captures; "
        "delete some to upload more"
    )


def storage_message() -> str:
    return (
        f"upload limit reached: one user may keep {settings.UPLOAD_MAX_MB_PER_USER:,} MB of captures; "
        "delete some to upload more"
    )


def is_limit(message: str) -> bool:
    return message in (count_message(), storage_message())


async def allowance(owner: Any) -> Allowance:
    """Return what the owner may still store (no limit for files imported without an owner)."""
    max_captures = settings.UPLOAD_MAX_CAPTURES_PER_USER
    max_bytes = settings.UPLOAD_MAX_MB_PER_USER * MB
    if owner is None or not owner.is_authenticated or not (max_captures or max_bytes):
        return UNLIMITED
    used = await Capture.objects.filter(owner=owner).aaggregate(captures=Count("id"), bytes=Sum("size"))
    return Allowance(
        max_captures - used["captures"] if max_captures else None,
        max_bytes - (used["bytes"] or 0) if max_bytes else None,
    )


async def overdrawn(owner: Any) -> str | None:
    """Return the limit the owner's stored captures exceed, or None."""
    left = await allowance(owner)
    if left.captures is not None and left.captures < 0:
        return count_message()
    if left.bytes is not None and left.bytes < 0:
        return storage_message()
    return None
