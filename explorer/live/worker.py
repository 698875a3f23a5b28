"""Live captures decoded in the background worker (BACKGROUND_WORKER=1 with REDIS_URL).

The server process that receives a live capture's packets then only records them
(explorer/live/recording.py); a worker runs the tshark decoders and pushes the rows to the
viewers. The queue is the live captures table: a running capture whose decoder lease is free,
or has lapsed, waits for a worker. The worker that claims it talks to the recording as
explorer/live/link.py describes, and decodes the files as they grow, one tshark per filter.

A worker that dies stops renewing its lease. The recording drops it, and the next worker to
look decodes the files from the start again, pushing only the rows after those already pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ..models import LiveCapture
from . import messages, staging
from .feeds import Feeds
from .messages import SegmentReport, Status
from .recording import PUSH_INTERVAL
from .ring import Files, Segment

log = logging.getLogger(__name__)

# A recording answers at once; this long without an answer, it is gone or badly stuck.
ATTACH_TIMEOUT = 10.0
# Recordings that never answered this often are left alone by this worker (their server died
# and left them running in the table).
MAX_UNANSWERED = 3


class ReportedFiles(Files):
    """A recording's files as the recording last reported them; it removes them itself."""

    def __init__(self) -> None:
        super().__init__(Segment(0, Path()))

    def update(self, report: messages.Files) -> None:
        def segments(described: list[SegmentReport]) -> list[Segment]:
            return [
                Segment(int(number), staging.named(str(name)), int(skip), int(size))
                for number, name, skip, size in described
            ]

        self.segments = segments(report["segments"])
        self.retired = segments(report["retired"])
        self.ended = bool(report["ended"])


class Decoding:
    """This worker decoding one live capture, from its claim until the recording ends or is lost."""

    def __init__(self, live_id: int, control: str, channel: str) -> None:
        self.live_id = live_id
        self.control = control  # the recording's channel
        self.channel = channel  # this decoding's channel, also its lease in the database
        self.files = ReportedFiles()
        self.feeds = Feeds(self.files, live_id)
        self.heard_at = time.monotonic()
        self.attached: asyncio.Future[messages.Files] = asyncio.get_running_loop().create_future()
        self.ended = asyncio.Event()
        self.lost = asyncio.Event()  # the lease went to another worker, or the recording went silent
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> bool:
        """Decode until the recording ends; return False if the recording never answered."""
        listener = asyncio.create_task(self.listen())
        try:
            await messages.send_attach(self.control, self.channel)
            try:
                answer = await asyncio.wait_for(asyncio.shield(self.attached), ATTACH_TIMEOUT)
            except TimeoutError:
                log.warning("the recording of live capture %s did not answer", self.live_id)
                return False
            for display_filter in answer.get("filters", [""]):
                await self.feeds.get(str(display_filter))
            for work in (self.push(), self.keep_lease()):
                self.tasks.add(asyncio.create_task(work))
            ended = asyncio.create_task(self.ended.wait())
            lost = asyncio.create_task(self.lost.wait())
            await asyncio.wait({ended, lost}, return_when=asyncio.FIRST_COMPLETED)
            for waiting in (ended, lost):
                waiting.cancel()
            if not self.lost.is_set():
                await self.finish()
        finally:
            for task in self.tasks:
                task.cancel()
            await messages.stop_listening(listener, self.channel)
            await self.feeds.kill()
        return True

    async def listen(self) -> None:
        async for message in messages.worker_inbox(self.channel):
            self.heard_at = time.monotonic()
            if message["type"] == "live.files":
                self.files.update(message)
                if not self.attached.done() and "decoded" in message:
                    # The recording's answer to live.attach, with what earlier workers did.
                    self.feeds.pushed = {str(key): int(value) for key, value in message["decoded"].items()}
                    self.attached.set_result(message)
                self.feeds.files_grew()
                if self.files.ended:
                    self.ended.set()
            elif message["type"] == "live.hello":
                welcome = self.welcome(message["reply_to"], message["filter"], message["status"])
                task = asyncio.create_task(welcome)
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def welcome(self, reply_to: str, display_filter: str, status: Status) -> None:
        """Send a viewer the latest rows of its filter (the recording checked and sent the filter)."""
        feed = await self.feeds.get(display_filter)
        await messages.send_snapshot(reply_to, display_filter, feed.snapshot(), status)

    async def push(self) -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL)
            await self.push_pending()

    async def push_pending(self) -> None:
        """Push the rows decoded since the last push, then tell the recording how far they go."""
        await self.feeds.push()
        reading = self.feeds.reading()
        await messages.send_decoded(self.control, self.channel, self.feeds.decoded(), reading or 0)

    async def keep_lease(self) -> None:
        """Renew the lease while the recording is heard from; give up when either is lost."""
        lease = settings.LIVE_DECODER_LEASE_SECONDS
        while True:
            await asyncio.sleep(lease / 3)
            if time.monotonic() - self.heard_at > lease:
                log.warning("the recording of live capture %s went silent", self.live_id)
                break
            renewed = await LiveCapture.objects.filter(
                pk=self.live_id, decoder_channel=self.channel, state=LiveCapture.State.RUNNING
            ).aupdate(decoder_until=timezone.now() + timedelta(seconds=lease))
            if not renewed:
                break  # another worker took it over, or the capture ended meanwhile
        self.lost.set()

    async def finish(self) -> None:
        """Decode the rest of the files, push the last rows and tell the recording."""
        await self.feeds.finish()
        await self.push_pending()
        await messages.send_decoder_done(self.control, self.channel)


def claimable() -> Q:
    """Running live captures no worker holds: new ones, and those whose worker let the lease lapse."""
    lapsed = Q(decoder_until__isnull=True) | Q(decoder_until__lt=timezone.now())
    return Q(state=LiveCapture.State.RUNNING) & ~Q(control_channel="") & lapsed


async def claim_next(unanswered: dict[int, int]) -> Decoding | None:
    """Claim the oldest live capture nobody decodes; None if there is none."""
    given_up = [live_id for live_id, count in unanswered.items() if count >= MAX_UNANSWERED]
    waiting = LiveCapture.objects.filter(claimable()).exclude(pk__in=given_up).order_by("pk")
    async for live_id, control in waiting.values_list("pk", "control_channel"):
        channel = await messages.new_decoder_channel()
        lease = timedelta(seconds=settings.LIVE_DECODER_LEASE_SECONDS)
        taken = await LiveCapture.objects.filter(claimable(), pk=live_id).aupdate(
            decoder_channel=channel, decoder_until=timezone.now() + lease
        )
        if taken:
            return Decoding(live_id, control, channel)
    return None


async def serve(poll_seconds: float) -> None:
    """Claim live captures as they start, and decode each until it ends; forever."""
    running: set[asyncio.Task[None]] = set()
    unanswered: dict[int, int] = {}

    async def decode(decoding: Decoding) -> None:
        try:
            if await decoding.run():
                unanswered.pop(decoding.live_id, None)
            else:
                unanswered[decoding.live_id] = unanswered.get(decoding.live_id, 0) + 1
        except Exception:
            log.exception("decoding live capture %s failed", decoding.live_id)

    while True:
        try:
            decoding = await claim_next(unanswered)
        except Exception:
            log.exception("could not look for live captures to decode")
            decoding = None
        if decoding is None:
            await asyncio.sleep(poll_seconds)
            continue
        log.info("decoding live capture %s", decoding.live_id)
        # Each in a context of its own: nothing of one decoding's database work is another's.
        task = asyncio.create_task(decode(decoding), context=contextvars.Context())
        running.add(task)
        task.add_done_callback(running.discard)


def start_thread(poll_seconds: float) -> threading.Thread:
    """Decode live captures beside the worker's other work, in a thread with its own event loop."""

    def run() -> None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(poll_seconds))

    thread = threading.Thread(target=run, name="live-decoders", daemon=True)
    thread.start()
    return thread
