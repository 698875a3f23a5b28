"""A live capture being recorded in this process, from its first bytes until it is stored.

One Recording runs in the server process that receives the packets (dumpcap's output for a
server interface, explorer/live/interface.py; the request body of a remote stream,
explorer/live/remote.py). It writes whole packets to its files (explorer/live/ring.py), has
them decoded (explorer/live/decoders.py), and pushes the status to the viewers' group every
PUSH_INTERVAL, so that viewers connected to any server process (through Redis) see it.
Requests for it (stop, a new viewer's hello, a worker's reports) reach it on its own channel,
whose name is kept in the database. When the packets end (stop, a limit, the sender gone)
the file, cut after the last whole packet, is stored as an ordinary capture.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque

from django.conf import settings
from django.utils import timezone

from .. import captures
from ..engine import dumpcap
from ..engine.errors import NotACapture
from ..models import LiveCapture, Visibility
from . import messages, staging
from .decoders import Decoders, LocalDecoders, decoders_in_worker
from .framing import PacketStream
from .link import WorkerLink
from .messages import Status
from .ring import RecordingFiles, Ring

log = logging.getLogger(__name__)

# Rows and status reach viewers in batches this often: often enough to look immediate, seldom
# enough that a fast capture does not become one channel-layer message per packet.
PUSH_INTERVAL = 0.15
SIZE_LIMIT_REACHED = "reached the size limit"

# Recordings running in this process, by live capture id.
RECORDINGS: dict[int, Recording] = {}


def max_stream_bytes() -> int:
    """Return how many bytes one live capture may hold: as much as one upload."""
    return int(settings.MAX_UPLOAD_MB) * 1024 * 1024


def decoders_for(files: RecordingFiles, live_id: int) -> Decoders:
    """Return the decoders of a recording: in a worker when workers decode, else here."""
    if decoders_in_worker():
        return WorkerLink(files, live_id)
    return LocalDecoders(files, live_id)


class Recording:
    """Packets of one live capture being received in this process."""

    def __init__(self, live: LiveCapture, ring: Ring | None = None) -> None:
        self.live = live
        self.stream = PacketStream()
        self.files = RecordingFiles(staging.first_file(live.pk), ring)
        self.decoders = decoders_for(self.files, live.pk)
        self.started = time.monotonic()
        self.stop_requested = asyncio.Event()
        self.stop_reason = ""
        self.control = ""
        self.listener: asyncio.Task[None] | None = None
        self.pusher: asyncio.Task[None] | None = None
        self.welcomes: set[asyncio.Task[None]] = set()  # kept here so that they are not collected mid-way
        # (monotonic time, packets) of the last seconds, for the rate
        self.history: deque[tuple[float, int]] = deque(maxlen=20)
        self.finished = False
        # For a server interface: how many packets dumpcap says it recorded.
        self.source_packets: int | None = None

    async def start(self) -> None:
        """Open the file, start decoding, and take requests on a channel of its own."""
        self.files.open()
        await self.decoders.start()
        self.control = await messages.new_recording_channel()
        self.live.control_channel = self.control
        await self.live.asave(update_fields=["control_channel"])
        self.listener = asyncio.create_task(self.listen(), context=contextvars.Context())
        self.pusher = asyncio.create_task(self.push(), context=contextvars.Context())
        RECORDINGS[self.live.pk] = self

    async def feed(self, data: bytes) -> None:
        """Record received bytes: whole packets go to the files and the decoders; raise NotAStream."""
        if self.stop_requested.is_set() and self.stop_reason.startswith(SIZE_LIMIT_REACHED):
            return  # the capture is full: what still arrives until it is stored is not kept
        # Up to the packet that passes the size limit, however much arrived at once.
        room = None if self.files.ring is not None else max_stream_bytes() - self.files.last.size
        records = self.stream.feed(data, room)
        if records.data:
            await self.files.append(records, bytes(self.stream.preamble))
            self.files.release(self.decoders.reading())
            self.decoders.files_grew()
        if self.stream.damage is not None:
            raise self.stream.damage
        limit = max_stream_bytes()
        if self.files.total_size() > limit:
            self.request_stop(f"{SIZE_LIMIT_REACHED} of {limit // (1024 * 1024)} MB")

    def request_stop(self, reason: str) -> None:
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_requested.set()

    async def finish(self, reason: str) -> LiveCapture:
        """Decode the last rows, store the file as a capture and tell the viewers; return the live capture."""
        if self.finished:
            return self.live
        self.finished = True
        self.files.ended = True
        reason = self.stop_reason or reason
        await self.decoders.finish()
        if self.pusher is not None:
            self.pusher.cancel()
        if self.listener is not None:
            await messages.stop_listening(self.listener, self.control)
        self.files.release(None, everything=True)  # every retired file, now that the decoders are done
        await self.push_pending()
        await self.files.close()
        RECORDINGS.pop(self.live.pk, None)
        live = await self.store(reason)
        capture_url = live.capture.get_absolute_url() if live.capture else ""
        await messages.push_ended(
            live.pk, live.state, live.message, capture_url, self.status(), self.source_packets
        )
        return live

    async def store(self, reason: str) -> LiveCapture:
        """Store the files as a capture (shared with the team that watched); record how it ended."""
        live = self.live
        live.stopped_at = timezone.now()
        live.control_channel = ""
        if self.files.segments[0].number > 0:
            reason = f"{reason}; the ring buffer kept the last {len(self.files.segments)} files"
        try:
            staged = await self.files.stored_file(f"{live.name}.pcapng")
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
        return live

    def status(self) -> Status:
        now = time.monotonic()
        packets = self.stream.packets
        self.history.append((now, packets))
        while len(self.history) > 2 and now - self.history[0][0] > 2:
            self.history.popleft()
        then, before = self.history[0]
        rate = (packets - before) / (now - then) if now - then > 0.05 else 0.0
        decoded = self.decoders.decoded()
        return {
            "packets": packets,
            "decoded": decoded,
            "behind": max(0, packets - decoded),
            "bytes": self.files.size,
            "rate": round(rate, 1),
            "seconds": round(now - self.started, 1),
        }

    async def push_pending(self) -> None:
        """Push the rows decoded since the last push (or have the worker do it), then the status."""
        await self.decoders.push()
        await messages.push_status(self.live.pk, self.status())

    async def push(self) -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL)
            await self.push_pending()

    async def listen(self) -> None:
        """Answer requests sent to this recording's channel, from any server process."""
        async for message in messages.recording_inbox(self.control):
            if message["type"] == "live.stop":
                self.request_stop(str(message.get("reason", "stopped")))
            elif message["type"] == "live.hello":
                hello: messages.Hello = {
                    "type": "live.hello",
                    "reply_to": str(message["reply_to"]),
                    "filter": str(message.get("filter", "")),
                }
                task = asyncio.create_task(self.decoders.welcome(hello, self.status))
                self.welcomes.add(task)
                task.add_done_callback(self.welcomes.discard)
            else:
                await self.decoders.hear(message)


async def request_stop(live: LiveCapture, reason: str = "stopped") -> bool:
    """Ask the process recording the live capture to stop; False if nothing records it any more."""
    recording = RECORDINGS.get(live.pk)
    if recording is not None:
        recording.request_stop(reason)
        return True
    if not live.control_channel:
        return False
    await messages.send_stop(live.control_channel, reason)
    return True
