"""Marked packets: frames set aside in the packet list, kept with the capture."""

from __future__ import annotations

from django.db import IntegrityError

from .engine.errors import EngineError
from .models import Capture, MarkedPacket


def _check(capture: Capture, number: int) -> None:
    if not 1 <= number <= capture.packets:
        raise EngineError(f"there is no frame {number}: the capture has frames 1 to {capture.packets}")


async def marked(capture: Capture) -> list[int]:
    """Return the marked frame numbers of a capture, in order."""
    return [n async for n in MarkedPacket.objects.filter(capture=capture).values_list("number", flat=True)]


async def mark(capture: Capture, number: int) -> None:
    _check(capture, number)
    try:
        await MarkedPacket.objects.aget_or_create(capture=capture, number=number)
    except IntegrityError:
        pass  # marked by someone else at the same moment: marked either way


async def unmark(capture: Capture, number: int) -> None:
    _check(capture, number)
    await MarkedPacket.objects.filter(capture=capture, number=number).adelete()


async def unmark_all(capture: Capture) -> None:
    await MarkedPacket.objects.filter(capture=capture).adelete()
