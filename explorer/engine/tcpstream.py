"""One TCP stream's packets with tshark's sequence analysis, the source of its graphs and story.

One pass, `tshark -2 -Y "tcp.stream eq N" -T fields`, prints every frame of the stream with its
relative sequence numbers, window, RTT, bytes in flight, SACK blocks and analysis flags. They
are kept in compact arrays (about 90 bytes a packet) so that every graph of the stream, in
either direction, and its story are drawn from one pass. A stream longer than
MAX_STREAM_PACKETS keeps its first packets and says so.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from . import fieldpass, tcphealth
from .errors import EngineError
from .fieldpass import EnoughRows, last, values
from .tcphealth import TcpConversation

MAX_STREAM = 2**32 - 1
# Packets of one stream read (about 90 MB of arrays); the graphs and story of a longer stream
# cover its first ones.
MAX_STREAM_PACKETS = 1_000_000
# Streams kept for the next graph or story, at most this many packets in all.
KEPT_PACKETS = 2_000_000

FIELDS = [
    *tcphealth.FIELDS,
    "tcp.seq",
    "tcp.nxtseq",
    "tcp.ack",
    "tcp.window_size",
    "tcp.analysis.ack_rtt",
    "tcp.analysis.acks_frame",
    "tcp.analysis.bytes_in_flight",
    "tcp.options.sack_le",
    "tcp.options.sack_re",
    "tcp.analysis.rto",
    "tcp.analysis.rto_frame",
    "tcp.analysis.duplicate_ack_frame",
]
(
    SEQ,
    NEXT_SEQ,
    ACK_NUMBER,
    WINDOW,
    ACK_RTT,
    ACKS_FRAME,
    IN_FLIGHT,
    SACK_LEFT,
    SACK_RIGHT,
    RTO,
    RTO_FRAME,
    DUPLICATE_ACK_FRAME,
) = range(len(tcphealth.FIELDS), len(FIELDS))

# Bits of StreamPackets.analysis, one per kind of trouble (Problems' names, in their order).
ANALYSIS_BITS = {name: 1 << bit for bit, name in enumerate(tcphealth.PROBLEM_FIELDS)}

ABSENT = -1

# Keyed by the file's path, modification time and size too: a path that names another file
# later (a capture deleted, another stored) is never answered from the first one's packets.
_kept: OrderedDict[tuple[Path, int, int, int], StreamPackets] = OrderedDict()


@dataclass(eq=False)
class StreamPackets:
    """A stream's packets as parallel arrays; ABSENT (or NaN for times) where tshark printed nothing."""

    stream: int
    conversation: TcpConversation | None = None
    frames: array[int] = field(default_factory=lambda: array("q"))
    times: array[float] = field(default_factory=lambda: array("d"))
    # 1 where the client sent the packet, 0 where the server did.
    from_client: array[int] = field(default_factory=lambda: array("b"))
    flags: array[int] = field(default_factory=lambda: array("H"))
    seqs: array[int] = field(default_factory=lambda: array("q"))
    next_seqs: array[int] = field(default_factory=lambda: array("q"))
    acks: array[int] = field(default_factory=lambda: array("q"))
    lengths: array[int] = field(default_factory=lambda: array("q"))
    windows: array[int] = field(default_factory=lambda: array("q"))
    in_flight: array[int] = field(default_factory=lambda: array("q"))
    rtts: array[float] = field(default_factory=lambda: array("d"))
    acked_frames: array[int] = field(default_factory=lambda: array("q"))
    analysis: array[int] = field(default_factory=lambda: array("H"))
    # Sparse: packet index -> its SACK blocks (left, right); RTO (seconds, from frame); duplicated frame.
    sacks: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    rtos: dict[int, tuple[float, int]] = field(default_factory=dict)
    duplicate_of: dict[int, int] = field(default_factory=dict)
    truncated: bool = False
    problem: str | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def index_of(self, frame: int) -> int | None:
        """Return the index of a frame of the stream (frames are in ascending order)."""
        at = bisect_left(self.frames, frame)
        return at if at < len(self.frames) and self.frames[at] == frame else None

    def flagged(self, index: int, name: str) -> bool:
        """Return whether tshark's analysis flagged a packet with one kind of trouble (Problems' names)."""
        return bool(self.analysis[index] & ANALYSIS_BITS[name])

    def flag_names(self, index: int) -> list[str]:
        return [name for name, bit in ANALYSIS_BITS.items() if self.analysis[index] & bit]


def _number(text: str) -> int:
    return int(text) if text.isdigit() else ABSENT


def _seconds(text: str) -> float:
    return float(text) if text else math.nan


class StreamReader:
    """Feeds a stream's lines into its arrays, and its conversation's tally."""

    def __init__(self, stream: int, limit: int | None = None) -> None:
        self.packets = StreamPackets(stream)
        self.limit = MAX_STREAM_PACKETS if limit is None else limit
        self.tally: tcphealth.Tally | None = None
        self.sides: list[tuple[str, int]] = []

    def add(self, cells: list[str]) -> None:
        packets = self.packets
        if len(packets.frames) >= self.limit:
            packets.truncated = True
            raise EnoughRows
        if self.tally is None:
            self.tally = tcphealth.Tally(packets.stream, cells)
        self.tally.add(cells)
        index = len(packets.frames)
        packets.frames.append(int(cells[tcphealth.FRAME]))
        packets.times.append(float(cells[tcphealth.TIME]))
        # Which side sent it is settled once the stream is read (the client may be known late).
        packets.from_client.append(1 if tcphealth.source(cells) == self.tally.ends[0] else 0)
        flags_text = last(cells[tcphealth.FLAGS])
        packets.flags.append(int(flags_text, 16) if flags_text else 0)
        packets.seqs.append(_number(last(cells[SEQ])))
        packets.next_seqs.append(_number(last(cells[NEXT_SEQ])))
        packets.acks.append(_number(last(cells[ACK_NUMBER])))
        packets.lengths.append(_number(last(cells[tcphealth.LENGTH])))
        packets.windows.append(_number(last(cells[WINDOW])))
        packets.in_flight.append(_number(last(cells[IN_FLIGHT])))
        packets.rtts.append(_seconds(last(cells[ACK_RTT])))
        packets.acked_frames.append(_number(last(cells[ACKS_FRAME])))
        bits = 0
        if any(cells[tcphealth.FIRST_PROBLEM : len(tcphealth.FIELDS)]):
            for name, position in tcphealth.PROBLEM_FIELDS.items():
                if cells[position]:
                    bits |= ANALYSIS_BITS[name]
        packets.analysis.append(bits)
        if cells[SACK_LEFT]:
            lefts, rights = values(cells[SACK_LEFT]), values(cells[SACK_RIGHT])
            packets.sacks[index] = [(int(a), int(b)) for a, b in zip(lefts, rights, strict=False)]
        if cells[RTO]:
            packets.rtos[index] = (float(last(cells[RTO])), _number(last(cells[RTO_FRAME])))
        if cells[DUPLICATE_ACK_FRAME]:
            packets.duplicate_of[index] = _number(last(cells[DUPLICATE_ACK_FRAME]))

    def finish(self, problem: str | None) -> StreamPackets:
        packets = self.packets
        packets.problem = problem
        if self.tally is not None:
            packets.conversation = self.tally.conversation()
            if self.tally.client_side() == 1:
                # The client is side 1 of the tally (the first packet was the server's).
                packets.from_client = array("b", (1 - side for side in packets.from_client))
        return packets


def check_stream(stream: int) -> None:
    if not 0 <= stream <= MAX_STREAM:
        raise EngineError(f"stream must be a number from 0 to {MAX_STREAM}")


def _keep(key: tuple[Path, int, int, int], packets: StreamPackets) -> None:
    _kept[key] = packets
    _kept.move_to_end(key)
    while len(_kept) > 1 and sum(len(p) for p in _kept.values()) > KEPT_PACKETS:
        _kept.popitem(last=False)


async def stream_packets(path: Path, stream: int) -> StreamPackets:
    """Return the packets of one TCP stream; raise EngineError when the capture has no such stream."""
    check_stream(stream)
    try:
        stat = path.stat()
    except OSError:
        raise EngineError("the capture file is missing") from None
    key = (path, stat.st_mtime_ns, stat.st_size, stream)
    if key in _kept:
        _kept.move_to_end(key)
        return _kept[key]

    async def compute() -> StreamPackets:
        reader = StreamReader(stream)
        outcome = await fieldpass.run(path, FIELDS, f"tcp.stream eq {stream}", reader.add)
        packets = reader.finish(outcome.problem)
        if len(packets):
            _keep(key, packets)
        return packets

    packets = await fieldpass.shared(("tcp-stream", *key), compute)
    if not len(packets):
        raise EngineError(f"there is no TCP stream {stream} in this capture")
    return packets


def forget(path: Path) -> None:
    """Forget the kept streams of a capture that is being deleted."""
    for key in [key for key in _kept if key[0] == path]:
        del _kept[key]


async def stream_conversation(path: Path, stream: int) -> TcpConversation:
    """Return the health of one TCP stream (handshake, options, ending, traffic) from its own pass."""
    packets = await stream_packets(path, stream)
    assert packets.conversation is not None
    return packets.conversation
