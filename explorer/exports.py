"""Exports of displayed packets as jobs: queued in the database, run by whoever claims them.

With BACKGROUND_WORKER=1, `manage.py run_worker` runs them; otherwise the server process that
was asked starts it at once, apart from the request (a download that is given up on does not
stop the export). Whoever runs a job holds a lease on it, renewed while it runs. If that
process dies, the lease lapses and the job is claimed again: by the next worker to look, or by
a server process asked about it. A job that has been claimed MAX_ATTEMPTS times without
finishing (it keeps killing its process) fails with a message instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.http import Http404
from django.utils import timezone

from . import annotations as notes
from . import marks
from .engine import export as engine_export
from .engine.errors import EngineError
from .models import Capture, ExportJob

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
WAIT_POLL_SECONDS = 0.2
State = ExportJob.State

# Jobs this process runs (the loop keeps only weak references to tasks).
_running: set[asyncio.Task[None]] = set()


async def queue(
    capture: Capture,
    user: Any,
    filter_text: str,
    first: int | None,
    last: int | None,
    marked_only: bool,
    annotations: bool,
) -> ExportJob:
    """Queue an export of the capture's displayed packets; start it here unless a worker will.

    A bad filter or frame range is refused at once (EngineError), before anything is queued.
    """
    await engine_export.check_request(filter_text, first, last)
    only = await marks.marked(capture) if marked_only else None
    job = await ExportJob.objects.acreate(
        capture=capture,
        requested_by=user if getattr(user, "is_authenticated", False) else None,
        filter=filter_text.strip(),
        first=first,
        last=last,
        only=only,
        annotations=annotations,
    )
    if not settings.BACKGROUND_WORKER:
        start_here(job.pk)
    return job


def start_here(job_id: int, claimed: bool = False) -> None:
    """Run the job in this process (claiming it first unless claimed), apart from the request."""
    work = run(job_id) if claimed else run_if_claimed(job_id)
    # A context of its own, as for summaries: not the request's, whose executor goes away.
    task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
    _running.add(task)
    task.add_done_callback(_running.discard)


def claimable() -> Q:
    """Jobs nobody holds: queued ones, and running ones whose runner let the lease lapse."""
    lapsed = Q(claimed_until__isnull=True) | Q(claimed_until__lt=timezone.now())
    return Q(state__in=[State.QUEUED, State.RUNNING]) & lapsed


async def claim(job_id: int) -> bool:
    """Take the job for one lease; False if someone else holds it or it has ended."""
    taken = await ExportJob.objects.filter(claimable(), pk=job_id).aupdate(
        state=State.RUNNING, claimed_until=timezone.now() + _lease(), attempts=F("attempts") + 1
    )
    return taken == 1


async def run_if_claimed(job_id: int) -> None:
    if await claim(job_id):
        await run(job_id)


async def run_next() -> int | None:
    """Claim the oldest job nobody holds and run it; return its id (None: nothing to do)."""
    while True:
        job_id = await ExportJob.objects.filter(claimable()).values_list("pk", flat=True).afirst()
        if job_id is None:
            return None
        if await claim(job_id):
            await run(job_id)
            return job_id
        # Another process took it between the two queries: look again.


async def run(job_id: int) -> None:
    """Run a job this process has claimed, and record how it ended."""
    try:
        job = await ExportJob.objects.select_related("capture").aget(pk=job_id)
    except ExportJob.DoesNotExist:
        return  # its capture was deleted meanwhile
    if job.attempts > MAX_ATTEMPTS:
        message = f"the export stopped {MAX_ATTEMPTS} times before it finished; it was given up"
        await _finish(job_id, State.FAILED, error=message)
        return
    renewing = asyncio.create_task(_renew(job_id))
    try:
        added = await notes.for_export(job.capture) if job.annotations else None
        only = set(job.only) if job.only is not None else None
        made = await engine_export.export_packets(
            job.capture.path, job.filter, job.first, job.last, only, added
        )
        final = made.with_name(f"job-{job.pk}.pcapng")
        os.replace(made, final)
    except EngineError as error:
        await _finish(job_id, State.FAILED, error=error.message[:500])
        return
    finally:
        renewing.cancel()
    await _finish(job_id, State.DONE, stored_as=final.name, size=final.stat().st_size)
    log.info("export %s of capture %s: %d bytes", job_id, job.capture_id, final.stat().st_size)


def _lease() -> timedelta:
    return timedelta(seconds=settings.EXPORT_LEASE_SECONDS)


async def _renew(job_id: int) -> None:
    while True:
        await asyncio.sleep(settings.EXPORT_LEASE_SECONDS / 4)
        await ExportJob.objects.filter(pk=job_id, state=State.RUNNING).aupdate(
            claimed_until=timezone.now() + _lease()
        )


async def _finish(job_id: int, state: str, **fields: object) -> None:
    await ExportJob.objects.filter(pk=job_id).aupdate(
        state=state, claimed_until=None, finished_at=timezone.now(), **fields
    )


async def current_of(capture: Capture, export_id: int) -> ExportJob:
    """Return one of the capture's exports as it is now (see current); Http404 if it has none such."""
    try:
        job = await ExportJob.objects.aget(pk=export_id, capture=capture)
    except ExportJob.DoesNotExist:
        raise Http404("no such export of this capture") from None
    return await current(job)


async def current(job: ExportJob) -> ExportJob:
    """Return the job as it is now; without a worker, take over one whose runner went away."""
    if not settings.BACKGROUND_WORKER and await claim(job.pk):
        start_here(job.pk, claimed=True)
    return await ExportJob.objects.aget(pk=job.pk)


async def finished(job: ExportJob, timeout: float) -> ExportJob:
    """Wait until the job is done or failed (or timeout seconds have passed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await current(job)
        if job.state in (State.DONE, State.FAILED) or asyncio.get_running_loop().time() > deadline:
            return job
        await asyncio.sleep(WAIT_POLL_SECONDS)


async def finished_file(job: ExportJob, timeout: float) -> Path | None:
    """Wait for the job's file (timeout seconds at most): None if it is still running.

    Raise EngineError with the job's message if it failed.
    """
    job = await finished(job, timeout)
    if job.state == State.FAILED:
        raise EngineError(job.error)
    return file_of(job)


def file_of(job: ExportJob) -> Path | None:
    """Return the finished export's file, or None once it was pruned (after an hour)."""
    if job.state != State.DONE or not job.stored_as:
        return None
    path = engine_export.exports_dir() / job.stored_as
    return path if path.is_file() else None


def file_name(capture: Capture, holding: str) -> str:
    """Return the name of a file made from the capture: its name's stem, then what it holds."""
    # Both extensions of a compressed capture (.pcap.gz) go.
    stem = Path(capture.name).stem
    stem = (Path(stem).stem if capture.name.endswith(".gz") else stem) or "capture"
    return f"{stem}-{holding}"


def frame_number(text: str, name: str) -> int | None:
    """Return a frame number typed in a form, None when left blank; raise EngineError otherwise."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise EngineError(f"the {name} frame must be a frame number")
    return int(text)


def chosen_frames(choice: str, first: str, last: str) -> tuple[int | None, int | None, bool]:
    """Return the range of frames and whether only the marked ones, as an export form chose them.

    choice is "all" (the displayed frames), "marked" (the marked ones among them), or anything
    else for the displayed frames of the range that first and last give (blank: no bound).
    Frame numbers out of range are refused by `queue`.
    """
    if choice in ("all", "marked"):
        return None, None, choice == "marked"
    return frame_number(first, "first"), frame_number(last, "last"), False
