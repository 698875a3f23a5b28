"""TCP stream graphs, as Wireshark's Statistics → TCP Stream Graphs draws them, for one direction.

Every point is a packet of the stream (its frame number and frame.time_relative) with the
values tshark's analysis printed for it (tcpstream): the sender's segments (`tcp.seq`,
`tcp.nxtseq`, `tcp.len`, analysis flags) for Stevens and tcptrace; the receiver's ACKs
(`tcp.ack`, `tcp.window_size`) and SACK blocks (`tcp.options.sack_le`/`sack_re`) for tcptrace;
`tcp.analysis.ack_rtt` of the receiver's ACKs for round-trip time; the sender's
`tcp.analysis.bytes_in_flight` and the receiver's `tcp.window_size` for window scaling.

Throughput is Wireshark's time-based moving average: at each of the sender's segments, the
payload (`tcp.len`) of the sender's segments sent within the last `window` seconds (this one
included), in bits per second. Goodput is the same average of the bytes the receiver's ACKs
newly acknowledge (how far each ACK moves `tcp.ack` forward), at each of its ACKs.

A graph of more points than asked for keeps the packets tshark flagged (retransmissions,
duplicate ACKs...), then in each slice of time the points with the smallest and the largest
value, so that spikes stay visible: every point shown is a packet.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from .errors import EngineError
from .tcphealth import Endpoint
from .tcpstream import ABSENT, StreamPackets, stream_packets

GraphKind = Literal["stevens", "tcptrace", "throughput", "rtt", "window"]
Direction = Literal["client-to-server", "server-to-client"]
KINDS: tuple[str, ...] = get_args(GraphKind)
DIRECTIONS: tuple[str, ...] = get_args(Direction)

ACK_FLAG = 0x010
# Wireshark's default moving-average window for throughput.
DEFAULT_WINDOW_SECONDS = 1.0
MAX_WINDOW_SECONDS = 3600.0
# Points of one series in an answer at most (a browser draws a few thousand usefully).
MAX_POINTS = 20_000
DEFAULT_POINTS = 5_000


@dataclass
class SegmentPoint:
    """A segment the sender sent: relative sequence numbers, payload length and tshark's flags."""

    frame: int
    time: float
    seq: int
    next_seq: int | None
    length: int
    analysis: list[str] = field(default_factory=list)


@dataclass
class AckPoint:
    """An ACK the receiver sent: what it acknowledges and the window it offers beyond that."""

    frame: int
    time: float
    ack: int
    window: int | None
    duplicate: bool = False
    zero_window: bool = False

    @property
    def receive_edge(self) -> int | None:
        """Return the highest sequence number the receiver will accept: ACK + window."""
        return None if self.window is None else self.ack + self.window


@dataclass
class SackPoint:
    """One SACK block of an ACK: bytes the receiver holds beyond the acknowledged ones."""

    frame: int
    time: float
    left: int
    right: int


@dataclass
class ThroughputPoint:
    frame: int
    time: float
    length: int
    bits_per_second: float


@dataclass
class GoodputPoint:
    frame: int
    time: float
    acked_bytes: int
    bits_per_second: float


@dataclass
class RttPoint:
    """tcp.analysis.ack_rtt of an ACK, with the segment it acknowledges (frame and sequence number)."""

    frame: int
    time: float
    rtt: float
    acked_frame: int | None
    seq: int | None


@dataclass
class InFlightPoint:
    frame: int
    time: float
    bytes: int


@dataclass
class WindowPoint:
    frame: int
    time: float
    window: int


@dataclass
class TcpGraph:
    stream: int
    direction: Direction
    kind: GraphKind
    sender: Endpoint
    receiver: Endpoint
    # The stream's first and last packet times: the graph's whole time axis.
    first_time: float
    last_time: float
    window_seconds: float | None = None
    segments: list[SegmentPoint] = field(default_factory=list)
    acks: list[AckPoint] = field(default_factory=list)
    sacks: list[SackPoint] = field(default_factory=list)
    throughput: list[ThroughputPoint] = field(default_factory=list)
    goodput: list[GoodputPoint] = field(default_factory=list)
    rtt: list[RttPoint] = field(default_factory=list)
    in_flight: list[InFlightPoint] = field(default_factory=list)
    windows: list[WindowPoint] = field(default_factory=list)
    # Points in the time range asked for, before thinning to max_points a series.
    points: int = 0
    thinned: bool = False
    # The stream has more packets than tcpstream.MAX_STREAM_PACKETS: the graph shows the first.
    truncated: bool = False


def check(
    kind: str, direction: str, window_seconds: float, start: float | None, end: float | None, max_points: int
) -> None:
    """Refuse a graph request that cannot be drawn; raise EngineError saying why."""
    if kind not in KINDS:
        raise EngineError(f"unknown graph {kind!r}: choose one of {', '.join(KINDS)}")
    if direction not in DIRECTIONS:
        raise EngineError(f"unknown direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
    if not (math.isfinite(window_seconds) and 0 < window_seconds <= MAX_WINDOW_SECONDS):
        raise EngineError(f"the moving-average window must be above 0 and at most {MAX_WINDOW_SECONDS:g} s")
    for bound in (start, end):
        if bound is not None and not math.isfinite(bound):
            raise EngineError("start and end are seconds from the first packet")
    if start is not None and end is not None and end < start:
        raise EngineError("the range must not end before it starts")
    if not 1 <= max_points <= MAX_POINTS:
        raise EngineError(f"ask for 1 to {MAX_POINTS:,} points")


def thin(
    indexes: Sequence[int], times: Sequence[float], value: Callable[[int], float], most: int
) -> list[int]:
    """Return at most `most` indexes: in each slice of time, those of the smallest and largest value."""
    if len(indexes) <= most:
        return list(indexes)
    slices = max(most // 2, 1)
    first, last = times[indexes[0]], times[indexes[-1]]
    span = (last - first) or 1.0
    lowest: dict[int, tuple[float, int]] = {}
    highest: dict[int, tuple[float, int]] = {}
    for index in indexes:
        at = min(max(int((times[index] - first) / span * slices), 0), slices - 1)
        amount = value(index)
        if at not in lowest or amount < lowest[at][0]:
            lowest[at] = (amount, index)
        if at not in highest or amount > highest[at][0]:
            highest[at] = (amount, index)
    kept = {index for _, index in lowest.values()} | {index for _, index in highest.values()}
    return sorted(kept)


class Builder:
    """Draws one graph from a stream's packets (runs in a worker thread: it may loop a million times)."""

    def __init__(
        self,
        packets: StreamPackets,
        direction: Direction,
        start: float | None,
        end: float | None,
        max_points: int,
    ) -> None:
        self.packets = packets
        sender_flag = 1 if direction == "client-to-server" else 0
        everything = range(len(packets))
        self.sent = [i for i in everything if packets.from_client[i] == sender_flag]
        self.received = [i for i in everything if packets.from_client[i] != sender_flag]
        self.start, self.end = start, end
        self.max_points = max_points
        self.points = 0
        self.thinned = False

    def within(self, indexes: list[int]) -> list[int]:
        times = self.packets.times
        low = -math.inf if self.start is None else self.start
        high = math.inf if self.end is None else self.end
        return [i for i in indexes if low <= times[i] <= high]

    def chosen(
        self, indexes: list[int], value: Callable[[int], float], marked: Callable[[int], bool] | None = None
    ) -> list[int]:
        """Return the indexes in the time range, thinned by their values.

        Marked packets (those tshark flagged) are kept first, up to half the points.
        """
        shown = self.within(indexes)
        self.points += len(shown)
        if len(shown) <= self.max_points:
            return shown
        self.thinned = True
        kept = [i for i in shown if marked(i)][: self.max_points // 2] if marked else []
        rest = thin(shown, self.packets.times, value, self.max_points - len(kept))
        return sorted(set(kept) | set(rest))

    def segments(self) -> list[SegmentPoint]:
        p = self.packets
        sent = [i for i in self.sent if p.seqs[i] != ABSENT]
        return [
            SegmentPoint(
                frame=p.frames[i],
                time=p.times[i],
                seq=p.seqs[i],
                next_seq=None if p.next_seqs[i] == ABSENT else p.next_seqs[i],
                length=max(p.lengths[i], 0),
                analysis=p.flag_names(i),
            )
            for i in self.chosen(sent, p.seqs.__getitem__, lambda i: p.analysis[i] != 0)
        ]

    def acks(self) -> list[AckPoint]:
        p = self.packets
        acks = [i for i in self.received if p.flags[i] & ACK_FLAG and p.acks[i] != ABSENT]
        return [
            AckPoint(
                frame=p.frames[i],
                time=p.times[i],
                ack=p.acks[i],
                window=None if p.windows[i] == ABSENT else p.windows[i],
                duplicate=p.flagged(i, "duplicate_acks"),
                zero_window=p.flagged(i, "zero_windows"),
            )
            for i in self.chosen(acks, p.acks.__getitem__, lambda i: p.analysis[i] != 0)
        ]

    def sacks(self) -> list[SackPoint]:
        p = self.packets
        blocks = [i for i in self.received if i in p.sacks]
        rights = {i: max(right for _, right in p.sacks[i]) for i in blocks}
        return [
            SackPoint(frame=p.frames[i], time=p.times[i], left=left, right=right)
            for i in self.chosen(blocks, rights.__getitem__)
            for left, right in p.sacks[i]
        ]

    def throughput(self, window: float) -> list[ThroughputPoint]:
        p = self.packets
        rates = moving_average(self.sent, p.times, [max(p.lengths[i], 0) for i in self.sent], window)
        by_index = dict(zip(self.sent, rates, strict=True))
        return [
            ThroughputPoint(
                frame=p.frames[i], time=p.times[i], length=max(p.lengths[i], 0), bits_per_second=r
            )
            for i in self.chosen(self.sent, by_index.__getitem__)
            for r in (by_index[i],)
        ]

    def goodput(self, window: float) -> list[GoodputPoint]:
        p = self.packets
        acks = [i for i in self.received if p.flags[i] & ACK_FLAG and p.acks[i] != ABSENT]
        acked: list[int] = []
        highest = p.acks[acks[0]] if acks else 0
        for i in acks:
            advance = p.acks[i] - highest if p.acks[i] >= highest else 0
            highest = max(highest, p.acks[i])
            acked.append(advance)
        rates = moving_average(acks, p.times, acked, window)
        by_index = {i: (a, r) for i, a, r in zip(acks, acked, rates, strict=True)}
        return [
            GoodputPoint(frame=p.frames[i], time=p.times[i], acked_bytes=a, bits_per_second=r)
            for i in self.chosen(acks, lambda i: by_index[i][1])
            for a, r in (by_index[i],)
        ]

    def rtt(self) -> list[RttPoint]:
        p = self.packets
        measured = [i for i in self.received if not math.isnan(p.rtts[i])]
        points = []
        for i in self.chosen(measured, p.rtts.__getitem__):
            acked = p.acked_frames[i] if p.acked_frames[i] != ABSENT else None
            at = p.index_of(acked) if acked is not None else None
            seq = p.seqs[at] if at is not None and p.seqs[at] != ABSENT else None
            points.append(
                RttPoint(frame=p.frames[i], time=p.times[i], rtt=p.rtts[i], acked_frame=acked, seq=seq)
            )
        return points

    def in_flight(self) -> list[InFlightPoint]:
        p = self.packets
        counted = [i for i in self.sent if p.in_flight[i] != ABSENT]
        return [
            InFlightPoint(frame=p.frames[i], time=p.times[i], bytes=p.in_flight[i])
            for i in self.chosen(counted, p.in_flight.__getitem__)
        ]

    def windows(self) -> list[WindowPoint]:
        p = self.packets
        offered = [i for i in self.received if p.windows[i] != ABSENT]
        return [
            WindowPoint(frame=p.frames[i], time=p.times[i], window=p.windows[i])
            for i in self.chosen(offered, p.windows.__getitem__)
        ]


def moving_average(
    indexes: list[int], times: Sequence[float], sizes: list[int], window: float
) -> list[float]:
    """Return, at each packet, the bits per second of the sizes sent within the last `window` seconds."""
    rates: list[float] = []
    oldest = 0
    total = 0
    for position, index in enumerate(indexes):
        now = times[index]
        total += sizes[position]
        while oldest < position and now - times[indexes[oldest]] > window:
            total -= sizes[oldest]
            oldest += 1
        rates.append(total * 8 / window)
    return rates


def draw(
    packets: StreamPackets,
    kind: GraphKind,
    direction: Direction,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    start: float | None = None,
    end: float | None = None,
    max_points: int = DEFAULT_POINTS,
) -> TcpGraph:
    """Return one graph of a stream's packets."""
    assert packets.conversation is not None
    conversation = packets.conversation
    forward = direction == "client-to-server"
    sender, receiver = conversation.client, conversation.server
    if not forward:
        sender, receiver = receiver, sender
    builder = Builder(packets, direction, start, end, max_points)
    graph = TcpGraph(
        stream=packets.stream,
        direction=direction,
        kind=kind,
        sender=sender.endpoint,
        receiver=receiver.endpoint,
        first_time=min(packets.times),
        last_time=max(packets.times),
        truncated=packets.truncated,
    )
    if kind in ("stevens", "tcptrace"):
        graph.segments = builder.segments()
    if kind == "tcptrace":
        graph.acks = builder.acks()
        graph.sacks = builder.sacks()
    elif kind == "throughput":
        graph.window_seconds = window_seconds
        graph.throughput = builder.throughput(window_seconds)
        graph.goodput = builder.goodput(window_seconds)
    elif kind == "rtt":
        graph.rtt = builder.rtt()
    elif kind == "window":
        graph.in_flight = builder.in_flight()
        graph.windows = builder.windows()
    graph.points, graph.thinned = builder.points, builder.thinned
    return graph


async def tcp_graph(
    path: Path,
    stream: int,
    kind: str,
    direction: str = "client-to-server",
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    start: float | None = None,
    end: float | None = None,
    max_points: int = DEFAULT_POINTS,
) -> TcpGraph:
    """Return a graph (stevens, tcptrace, throughput, rtt, window) of one direction of a TCP stream."""
    check(kind, direction, window_seconds, start, end, max_points)
    packets = await stream_packets(path, stream)
    return await asyncio.to_thread(
        draw,
        packets,
        kind,  # type: ignore[arg-type]
        direction,  # type: ignore[arg-type]
        window_seconds,
        start,
        end,
        max_points,
    )
