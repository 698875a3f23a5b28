"""Secrets in URLs and headers: API tokens and share-link keys.

Both come from `secrets`, carry a short prefix that finds their row, and are compared in
constant time. API tokens are kept only as a SHA-256 digest (shown once, when created);
share-link keys are kept, so that an owner can copy a link again from the capture's page.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from .models import ApiToken, Capture, ShareLink

LOOKUP_LENGTH = 12
# 32 bytes of randomness, base64url: 43 characters.
KEY_BYTES = 32


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


async def create_token(user: Any, name: str = "") -> str:
    """Create an API token for user and return its key; only its digest is stored."""
    key = new_key()
    await ApiToken.objects.acreate(
        user=user, name=name[:100], lookup=key[:LOOKUP_LENGTH], digest=_digest(key)
    )
    return key


LAST_USED_PRECISION = timedelta(minutes=1)


async def user_for_token(key: str) -> Any | None:
    """Return the active user an API token belongs to, or None."""
    if len(key) < LOOKUP_LENGTH + 8:
        return None
    token = await ApiToken.objects.select_related("user").filter(lookup=key[:LOOKUP_LENGTH]).afirst()
    if token is None or not hmac.compare_digest(token.digest, _digest(key)):
        return None
    if not token.user.is_active:
        return None
    now = timezone.now()
    # To the minute: a script paging through a capture would otherwise write on every request.
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
        await ApiToken.objects.filter(pk=token.pk).aupdate(last_used_at=now)
    return token.user


async def create_link(
    capture: Capture, user: Any, view: str, expires_at: datetime | None = None
) -> ShareLink:
    key = new_key()
    return await ShareLink.objects.acreate(
        capture=capture,
        lookup=key[:LOOKUP_LENGTH],
        key=key,
        view=view,
        created_by=user if user is not None and user.is_authenticated else None,
        expires_at=expires_at,
    )


async def link_for_key(key: str) -> ShareLink | None:
    """Return the share link with this key if it exists, whether or not it is still valid."""
    if len(key) < LOOKUP_LENGTH + 8:
        return None
    link = await ShareLink.objects.select_related("capture").filter(lookup=key[:LOOKUP_LENGTH]).afirst()
    if link is None or not hmac.compare_digest(link.key, key):
        return None
    return link


def link_is_active(link: ShareLink) -> bool:
    return link.revoked_at is None and (link.expires_at is None or link.expires_at > timezone.now())
