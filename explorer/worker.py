"""The background worker: summaries and exports in a process of its own, fed from the database.

With BACKGROUND_WORKER=1 the server processes leave search summaries and exports to
`manage.py run_worker`. For summaries the queue is the captures table itself: a capture whose
protocols are empty has no summary yet (an upload, or a key log attached since), so a stopped
server or worker loses nothing; the next worker to start picks the capture up. On PostgreSQL
several workers share the work: each locks the capture it summarizes and the others skip it.
Exports are rows of their own, claimed for a lease (explorer/exports.py), so an export whose
worker died is run again by the next. With REDIS_URL too, live captures are decoded here, in a
thread of their own (explorer/live/worker.py), also under leases.
"""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import async_to_sync
from django.db import connection, transaction

from . import annotations as notes
from . import exports, housekeeping
from .engine import summary as engine_summary
from .engine.errors import EngineError
from .engine.sessions import engine
from .live import worker as live_worker
from .live.decoders import decoders_in_worker
from .models import Capture
from .search import words_field

log = logging.getLogger(__name__)


def summarize_next(failed: set[int]) -> int | None:
    """Summarize the oldest capture without a summary that no other worker holds; return its id."""
    with transaction.atomic():
        waiting = Capture.objects.filter(protocols="").exclude(pk__in=failed).order_by("pk")
        if connection.features.has_select_for_update_skip_locked:
            # The row stays locked while the summary runs: a worker that dies releases it.
            waiting = waiting.select_for_update(skip_locked=True, of=("self",))
        capture = waiting.first()
        if capture is None:
            return None
        try:
            found = asyncio.run(engine_summary.summarize(capture.path))
        except EngineError as error:
            # Tried again when the worker restarts; an unreadable file would otherwise be retried forever.
            log.warning("no summary of capture %s: %s", capture.pk, error.message)
            failed.add(capture.pk)
            return capture.pk
        Capture.objects.filter(pk=capture.pk).update(
            hosts=words_field(found.hosts), protocols=words_field(found.protocols)
        )
    # The file's own comments become annotations, which the search looks through.
    async_to_sync(notes.read_file_comments)(capture)
    return capture.pk


# How often the worker removes files that processes which died left behind.
SWEEP_EVERY_SECONDS = 3600


def run(poll_seconds: float, once: bool = False) -> None:
    """Export and summarize captures as they come, exports first; with once, stop when none is left."""
    failed: set[int] = set()
    swept_at = -float("inf")
    if decoders_in_worker() and not once:
        live_worker.start_thread(poll_seconds)
    with asyncio.Runner() as runner:
        while True:
            started = time.monotonic()
            if started - swept_at > SWEEP_EVERY_SECONDS:
                housekeeping.sweep()
                swept_at = started
            # Someone waits for an export; a summary only makes a capture findable sooner.
            exported = runner.run(exports.run_next())
            if exported is not None:
                log.info("ran export %s in %.1f s", exported, time.monotonic() - started)
                # A worker holds no engine session between jobs (ENGINE_URL: none at all).
                runner.run(_close_engine())
                continue
            if not _summarize_or_wait(failed, poll_seconds, once):
                return


async def _close_engine() -> None:
    await engine().close()


def _summarize_or_wait(failed: set[int], poll_seconds: float, once: bool) -> bool:
    """Summarize the next capture, or wait for work; return False when once and none is left."""
    started = time.monotonic()
    done = summarize_next(failed)
    if done is not None:
        log.info("summarized capture %s in %.1f s", done, time.monotonic() - started)
        return True
    if once:
        return False
    time.sleep(poll_seconds)
    return True
