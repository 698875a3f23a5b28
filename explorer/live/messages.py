"""What crosses the channel layer for live captures: each message's shape, and one sender per kind.

Recordings, workers and viewers' websockets may each run in a different server process; with
REDIS_URL these messages are all they share besides the database and the capture folder.

- To the viewers (the live capture's group, and one group per display filter): `live.rows`,
  `live.status`, `live.ended`; to one viewer, answering its hello: `live.snapshot` or
  `live.refused`. The websocket passes them on to the page (explorer/live/consumers.py),
  which also gets `live.filter_refused` and `live.silent` from the websocket itself.
- To the recording's channel (its name is kept in the database): `live.hello` from a viewer,
  `live.stop`, and from the worker decoding it `live.attach`, `live.decoded`,
  `live.decoder_done`.
- To the worker's channel: `live.files` and the viewers' `live.hello`, passed on with the status.
- `live.closed` ends a listener, sent to its own channel.

The page reads the viewers' shapes (static/explorer/live-capture.js): they change with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# A packet list row as the engine gives it (explorer/engine/packets.py PacketRow, as a dict).
Row = dict[str, Any]
# A recording's file as the worker is told of it: [number, file name, skip, size].
SegmentReport = list[Any]

LISTENER_CLOSE_SECONDS = 5


class Status(TypedDict):
    packets: int
    decoded: int  # the number of the last packet the whole list has a row of
    behind: int
    bytes: int
    rate: float  # packets per second, over the last seconds
    seconds: float


# ---- to the viewers -----------------------------------------------------------------------------


class Rows(TypedDict):
    type: Literal["live.rows"]
    filter: str
    rows: list[Row]


class StatusUpdate(TypedDict):
    type: Literal["live.status"]
    status: Status


class Ended(TypedDict):
    type: Literal["live.ended"]
    state: str
    message: str
    capture_url: str
    # From the recording; a viewer joining after the end gets the rest only.
    status: NotRequired[Status]
    dumpcap_packets: NotRequired[int | None]  # how many packets dumpcap says it recorded


class Snapshot(TypedDict):
    type: Literal["live.snapshot"]
    filter: str
    rows: list[Row]
    status: Status


class Refused(TypedDict):
    type: Literal["live.refused"]
    message: str


# From the websocket to its page only.


class FilterRefused(TypedDict):
    type: Literal["live.filter_refused"]
    filter: str
    message: str


class Silent(TypedDict):
    type: Literal["live.silent"]
    message: str


# ---- to the recording ---------------------------------------------------------------------------


class Hello(TypedDict):
    """A viewer asks for the latest rows of its display filter and the status."""

    type: Literal["live.hello"]
    reply_to: str
    filter: str


class Stop(TypedDict):
    type: Literal["live.stop"]
    reason: str


class Attach(TypedDict):
    """A worker took the capture's lease: it decodes from now on, on this channel."""

    type: Literal["live.attach"]
    decoder: str


class Decoded(TypedDict):
    """The last row a worker pushed for each display filter, and the file its slowest decoder reads."""

    type: Literal["live.decoded"]
    decoder: str
    decoded: dict[str, int]
    reading: int


class DecoderDone(TypedDict):
    """The worker pushed the last rows, after the end of the files."""

    type: Literal["live.decoder_done"]
    decoder: str


class Closed(TypedDict):
    type: Literal["live.closed"]


ToRecording = Hello | Stop | Attach | Decoded | DecoderDone
FromWorker = Attach | Decoded | DecoderDone


# ---- to the worker ------------------------------------------------------------------------------


class Files(TypedDict):
    """Where a recording's files are, how far they are written, and whether more will come."""

    type: Literal["live.files"]
    segments: list[SegmentReport]
    retired: list[SegmentReport]  # dropped from the ring, not read to the end by the worker yet
    ended: bool
    # In the answer to live.attach: the filters to decode, and the rows pushed by earlier workers.
    filters: NotRequired[list[str]]
    decoded: NotRequired[dict[str, int]]


class WorkerHello(TypedDict):
    """A viewer's hello, passed on by the recording once it took the filter."""

    type: Literal["live.hello"]
    reply_to: str
    filter: str
    status: Status


ToWorker = Files | WorkerHello


# ---- where they go ------------------------------------------------------------------------------


def group_name(live_id: int) -> str:
    """Return the group of a live capture's viewers: status, the end, and rows of the whole list."""
    return f"livecapture-{live_id}"


def filter_group_name(live_id: int, display_filter: str) -> str:
    """Return the group of the viewers of one display filter, for its rows."""
    digest = hashlib.sha256(display_filter.encode()).hexdigest()[:24]
    return f"livecapture-{live_id}-{digest}"


def rows_group(live_id: int, display_filter: str) -> str:
    return filter_group_name(live_id, display_filter) if display_filter else group_name(live_id)


async def new_recording_channel() -> str:
    return await _layer().new_channel(prefix="livecapture")


async def new_decoder_channel() -> str:
    return await _layer().new_channel(prefix="livedecoder")


def _layer() -> Any:
    layer = get_channel_layer()
    assert layer is not None
    return layer


async def _send(channel: str, message: Mapping[str, Any]) -> None:
    await _layer().send(channel, message)


async def _send_or_log(channel: str, message: Mapping[str, Any]) -> None:
    """Send a message that may be lost: its sender goes on, and the next one says the same again."""
    try:
        await _send(channel, message)
    except Exception:
        log.warning("could not send %s to %s", message["type"], channel, exc_info=True)


async def _push(group: str, message: Mapping[str, Any]) -> None:
    # Viewers never hold up a recording: a push that fails is logged, and the next one goes on.
    try:
        await _layer().group_send(group, message)
    except Exception:
        log.warning("could not push to %s", group, exc_info=True)


# ---- senders: to the viewers --------------------------------------------------------------------


async def push_rows(live_id: int, display_filter: str, rows: list[Row]) -> None:
    message: Rows = {"type": "live.rows", "filter": display_filter, "rows": rows}
    await _push(rows_group(live_id, display_filter), message)


async def push_status(live_id: int, status: Status) -> None:
    message: StatusUpdate = {"type": "live.status", "status": status}
    await _push(group_name(live_id), message)


async def push_ended(
    live_id: int, state: str, text: str, capture_url: str, status: Status, dumpcap_packets: int | None
) -> None:
    message: Ended = {
        "type": "live.ended",
        "state": state,
        "message": text,
        "capture_url": capture_url,
        "status": status,
        "dumpcap_packets": dumpcap_packets,
    }
    await _push(group_name(live_id), message)


def ended_before(state: str, text: str, capture_url: str) -> Ended:
    """Return how a live capture ended, for a viewer who joins afterwards."""
    return {"type": "live.ended", "state": state, "message": text, "capture_url": capture_url}


async def send_snapshot(reply_to: str, display_filter: str, rows: list[Row], status: Status) -> None:
    message: Snapshot = {"type": "live.snapshot", "filter": display_filter, "rows": rows, "status": status}
    await _send(reply_to, message)


async def send_refused(reply_to: str, refusal: str) -> None:
    message: Refused = {"type": "live.refused", "message": refusal}
    await _send(reply_to, message)


def filter_refused(display_filter: str, refusal: str) -> FilterRefused:
    return {"type": "live.filter_refused", "filter": display_filter, "message": refusal}


def silent(explanation: str) -> Silent:
    return {"type": "live.silent", "message": explanation}


# ---- senders: to the recording ------------------------------------------------------------------


async def send_hello(control: str, reply_to: str, display_filter: str) -> None:
    message: Hello = {"type": "live.hello", "reply_to": reply_to, "filter": display_filter}
    await _send(control, message)


async def send_stop(control: str, reason: str) -> None:
    message: Stop = {"type": "live.stop", "reason": reason}
    await _send(control, message)


async def send_attach(control: str, decoder: str) -> None:
    message: Attach = {"type": "live.attach", "decoder": decoder}
    await _send(control, message)


async def send_decoded(control: str, decoder: str, decoded: dict[str, int], reading: int) -> None:
    message: Decoded = {"type": "live.decoded", "decoder": decoder, "decoded": decoded, "reading": reading}
    await _send_or_log(control, message)


async def send_decoder_done(control: str, decoder: str) -> None:
    message: DecoderDone = {"type": "live.decoder_done", "decoder": decoder}
    await _send_or_log(control, message)


# ---- senders: to the worker ---------------------------------------------------------------------


async def send_files(decoder: str, files: Files) -> None:
    await _send_or_log(decoder, files)


async def forward_hello(decoder: str, hello: Hello, status: Status) -> None:
    message: WorkerHello = {**hello, "status": status}
    await _send_or_log(decoder, message)


# ---- listening ----------------------------------------------------------------------------------


async def send_closed(channel: str) -> None:
    message: Closed = {"type": "live.closed"}
    await _send(channel, message)


async def receive(channel: str) -> AsyncIterator[dict[str, Any]]:
    """Yield the messages sent to a channel of this process, until it is closed (stop_listening)."""
    layer = _layer()
    while True:
        message = await layer.receive(channel)
        if message.get("type") == "live.closed":
            return
        yield message


async def recording_inbox(channel: str) -> AsyncIterator[ToRecording]:
    async for message in receive(channel):
        yield cast(ToRecording, message)


async def worker_inbox(channel: str) -> AsyncIterator[ToWorker]:
    async for message in receive(channel):
        yield cast(ToWorker, message)


async def stop_listening(listener: asyncio.Task[None], channel: str) -> None:
    """End a task that receives on a channel of this process by a message, not by cancelling it.

    channels_redis receives the messages of all of a process's channels in whichever task is
    waiting; cancelled in the middle of that, it can hold up or lose the messages of the
    others (every viewer's websocket of the process).
    """
    try:
        await send_closed(channel)
        await asyncio.wait_for(asyncio.shield(listener), LISTENER_CLOSE_SECONDS)
    except Exception:
        log.warning("a listener on %s did not stop when told", channel, exc_info=True)
        listener.cancel()
