"""Who decodes a recording for its viewers: tshark processes beside it, or a worker.

A recording talks to its decoders through one interface, `Decoders`. `LocalDecoders` runs the
feeds in the recording's own process; `WorkerLink` (explorer/live/link.py) tells a worker how
far the files go and lets it push the rows (BACKGROUND_WORKER with REDIS_URL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from django.conf import settings

from . import messages
from .feeds import Feeds
from .messages import FromWorker, Hello, Status
from .ring import RecordingFiles

MAX_FILTERS = 8


class FilterRefused(Exception):
    """No decoder starts for one more display filter; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_new_filter(files: RecordingFiles, filters: int) -> None:
    """Raise FilterRefused if a decoder for one more display filter may not start."""
    if files.ended:
        raise FilterRefused("the live capture has ended")
    if filters > MAX_FILTERS:
        raise FilterRefused(f"at most {MAX_FILTERS} different display filters per live capture")


class Decoders(Protocol):
    """The decoders of one recording, as the recording sees them."""

    async def start(self) -> None:
        """Start decoding the whole packet list."""

    def files_grew(self) -> None:
        """Take note that the recording wrote more packets."""

    def reading(self) -> int | None:
        """Return the oldest file a decoder still reads; None if none reads any."""

    def decoded(self) -> int:
        """Return the number of the last packet the whole list has a row of."""

    async def welcome(self, hello: Hello, status: Callable[[], Status]) -> None:
        """Answer a new viewer (or one that changed its filter) with the latest rows and the status."""

    async def push(self) -> None:
        """Push the rows decoded since the last push (every PUSH_INTERVAL and at the end)."""

    async def hear(self, message: FromWorker) -> None:
        """Take a message of the worker decoding the recording."""

    async def finish(self) -> None:
        """Wait, within bounds, for the last rows once the files ended."""


def decoders_in_worker() -> bool:
    """Tell whether workers decode live captures: only a channel layer shared with them reaches them."""
    return bool(settings.BACKGROUND_WORKER and settings.REDIS_URL)


class LocalDecoders:
    """The decoders of a recording, run in its own process."""

    def __init__(self, files: RecordingFiles, live_id: int) -> None:
        self.files = files
        self.feeds = Feeds(files, live_id, moved=self.release)

    def release(self) -> None:
        self.files.release(self.reading())

    async def start(self) -> None:
        await self.feeds.get("")

    def files_grew(self) -> None:
        self.feeds.files_grew()

    def reading(self) -> int | None:
        return self.feeds.reading()

    def decoded(self) -> int:
        return self.feeds.last_number("")

    async def welcome(self, hello: Hello, status: Callable[[], Status]) -> None:
        display_filter = hello["filter"]
        try:
            feed = await self.feeds.get(display_filter, lambda count: check_new_filter(self.files, count))
        except FilterRefused as error:
            await messages.send_refused(hello["reply_to"], error.message)
            return
        await messages.send_snapshot(hello["reply_to"], display_filter, feed.snapshot(), status())

    async def push(self) -> None:
        await self.feeds.push()

    async def hear(self, message: FromWorker) -> None:
        """Ignore it: no worker decodes this recording."""

    async def finish(self) -> None:
        await self.feeds.finish()
