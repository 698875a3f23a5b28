"""Recording from one of the server's interfaces: dumpcap's output, read as it comes."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from django.contrib.auth.models import Group
from django.utils import timezone

from .. import quotas
from ..engine import dumpcap
from ..models import LiveCapture
from .framing import NotAStream
from .recording import Recording
from .ring import Ring

log = logging.getLogger(__name__)

READ_BLOCK = 256 * 1024

# Background tasks of interface captures: kept here so that they are not collected mid-way.
_TASKS: set[asyncio.Task[None]] = set()


async def start_interface(
    owner: Any,
    interface: str,
    capture_filter: str,
    limits: dumpcap.Limits,
    ring: Ring | None = None,
    team: Group | None = None,
) -> LiveCapture:
    """Check the interface and filter, then record from them in the background; raise CaptureRefused."""
    await dumpcap.check(interface, capture_filter)
    refusal = (await quotas.allowance(owner)).refusal(0)
    if refusal is not None:
        raise dumpcap.CaptureRefused(refusal)
    process = await dumpcap.start(interface, capture_filter, limits)
    name = f"{interface} {timezone.now():%Y-%m-%d %H:%M:%S}"
    live = await LiveCapture.objects.acreate(
        owner=owner,
        name=name,
        source=LiveCapture.Source.INTERFACE,
        interface=interface,
        capture_filter=capture_filter,
        team=team,
    )
    recording = Recording(live, ring)
    await recording.start()
    # A context of its own: the request's (with its database thread) ends before the recording.
    task = asyncio.create_task(record(recording, process), context=contextvars.Context())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return live


async def record(recording: Recording, process: asyncio.subprocess.Process) -> None:
    """Feed dumpcap's output to the recording until dumpcap ends or is stopped; then finish it."""
    assert process.stdout is not None
    stopper = asyncio.create_task(recording.stop_requested.wait())
    reason = "a limit was reached"
    try:
        while True:
            read = asyncio.create_task(process.stdout.read(READ_BLOCK))
            await asyncio.wait({read, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done() and process.returncode is None:
                dumpcap.stop(process)
                reason = recording.stop_reason
            data = await read
            if not data:
                break
            await recording.feed(data)
        ending = await dumpcap.ending(process)
        recording.source_packets = ending.captured
        if ending.failure:
            reason = f"dumpcap stopped: {ending.failure}"
    except NotAStream as error:
        reason = error.message
        dumpcap.stop(process)
    except Exception:
        log.exception("live capture %s failed", recording.live.pk)
        reason = "the recording failed: see the server log"
        dumpcap.stop(process)
    finally:
        stopper.cancel()
    await recording.finish(reason)
