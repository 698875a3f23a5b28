"""Live captures: record packets as they arrive, push their rows to viewers, store them when done.

One Recording runs in the server process that receives the packets (dumpcap's output for a
server interface, the request body for a remote stream). It appends whole packets to a staging
file, feeds them to tshark decoders (one for the whole packet list, one per display filter a
viewer asked for), and pushes the rows in batches to the channel-layer group of the live
capture, so that viewers connected to any server process (through Redis) see them. Requests
for it (stop, "hello" from a new viewer, a display filter) reach it on its own channel, whose
name is kept in the database.

With BACKGROUND_WORKER and REDIS_URL the decoders run in a worker instead, which reads the
same files as they grow and pushes the rows (explorer/livedecoding.py); the recording then
tells it how far the files go.

When the packets end (stop, a limit, the sender gone) the file, cut after the last whole
packet, is stored as an ordinary capture.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, cast

from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models import Q
from django.utils import timezone

from . import captures, quotas
from .engine import dumpcap
from .engine.errors import NotACapture
from .engine.livedecode import Decoder
from .engine.packets import PacketRow
from .models import LiveCapture, Visibility
from .uploads import StagedFile, staging_dir

log = logging.getLogger(__name__)

# Rows reach viewers in batches this often: often enough to look immediate, seldom enough
# that a fast capture does not become one channel-layer message per packet.
PUSH_INTERVAL = 0.15
MAX_ROWS_PER_MESSAGE = 1000
# Rows a viewer joining late receives at once (the latest ones).
RECENT_ROWS = 500
MAX_FILTERS = 8
# A block or record this large is not a packet of a capture stream.
MAX_BLOCK = 16 * 1024 * 1024
DECODER_DRAIN_SECONDS = 60
PUMP_BLOCK = 1024 * 1024

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
PCAPNG_PACKET_BLOCKS = {2, 3, 6}  # Packet, Simple Packet, Enhanced Packet
NOT_A_CAPTURE = "not a pcap or pcapng stream: send what `tcpdump -w -` or `dumpcap -w -` writes"


class NotAStream(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PacketStream:
    """Split a pcap or pcapng byte stream into whole records/blocks, counting packets."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.packets = 0
        self.header_read = False
        self.pcapng = False
        self.endian = "<"
        self.damage: NotAStream | None = None
        # The file header (pcap) or every block that is not a packet (pcapng): what a file
        # needs before packets of this stream, when they are split into several files.
        self.preamble = bytearray()
        # Of the bytes the last call returned: where each record or block starts, and where a
        # file may be split at the earliest (after the last header block among them).
        self.starts: list[int] = []
        self.earliest_split = 0

    def feed(self, data: bytes, room: int | None = None) -> bytes:
        """Take bytes received; return the whole records and blocks they complete, in order.

        With room, a record that starts more than room bytes in is left unread, and so are
        those after it: the capture they would go to is full.
        """
        if self.damage is not None:
            raise self.damage
        self.pending += data
        self.starts, self.earliest_split = [], 0
        complete = 0
        if not self.header_read:
            complete = self._header()
            if not self.header_read:
                return b""
            self.preamble += self.pending[:complete]
            self.earliest_split = complete
        try:
            while room is None or complete <= max(room, self.earliest_split):
                size = self._next_size(complete)
                if size is None or complete + size > len(self.pending):
                    break
                self.starts.append(complete)
                if self.pcapng and self._kind(complete) not in PCAPNG_PACKET_BLOCKS:
                    self.preamble += self.pending[complete : complete + size]
                    self.earliest_split = complete + size
                complete += size
        except NotAStream as error:
            # The whole packets before the damage are returned; the next call raises.
            self.damage = error
        out = bytes(self.pending[:complete])
        del self.pending[:complete]
        return out

    def _header(self) -> int:
        if len(self.pending) < 4:
            return 0
        magic = bytes(self.pending[:4])
        if magic == PCAPNG_MAGIC:
            if len(self.pending) < 12:
                return 0
            order = bytes(self.pending[8:12])
            if order not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                raise NotAStream(NOT_A_CAPTURE)
            self.pcapng, self.header_read = True, True
            self.endian = "<" if order == b"\x4d\x3c\x2b\x1a" else ">"
            return 0  # the section header is a block like the others
        if magic not in PCAP_MAGICS:
            raise NotAStream(NOT_A_CAPTURE)
        if len(self.pending) < 24:
            return 0
        self.endian, self.header_read = PCAP_MAGICS[magic], True
        return 24

    def _kind(self, offset: int) -> int:
        return int(struct.unpack_from(self.endian + "I", self.pending, offset)[0])

    def _next_size(self, offset: int) -> int | None:
        if self.pcapng:
            if len(self.pending) - offset < 8:
                return None
            kind, size = struct.unpack_from(self.endian + "II", self.pending, offset)
            if kind == 0x0A0D0D0A and len(self.pending) - offset >= 12:
                # A new section may change the byte order.
                order = bytes(self.pending[offset + 8 : offset + 12])
                self.endian = "<" if order == b"\x4d\x3c\x2b\x1a" else ">"
                size = struct.unpack_from(self.endian + "I", self.pending, offset + 4)[0]
            if size < 12 or size % 4 or size > MAX_BLOCK:
                raise NotAStream(f"damaged pcapng stream: a block of {size} bytes")
            if kind in PCAPNG_PACKET_BLOCKS and len(self.pending) - offset >= size:
                self.packets += 1
            return int(size)
        if len(self.pending) - offset < 16:
            return None
        captured = struct.unpack_from(self.endian + "I", self.pending, offset + 8)[0]
        if captured > MAX_BLOCK:
            raise NotAStream(f"damaged pcap stream: a packet of {captured} bytes")
        if len(self.pending) - offset >= 16 + captured:
            self.packets += 1
        return 16 + int(captured)


def group_name(live_id: int) -> str:
    return f"livecapture-{live_id}"


def filter_group_name(live_id: int, display_filter: str) -> str:
    digest = hashlib.sha256(display_filter.encode()).hexdigest()[:24]
    return f"livecapture-{live_id}-{digest}"


class Files:
    """The files of a recording as its decoders read them: the recording itself, or a worker's
    copy of what the recording reports (explorer/livedecoding.py)."""

    def __init__(self, first: Segment) -> None:
        self.segments = [first]
        # Files dropped from the ring that a decoder has not read to the end yet.
        self.retired: list[Segment] = []
        self.ended = False  # no more bytes: decoders read to the end of the files and exit

    def segment_from(self, number: int) -> Segment:
        """Return the file of this number, or the oldest one left when it was removed."""
        for segment in [*self.retired, *self.segments]:
            if segment.number >= number:
                return segment
        return self.segments[-1]

    def release(self) -> None:
        """Let go of the files dropped from the ring that no decoder has still to read."""


class Feed:
    """One decoder of the recording and the rows it printed that viewers have not received yet.

    The decoder reads the recording's file, not the bytes as they are received: recording
    never waits for a slow decoder (which would make dumpcap drop packets), the bytes not yet
    decoded stay on disk rather than in memory, and a decoder started late reads from the start.
    """

    def __init__(self, files: Files, live_id: int, display_filter: str, pushed_through: int = 0) -> None:
        self.files = files
        self.live_id = live_id
        self.display_filter = display_filter
        self.decoder = Decoder(display_filter)
        self.pending: list[dict[str, Any]] = []
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ROWS)
        # Rows up to this number were pushed by a decoder before this one (a worker that died):
        # decoded again for the recent rows, not pushed twice.
        self.pushed_through = pushed_through
        self.last_number = 0
        self.reader: asyncio.Task[None] | None = None
        self.pump_task: asyncio.Task[None] | None = None
        self.more = asyncio.Event()  # set when the file grew or the recording ended
        self.number = 0  # of the file the decoder reads
        self.offset = 0
        self.group = filter_group_name(live_id, display_filter) if display_filter else group_name(live_id)

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
                    files.release()
                    try:
                        handle = open(segment.path, "rb")  # noqa: SIM115 - closed here
                    except FileNotFoundError:
                        handle = None
                        if segment is files.segments[-1] or files.ended:
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
                elif segment.number < files.segments[-1].number:
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
            cells = row_cells(row)
            if row.number > self.pushed_through:
                self.pending.append(cells)
            self.recent.append(cells)

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


def _append(file: IO[bytes], data: bytes) -> None:
    """Write and flush, so that the decoders reading the file see the bytes at once."""
    file.write(data)
    file.flush()


def _size_and_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(PUMP_BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def row_cells(row: PacketRow) -> dict[str, Any]:
    return asdict(row)


@dataclass
class Segment:
    """One file of a recording: the only one, or one of a ring buffer's."""

    number: int
    path: Path
    skip: int = 0  # bytes at its start repeating what earlier files said (headers)
    size: int = 0


@dataclass(frozen=True)
class Ring:
    """Keep only the packets of the last `files` files of about `kilobytes` each."""

    files: int
    kilobytes: int


class Recording(Files):
    """Packets of one live capture being received in this process."""

    def __init__(self, live: LiveCapture, ring: Ring | None = None) -> None:
        self.live = live
        self.ring = ring
        self.stream = PacketStream()
        self.path = staging_dir() / f"live-{live.pk}-{uuid.uuid4().hex}.part"
        super().__init__(Segment(0, self.path))
        # Decoders run here (feeds), or in a worker reached through this link.
        self.link = WorkerLink() if decoders_in_worker() else None
        self.file: IO[bytes] | None = None
        self.hash = hashlib.sha256()
        self.size = 0
        self.started = time.monotonic()
        self.feeds: dict[str, Feed] = {}
        self.lock = asyncio.Lock()
        self.stop_requested = asyncio.Event()
        self.stop_reason = ""
        self.control = ""
        self.listener: asyncio.Task[None] | None = None
        self.pusher: asyncio.Task[None] | None = None
        # (monotonic time, packets) of the last seconds, for the rate
        self.history: deque[tuple[float, int]] = deque(maxlen=20)
        self.finished = False
        self.source_packets: int | None = None

    # ---- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed in finish()
        if self.link is None:
            await self.add_feed("")
        self.control = await layer.new_channel(prefix="livecapture")
        self.live.control_channel = self.control
        await self.live.asave(update_fields=["control_channel"])
        self.listener = asyncio.create_task(self.listen(), context=contextvars.Context())
        self.pusher = asyncio.create_task(self.push(), context=contextvars.Context())
        RECORDINGS[self.live.pk] = self

    async def add_feed(self, display_filter: str) -> Feed:
        """Return the feed of a display filter, starting it with every packet received so far."""
        async with self.lock:
            if display_filter in self.feeds:
                return self.feeds[display_filter]
            self.check_new_filter(len(self.feeds))
            feed = Feed(self, self.live.pk, display_filter)
            await feed.start()
            self.feeds[display_filter] = feed
            return feed

    def check_new_filter(self, filters: int) -> None:
        """Raise NotAStream if a decoder for one more display filter may not start."""
        if self.ended:
            raise NotAStream("the live capture has ended")
        if filters > MAX_FILTERS:
            raise NotAStream(f"at most {MAX_FILTERS} different display filters per live capture")

    async def feed(self, data: bytes) -> None:
        """Record received bytes: whole packets go to the file and the decoders; raise NotAStream."""
        if self.stop_requested.is_set() and self.stop_reason.startswith("reached the size limit"):
            return  # the capture is full: what still arrives until it is stored is not kept
        # Up to the packet that passes the size limit, however much arrived at once.
        room = None if self.ring is not None else max_stream_bytes() - self.segments[-1].size
        complete = self.stream.feed(data, room)
        if complete:
            written = 0
            if self.ring is not None:
                # Split at the record or block where the current file reaches its size (never
                # before a header block of these bytes: the next file starts with all of them).
                limit = self.ring.kilobytes * 1024
                for start in self.stream.starts:
                    segment = self.segments[-1]
                    size = segment.size + start - written  # with the bytes before this record
                    full = size >= limit and size > segment.skip
                    if full and start >= self.stream.earliest_split:
                        # Also at the first record: the bytes may come one packet at a time.
                        await self.write(complete[written:start])
                        written = start
                        await self.rotate()
            await self.write(complete[written:])
            for feed in list(self.feeds.values()):
                feed.more.set()
        if self.stream.damage is not None:
            raise self.stream.damage
        limit = max_stream_bytes()
        if sum(segment.size for segment in self.segments) > limit:
            self.request_stop(f"reached the size limit of {limit // (1024 * 1024)} MB")

    async def write(self, data: bytes) -> None:
        assert self.file is not None
        await asyncio.to_thread(_append, self.file, data)
        self.hash.update(data)
        self.size += len(data)
        self.segments[-1].size += len(data)

    async def rotate(self) -> None:
        """Start the next file of the ring with the headers so far; drop the oldest beyond its count."""
        assert self.file is not None and self.ring is not None
        await asyncio.to_thread(self.file.close)
        number = self.segments[-1].number + 1
        preamble = bytes(self.stream.preamble)
        segment = Segment(
            number, self.path.with_suffix(f".{number}.part"), skip=len(preamble), size=len(preamble)
        )
        self.file = open(segment.path, "wb")  # noqa: SIM115 - closed in finish() or the next rotation
        await asyncio.to_thread(_append, self.file, preamble)
        self.segments.append(segment)
        while len(self.segments) > self.ring.files:
            self.retired.append(self.segments.pop(0))
        self.release()

    def release(self, everything: bool = False) -> None:
        """Remove the files dropped from the ring that no decoder has still to read (every one
        with everything: once the decoders are done).

        The end of the recording does not release them: its decoders, or the worker's, go on
        reading the files they have not reached yet until they have printed the last rows.
        """
        numbers = [feed.number for feed in self.feeds.values()]
        if self.link is not None and self.link.channel:
            numbers.append(self.link.reading)
        reading = min(numbers, default=self.segments[-1].number)
        for segment in [segment for segment in self.retired if segment.number < reading or everything]:
            # A decoder still reading it keeps its open file: unlinking only drops the name.
            segment.path.unlink(missing_ok=True)
            self.retired.remove(segment)

    async def stored_file(self) -> StagedFile:
        """Return the file to store: the only one, or the ring's files joined into one."""
        name = f"{self.live.name}.pcapng"
        if len(self.segments) == 1 and self.segments[0].number == 0:
            return StagedFile(self.path, name, self.size, self.hash.hexdigest())
        joined = self.path.with_suffix(".ring.part")
        try:
            await dumpcap.concatenate([segment.path for segment in self.segments], joined)
        finally:
            for segment in self.segments:
                segment.path.unlink(missing_ok=True)
        size, digest = await asyncio.to_thread(_size_and_digest, joined)
        return StagedFile(joined, name, size, digest)

    def request_stop(self, reason: str) -> None:
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_requested.set()

    async def finish(self, reason: str) -> LiveCapture:
        """Decode the last rows, store the file as a capture and tell the viewers; return the live capture."""
        if self.finished:
            return self.live
        self.finished = True
        self.ended = True
        reason = self.stop_reason or reason
        for feed in list(self.feeds.values()):
            try:
                await feed.finish()
            except Exception:
                # A decoder that failed loses rows of the live view, never packets of the file.
                log.exception("decoder of live capture %s failed", self.live.pk)
        if self.link is not None:
            await self.wait_for_worker()
        if self.pusher is not None:
            self.pusher.cancel()
        if self.listener is not None:
            await stop_listening(self.listener, self.control)
        self.release(everything=True)  # every retired file, now that the decoders are done
        await self.push_pending()
        if self.file is not None:
            await asyncio.to_thread(self.file.close)
        RECORDINGS.pop(self.live.pk, None)
        live = self.live
        live.stopped_at = timezone.now()
        live.control_channel = ""
        if self.segments[0].number > 0:
            reason = f"{reason}; the ring buffer kept the last {len(self.segments)} files"
        try:
            staged = await self.stored_file()
            capture = await captures.store(staged, live.owner)
            if live.team_id is not None:
                # The team watched it being recorded: it keeps seeing it once stored.
                capture.visibility, capture.team_id = Visibility.TEAM, live.team_id
                await capture.asave(update_fields=["visibility", "team"])
        except (NotACapture, dumpcap.CaptureRefused) as error:
            live.state = LiveCapture.State.FAILED
            live.message = f"{reason}; nothing could be stored: {error.message}"[:500]
        else:
            live.state = LiveCapture.State.STORED
            live.message = reason[:500]
            live.capture = capture
        await live.asave(update_fields=["state", "message", "capture", "stopped_at", "control_channel"])
        await self.send_group(
            {
                "type": "live.ended",
                "state": live.state,
                "message": live.message,
                "capture_url": live.capture.get_absolute_url() if live.capture else "",
                "status": self.status(),
                # For a server interface: how many packets dumpcap says it recorded.
                "dumpcap_packets": self.source_packets,
            }
        )
        return live

    # ---- viewers ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        packets = self.stream.packets
        self.history.append((now, packets))
        while len(self.history) > 2 and now - self.history[0][0] > 2:
            self.history.popleft()
        then, before = self.history[0]
        rate = (packets - before) / (now - then) if now - then > 0.05 else 0.0
        if self.link is not None:
            decoded = self.link.decoded.get("", 0)
        else:
            decoded = self.feeds[""].last_number if "" in self.feeds else 0
        return {
            "packets": packets,
            "decoded": decoded,
            "behind": max(0, packets - decoded),
            "bytes": self.size,
            "rate": round(rate, 1),
            "seconds": round(now - self.started, 1),
        }

    async def send_group(self, message: dict[str, Any]) -> None:
        await send_group(message, group_name(self.live.pk))

    async def push_pending(self) -> None:
        """Send the rows decoded since the last push, then the status, to the viewers."""
        await push_rows(self.feeds.values())
        if self.link is not None:
            await self.report_files()
        await self.send_group({"type": "live.status", "status": self.status()})

    async def push(self) -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL)
            await self.push_pending()

    async def listen(self) -> None:
        """Answer requests sent to this recording's channel, from any server process."""
        layer = get_channel_layer()
        assert layer is not None
        while True:
            message = await layer.receive(self.control)
            kind = message.get("type")
            if kind == CLOSED:
                return
            if kind == "live.stop":
                self.request_stop(str(message.get("reason", "stopped")))
            elif kind == "live.hello":
                asyncio.create_task(self.welcome(str(message["reply_to"]), str(message.get("filter", ""))))
            elif self.link is not None:
                await self.hear_worker(message)

    async def welcome(self, reply_to: str, display_filter: str) -> None:
        """Send a new viewer (or one that changed its filter) the latest rows and the status."""
        layer = get_channel_layer()
        assert layer is not None
        if self.link is not None:
            await self.welcome_through_worker(reply_to, display_filter)
            return
        try:
            feed = await self.add_feed(display_filter)
        except NotAStream as error:
            await layer.send(reply_to, {"type": "live.refused", "message": error.message})
            return
        # Rows still pending reach the viewer with the next push, through the group.
        recent = list(feed.recent)
        rows = recent[: max(0, len(recent) - len(feed.pending))]
        message = {"type": "live.snapshot", "filter": display_filter, "rows": rows, "status": self.status()}
        await layer.send(reply_to, message)

    # ---- the worker decoding it (BACKGROUND_WORKER with REDIS_URL) ----------------------------

    def files_message(self) -> dict[str, Any]:
        """Where the files are, how far they are written, and whether more will come."""

        def described(segments: list[Segment]) -> list[list[Any]]:
            return [[segment.number, segment.path.name, segment.skip, segment.size] for segment in segments]

        return {
            "type": "live.files",
            "segments": described(self.segments),
            "retired": described(self.retired),
            "ended": self.ended,
        }

    async def report_files(self) -> None:
        """Tell the worker decoding the capture how far the files go, while it is heard from.

        A silent worker is not dropped: it may only be slow (a loaded machine), and it keeps
        the files it still has to read. If it died, the next worker to claim the lapsed lease
        attaches in its place and starts from those files.
        """
        link = self.link
        assert link is not None
        if link.channel and not link.silent():
            await self.send_worker(self.files_message())

    async def send_worker(self, message: dict[str, Any]) -> None:
        assert self.link is not None
        layer = get_channel_layer()
        assert layer is not None
        try:
            await layer.send(self.link.channel, message)
        except Exception:
            log.warning("could not reach the decoder of live capture %s", self.live.pk, exc_info=True)

    async def hear_worker(self, message: dict[str, Any]) -> None:
        """Take a message of the worker decoding the capture (explorer/livedecoding.py)."""
        link = self.link
        assert link is not None
        kind = message.get("type")
        if kind == "live.attach":
            # The worker holds the capture's lease now: any earlier one lost it.
            link.attach(str(message["decoder"]))
            await self.send_worker({**self.files_message(), "filters": link.filters, "decoded": link.decoded})
        elif not link.heard(message):
            return  # from a worker that lost the capture
        elif kind == "live.decoded":
            link.decoded.update({str(key): int(value) for key, value in message["decoded"].items()})
            link.reading = int(message["reading"])
            self.release()
        elif kind == "live.decoder_done":
            link.done.set()

    async def welcome_through_worker(self, reply_to: str, display_filter: str) -> None:
        """Have the worker answer a new viewer, once the recording has taken its filter."""
        link = self.link
        assert link is not None
        layer = get_channel_layer()
        assert layer is not None
        if display_filter not in link.filters:
            try:
                self.check_new_filter(len(link.filters))
            except NotAStream as error:
                await layer.send(reply_to, {"type": "live.refused", "message": error.message})
                return
            link.filters.append(display_filter)
        message: dict[str, Any] = {"filter": display_filter, "status": self.status()}
        if link.channel:
            await self.send_worker({"type": "live.hello", "reply_to": reply_to, **message})
        else:
            # No worker holds the capture yet: its rows come with the pushes once one does.
            await layer.send(reply_to, {"type": "live.snapshot", "rows": [], **message})

    async def wait_for_worker(self) -> None:
        """Give the workers time to decode the end of the files and push the last rows.

        Once a worker has decoded the capture, the recording waits for one to finish, even if
        that one died: the next worker takes over once its lease lapses. With no worker at all
        (none runs), the capture is stored at once.
        """
        link = self.link
        assert link is not None
        if not link.attached_once:
            return
        # Meanwhile the push task goes on telling the worker that the files ended, and drops
        # a silent one for the next to take over.
        try:
            await asyncio.wait_for(link.done.wait(), DECODER_DRAIN_SECONDS)
        except TimeoutError:
            log.warning("no worker finished decoding live capture %s", self.live.pk)


class WorkerLink:
    """What a recording knows of the worker that decodes it (BACKGROUND_WORKER with REDIS_URL).

    A worker that claimed the capture's lease in the database sends its channel ("live.attach").
    The recording then tells it at every push how far the files go, and the worker reports the
    last row it pushed for each filter ("live.decoded"). A worker unheard of for the lease's
    length is sent no more reports until heard again; the next one to claim the lapsed lease
    takes its place, decodes the files from the start again and pushes only the rows after
    those already pushed.
    """

    def __init__(self) -> None:
        self.channel = ""
        self.heard_at = 0.0
        # Display filters viewers asked for, which every worker that takes over decodes.
        self.filters: list[str] = [""]
        self.decoded: dict[str, int] = {}
        self.reading = 0  # the file number the worker's slowest decoder reads
        self.done = asyncio.Event()  # the worker pushed the last rows, after the end
        self.attached_once = False

    def attach(self, channel: str) -> None:
        self.channel = channel
        # A worker taking over reads from the first file still kept: none is let go for the
        # position of the one it replaces.
        self.reading = 0
        self.attached_once = True
        self.heard_at = time.monotonic()
        self.done.clear()

    def heard(self, message: dict[str, Any]) -> bool:
        """Tell whether the message is from the current worker, noting that it was heard from."""
        if not self.channel or message.get("decoder") != self.channel:
            return False
        self.heard_at = time.monotonic()
        return True

    def silent(self) -> bool:
        lease = settings.LIVE_DECODER_LEASE_SECONDS
        return bool(self.channel) and time.monotonic() - self.heard_at > lease


def decoders_in_worker() -> bool:
    """Tell whether workers decode live captures: only a channel layer shared with them reaches them."""
    return bool(settings.BACKGROUND_WORKER and settings.REDIS_URL)


# Sent by a listener's owner to the listener's own channel to end it (see stop_listening).
CLOSED = "live.closed"
LISTENER_CLOSE_SECONDS = 5


async def stop_listening(listener: asyncio.Task[None], channel: str) -> None:
    """End a task that receives on a channel of this process by a message, not by cancelling it.

    channels_redis receives the messages of all of a process's channels in whichever task is
    waiting; cancelled in the middle of that, it can hold up or lose the messages of the
    others (every viewer's websocket of the process).
    """
    layer = get_channel_layer()
    assert layer is not None
    try:
        await layer.send(channel, {"type": CLOSED})
        await asyncio.wait_for(asyncio.shield(listener), LISTENER_CLOSE_SECONDS)
    except Exception:
        log.warning("a listener on %s did not stop when told", channel, exc_info=True)
        listener.cancel()


async def push_rows(feeds: Iterable[Feed]) -> None:
    """Send the rows the feeds decoded since the last push to their groups."""
    for feed in list(feeds):
        while feed.pending:
            rows, feed.pending = feed.pending[:MAX_ROWS_PER_MESSAGE], feed.pending[MAX_ROWS_PER_MESSAGE:]
            message = {"type": "live.rows", "filter": feed.display_filter, "rows": rows}
            await send_group(message, feed.group)


async def send_group(message: dict[str, Any], group: str) -> None:
    layer = get_channel_layer()
    assert layer is not None
    try:
        await layer.group_send(group, message)
    except Exception:
        log.warning("could not push to %s", group, exc_info=True)


# Recordings running in this process, by live capture id.
RECORDINGS: dict[int, Recording] = {}
# Background tasks of interface captures: kept here so that they are not collected mid-way.
_TASKS: set[asyncio.Task[Any]] = set()


async def may_capture(user: Any) -> bool:
    """Tell whether the user may record from the server's interfaces."""
    if user is None or not user.is_authenticated:
        return False
    return bool(user.is_staff or user.is_superuser or await user.ahas_perm("explorer.start_live_capture"))


async def may_view(user: Any, live: LiveCapture) -> bool:
    """Tell whether the user may watch a live capture: its owner, its team's members and staff."""
    if user is None or not user.is_authenticated:
        return False
    if user.is_staff or user.is_superuser or live.owner_id == user.pk:
        return True
    return live.team_id is not None and await user.groups.filter(pk=live.team_id).aexists()


def may_stop(user: Any, live: LiveCapture) -> bool:
    """Tell whether the user may stop a live capture: its owner and staff, not the team watching."""
    return bool(user.is_staff or user.is_superuser or live.owner_id == user.pk)


def watchable_by(user: Any) -> Q:
    """The live captures the user may watch, as a filter (for a signed-in user)."""
    if user.is_staff or user.is_superuser:
        return Q()
    return Q(owner=user) | Q(team__in=user.groups.all())


async def team_of(user: Any, name: str) -> Group | None:
    """Return the user's team of that name (None for no name); raise CaptureRefused for another."""
    if not name:
        return None
    team = await user.groups.filter(name=name).afirst()
    if team is None:
        raise dumpcap.CaptureRefused(f"you are not a member of a team named {name!r}")
    return cast(Group, team)


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
    task = asyncio.create_task(_record_interface(recording, process), context=contextvars.Context())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return live


async def _record_interface(recording: Recording, process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    stopper = asyncio.create_task(recording.stop_requested.wait())
    reason = "a limit was reached"
    try:
        while True:
            read = asyncio.create_task(process.stdout.read(256 * 1024))
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


async def request_stop(live: LiveCapture, reason: str = "stopped") -> bool:
    """Ask the process recording the live capture to stop; False if nothing records it any more."""
    recording = RECORDINGS.get(live.pk)
    if recording is not None:
        recording.request_stop(reason)
        return True
    if not live.control_channel:
        return False
    layer = get_channel_layer()
    assert layer is not None
    await layer.send(live.control_channel, {"type": "live.stop", "reason": reason})
    return True


def max_stream_bytes() -> int:
    """Return how many bytes one live capture may hold: as much as one upload."""
    return int(settings.MAX_UPLOAD_MB) * 1024 * 1024
