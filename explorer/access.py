"""Who may see a capture: one helper used by every view, API function and consumer."""

from __future__ import annotations

from django.http import Http404, HttpRequest

from .models import Capture


async def capture_for(request: HttpRequest | None, capture_id: int) -> Capture:
    """Return the capture if the requester may see it, else raise Http404.

    Until accounts exist the server listens on loopback and every capture is visible to
    whoever reaches it; this is the one place that rule lives.
    """
    try:
        return await Capture.objects.aget(pk=capture_id)
    except Capture.DoesNotExist as error:
        raise Http404("no such capture") from error
