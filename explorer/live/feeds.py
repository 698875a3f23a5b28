"""Decoders fed from a recording's files: one tshark per display filter, and the rows they print.

The decoder reads the recording's files, not the bytes as they are received: recording never
waits for a slow decoder (which would make dumpcap drop packets), the bytes not yet decoded
stay on disk rather than in memory, and a decoder started late reads from the start. The
same feeds run in the recording's process, or in the worker that decodes it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import IO

from ..engine.livedecode import Decoder
from . import messages
from .messages import Row
from .ring import Files

log = logging.getLogger(__name__)

# Rows a viewer joining late receives at once (the latest ones).
RECENT_ROWS = 500
MAX_ROWS_PER_MESSAGE = 1000
DECODER_DRAIN_SECONDS = 60
PUMP_BLOCK = 1024 * 1024


def nothing() -> None:
    pass


class Feed:
    """One decoder of the recording and the rows it printed that viewers have not received yet."""

    def __init__(
        self,
        files: Files,
        live_id: int,
        display_filter: str,
        pushed_through: int = 0,
        moved: Callable[[], None] = nothing,
    ) -> None:
        self.files = files
        self.live_id = live_id
        self.display_filter = display_filter
        self.decoder = Decoder(display_filter)
        self.pending: list[Row] = []
        self.recent: deque[Row] = deque(maxlen=RECENT_ROWS)
        # Rows up to this number were pushed by a decoder before this one (a worker that died):
        # decoded again for the recent rows, not pushed twice.
        self.pushed_through = pushed_through
        # Called when the decoder goes on to another file: the ones before may be let go.
        self.moved = moved
        self.last_number = 0
        self.reader: asyncio.Task[None] | None = None
        self.pump_task: asyncio.Task[None] | None = None
        self.more = asyncio.Event()  # set when the file grew or the recording ended
        self.number = 0  # of the file the decoder reads

    async def start(self) -> None:
        await self.decoder.start()
        self.reader = asyncio.create_task(self.read(), context=contextvars.Context())
        self.pump_task = asyncio.create_task(self.pump(), context=contextvars.Context())

    async def pump(self) -> None:
        """Write the files to the decoder as they grow; close its input once the recording ended."""
        files = self.files
        number, offset = 0, 0
        handle: IO[bytes] | None = None
        try:
            while True:
                segment = files.segment_from(number)
                if segment.number != number or handle is None:
                    # The first file, the next one, or the oldest one left (the others were
                    # dropped from the ring before the decoder reached them).
                    if handle is not None:
                        handle.close()
                    number, offset = segment.number, segment.skip
                    self.number = number
                    self.moved()
                    try:
                        handle = open(segment.path, "rb")  # noqa: SIM115 - closed here
                    except FileNotFoundError:
                        handle = None
                        if segment is files.last or files.ended:
                            break  # stored or removed: nothing more to read
                        number += 1  # dropped from the ring meanwhile: the next one
                        continue
                if offset < segment.size:
                    handle.seek(offset)
                    block = await asyncio.to_thread(handle.read, min(PUMP_BLOCK, segment.size - offset))
                    if not block:
                        break
                    offset += len(block)
                    await self.decoder.write(block)
                elif segment.number < files.last.number:
                    number += 1
                    handle.close()
                    handle = None
                elif files.ended:
                    break
                else:
                    self.more.clear()
                    await self.more.wait()
        finally:
            if handle is not None:
                handle.close()
        await self.decoder.close_input()

    async def read(self) -> None:
        async for row in self.decoder.rows():
            self.last_number = row.number
            cells = asdict(row)
            if row.number > self.pushed_through:
                self.pending.append(cells)
            self.recent.append(cells)

    def snapshot(self) -> list[Row]:
        """Return the latest rows for a new viewer: those still pending reach it with the next push."""
        recent = list(self.recent)
        return recent[: max(0, len(recent) - len(self.pending))]

    async def push(self) -> None:
        """Send the rows decoded since the last push to the viewers of this display filter."""
        while self.pending:
            rows, self.pending = self.pending[:MAX_ROWS_PER_MESSAGE], self.pending[MAX_ROWS_PER_MESSAGE:]
            await messages.push_rows(self.live_id, self.display_filter, rows)

    async def finish(self) -> None:
        """Let the decoder read the rest of the file and print its last rows (the recording ended)."""
        self.more.set()
        try:
            async with asyncio.timeout(DECODER_DRAIN_SECONDS):
                for task in (self.pump_task, self.reader):
                    if task is not None:
                        await asyncio.shield(task)
        except TimeoutError:
            log.warning("decoder of live capture %s did not finish", self.live_id)
            for task in (self.pump_task, self.reader):
                if task is not None:
                    task.cancel()
            await self.decoder.kill()


class Feeds:
    """The feeds of one live capture in this process, by display filter."""

    def __init__(self, files: Files, live_id: int, moved: Callable[[], None] = nothing) -> None:
        self.files = files
        self.live_id = live_id
        self.moved = moved
        self.by_filter: dict[str, Feed] = {}
        # Rows up to these numbers were pushed by the decoders before these (a worker that died).
        self.pushed: dict[str, int] = {}
        self.adding = asyncio.Lock()  # two viewers asking for one new filter start one decoder

    def __len__(self) -> int:
        return len(self.by_filter)

    def __contains__(self, display_filter: str) -> bool:
        return display_filter in self.by_filter

    async def get(self, display_filter: str, check: Callable[[int], None] = lambda count: None) -> Feed:
        """Return the feed of a display filter, starting it with every packet so far.

        A new one is started once `check`, given how many feeds there are, raised nothing.
        """
        async with self.adding:
            feed = self.by_filter.get(display_filter)
            if feed is None:
                check(len(self.by_filter))
                pushed = self.pushed.get(display_filter, 0)
                feed = Feed(self.files, self.live_id, display_filter, pushed, self.moved)
                await feed.start()
                self.by_filter[display_filter] = feed
            return feed

    def files_grew(self) -> None:
        for feed in list(self.by_filter.values()):
            feed.more.set()

    def reading(self) -> int | None:
        """Return the oldest file a decoder reads; None if there is no decoder."""
        return min((feed.number for feed in self.by_filter.values()), default=None)

    def decoded(self) -> dict[str, int]:
        """Return the last row pushed of each display filter, by any decoder."""
        return {key: max(feed.last_number, feed.pushed_through) for key, feed in self.by_filter.items()}

    def last_number(self, display_filter: str) -> int:
        """Return the number of the last row decoded for a display filter (0 for none yet)."""
        feed = self.by_filter.get(display_filter)
        return feed.last_number if feed is not None else 0

    async def push(self) -> None:
        """Send the rows decoded since the last push to their viewers."""
        for feed in list(self.by_filter.values()):
            await feed.push()

    async def finish(self) -> None:
        """Let every decoder print its last rows; one that fails loses rows of the view, never packets."""
        for feed in list(self.by_filter.values()):
            try:
                await feed.finish()
            except Exception:
                log.exception("decoder of live capture %s failed", self.live_id)

    async def kill(self) -> None:
        for feed in self.by_filter.values():
            await feed.decoder.kill()
