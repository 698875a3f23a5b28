"""The recording's side of a worker decoding it (BACKGROUND_WORKER with REDIS_URL).

A worker that claimed the capture's lease in the database sends its channel (`live.attach`).
The recording answers with its files, the display filters viewers asked for and the rows
pushed so far (`live.files`), then tells it at every push how far the files go. The worker
reports the last row it pushed for each filter and the file its slowest decoder reads
(`live.decoded`), and says when it pushed the last rows after the end (`live.decoder_done`).

A worker unheard of for the lease's length is sent no more reports until heard again: it may
only be slow (a loaded machine), and it keeps the files it still has to read. If it died, the
next worker to claim the lapsed lease attaches in its place, decodes the files from the start
again and pushes only the rows after those already pushed. The worker's side is
explorer/live/worker.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from django.conf import settings

from . import messages
from .decoders import FilterRefused, check_new_filter
from .feeds import DECODER_DRAIN_SECONDS
from .messages import FromWorker, Hello, SegmentReport, Status
from .ring import RecordingFiles, Segment

log = logging.getLogger(__name__)


class WorkerLink:
    """What a recording knows of the worker that decodes it; its Decoders."""

    def __init__(self, files: RecordingFiles, live_id: int) -> None:
        self.files = files
        self.live_id = live_id
        self.channel = ""
        self.heard_at = 0.0
        # Display filters viewers asked for, which every worker that takes over decodes.
        self.filters: list[str] = [""]
        self.decoded_through: dict[str, int] = {}
        self.worker_reading = 0  # the file number the worker's slowest decoder reads
        self.done = asyncio.Event()  # the worker pushed the last rows, after the end
        self.attached_once = False

    async def start(self) -> None:
        """Start nothing: a worker claims the capture from the database."""

    def files_grew(self) -> None:
        """Wait for the next push: the worker hears of the files then."""

    def reading(self) -> int | None:
        return self.worker_reading if self.channel else None

    def decoded(self) -> int:
        return self.decoded_through.get("", 0)

    async def welcome(self, hello: Hello, status: Callable[[], Status]) -> None:
        """Have the worker answer a new viewer, once the recording has taken its filter."""
        display_filter = hello["filter"]
        if display_filter not in self.filters:
            try:
                check_new_filter(self.files, len(self.filters))
            except FilterRefused as error:
                await messages.send_refused(hello["reply_to"], error.message)
                return
            self.filters.append(display_filter)
        if self.channel:
            await messages.forward_hello(self.channel, hello, status())
        else:
            # No worker holds the capture yet: its rows come with the pushes once one does.
            await messages.send_snapshot(hello["reply_to"], display_filter, [], status())

    async def push(self) -> None:
        """Tell the worker how far the files go, while it is heard from."""
        if self.channel and not self.silent():
            await messages.send_files(self.channel, self.files_report())

    async def hear(self, message: FromWorker) -> None:
        if message["type"] == "live.attach":
            # The worker holds the capture's lease now: any earlier one lost it.
            self.attach(message["decoder"])
            answer = self.files_report()
            answer["filters"], answer["decoded"] = self.filters, self.decoded_through
            await messages.send_files(self.channel, answer)
        elif not self.heard(message):
            return  # from a worker that lost the capture
        elif message["type"] == "live.decoded":
            self.decoded_through.update({str(key): int(value) for key, value in message["decoded"].items()})
            self.worker_reading = int(message["reading"])
            self.files.release(self.reading())
        elif message["type"] == "live.decoder_done":
            self.done.set()

    async def finish(self) -> None:
        """Give the workers time to decode the end of the files and push the last rows.

        Once a worker has decoded the capture, the recording waits for one to finish, even if
        that one died: the next worker takes over once its lease lapses. With no worker at all
        (none runs), the capture is stored at once.
        """
        if not self.attached_once:
            return
        # Meanwhile the recording's pushes go on telling the worker that the files ended.
        try:
            await asyncio.wait_for(self.done.wait(), DECODER_DRAIN_SECONDS)
        except TimeoutError:
            log.warning("no worker finished decoding live capture %s", self.live_id)

    def attach(self, channel: str) -> None:
        self.channel = channel
        # A worker taking over reads from the first file still kept: none is let go for the
        # position of the one it replaces.
        self.worker_reading = 0
        self.attached_once = True
        self.heard_at = time.monotonic()
        self.done.clear()

    def heard(self, message: FromWorker) -> bool:
        """Tell whether the message is from the current worker, noting that it was heard from."""
        if not self.channel or message.get("decoder") != self.channel:
            return False
        self.heard_at = time.monotonic()
        return True

    def silent(self) -> bool:
        lease = settings.LIVE_DECODER_LEASE_SECONDS
        return bool(self.channel) and time.monotonic() - self.heard_at > lease

    def files_report(self) -> messages.Files:
        """Where the files are, how far they are written, and whether more will come."""
        return {
            "type": "live.files",
            "segments": described(self.files.segments),
            "retired": described(self.files.retired),
            "ended": self.files.ended,
        }


def described(segments: list[Segment]) -> list[SegmentReport]:
    # Only the name: the worker finds the file in its own view of the shared capture folder.
    return [[segment.number, segment.path.name, segment.skip, segment.size] for segment in segments]
