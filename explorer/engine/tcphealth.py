"""The health of every TCP conversation: handshake, options, ending, traffic and trouble.

One tshark pass over the whole capture prints, for each TCP frame, the fields of tshark's own
TCP analysis (`tcp.analysis.*`, `tcp.options.*`, `tcp.flags`, `frame.time_relative`); they
are tallied here per `tcp.stream`, so every number in the table is one tshark printed or a
count or difference of them.

Sides. The client is the side that sent the SYN (without ACK). A conversation whose handshake
was not captured has the sender of a SYN/ACK as its server, and otherwise the side with the
higher port as its client (a server listens on the lower, well-known one; with equal ports, the
sender of the first packet): `client_known` is then False.

The score ranks conversations worst first: each kind of trouble weighs what it usually costs
(a lost segment or a retransmission more than a duplicate ACK); an unanswered or refused
connection, and a reset, count as trouble too. A conversation has problems when its score is
above zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

from . import fieldpass
from .errors import EngineError
from .fieldpass import last

# The fields every TCP analysis here reads, and their positions in a line.
FIELDS = [
    "frame.number",
    "frame.time_relative",
    "tcp.stream",
    "ip.src",
    "ipv6.src",
    "tcp.srcport",
    "ip.dst",
    "ipv6.dst",
    "tcp.dstport",
    "frame.len",
    "tcp.len",
    "tcp.flags",
    "tcp.options.mss_val",
    "tcp.options.wscale.shift",
    "tcp.options.sack_perm",
    "tcp.options.timestamp.tsval",
    "tcp.analysis.initial_rtt",
    "tcp.analysis.retransmission",
    "tcp.analysis.fast_retransmission",
    "tcp.analysis.spurious_retransmission",
    "tcp.analysis.duplicate_ack",
    "tcp.analysis.zero_window",
    "tcp.analysis.window_full",
    "tcp.analysis.out_of_order",
    "tcp.analysis.lost_segment",
    "tcp.analysis.ack_lost_segment",
    "tcp.analysis.keep_alive",
    "tcp.analysis.zero_window_probe",
]
(
    FRAME,
    TIME,
    STREAM,
    IP_SOURCE,
    IPV6_SOURCE,
    SOURCE_PORT,
    IP_DESTINATION,
    IPV6_DESTINATION,
    DESTINATION_PORT,
    FRAME_LENGTH,
    LENGTH,
    FLAGS,
    MSS,
    WINDOW_SHIFT,
    SACK_PERMITTED,
    TIMESTAMP,
    INITIAL_RTT,
) = range(17)
# The analysis flags, in FIELDS' order from here, as the names of Problems' counts.
PROBLEM_FIELDS = {
    "retransmissions": 17,
    "fast_retransmissions": 18,
    "spurious_retransmissions": 19,
    "duplicate_acks": 20,
    "zero_windows": 21,
    "window_full": 22,
    "out_of_order": 23,
    "lost_segments": 24,
    "ack_lost_segments": 25,
    "keep_alives": 26,
    "zero_window_probes": 27,
}
FIRST_PROBLEM = 17
assert len(FIELDS) == 28 and min(PROBLEM_FIELDS.values()) == FIRST_PROBLEM

FIN, SYN, RST, ACK = 0x001, 0x002, 0x004, 0x010

# Conversations tallied in one table (each holds a few hundred bytes); a capture with more (a
# scan of a whole network) gets the first ones and says how many more it has.
MAX_CONVERSATIONS = 200_000
# Frames kept per side and kind of trouble, to link a row to its packets.
EXAMPLE_FRAMES = 10
# SYNs kept per conversation (a SYN flood repeats one for ever).
MAX_SYNS = 32

# What each kind of trouble adds to a conversation's score.
WEIGHTS = {
    "lost_segments": 5,
    "retransmissions": 3,
    "zero_windows": 4,
    "window_full": 2,
    "out_of_order": 2,
    "duplicate_acks": 1,
    "ack_lost_segments": 1,
}
# A spurious retransmission was not needed: it weighs 1, not a retransmission's 3.
SPURIOUS_REBATE = 2
ENDING_WEIGHTS = {"unanswered": 20, "refused": 20, "reset": 10}

Side = Literal["client", "server"]
EndingState = Literal["closed", "half-closed", "reset", "refused", "unanswered", "open"]


def elapsed(first: float | None, then: float | None) -> float | None:
    """Return the time from first to then, as exactly as the nanoseconds tshark prints them."""
    return None if first is None or then is None else round(then - first, 9)


@dataclass(slots=True)
class Endpoint:
    address: str
    port: int

    @property
    def label(self) -> str:
        """Return "10.0.0.1:80", or "[2001:db8::1]:80" for IPv6."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class Problems:
    """Counts of frames tshark's TCP analysis flagged; retransmissions include fast and spurious ones."""

    retransmissions: int = 0
    fast_retransmissions: int = 0
    spurious_retransmissions: int = 0
    duplicate_acks: int = 0
    zero_windows: int = 0
    window_full: int = 0
    out_of_order: int = 0
    lost_segments: int = 0
    ack_lost_segments: int = 0
    keep_alives: int = 0
    zero_window_probes: int = 0

    def plus(self, other: Problems) -> Problems:
        if other is NO_PROBLEMS:
            return self
        if self is NO_PROBLEMS:
            return other
        """Return the sum of two sets of counts."""
        return Problems(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def score(self) -> int:
        """Return the weighted count of trouble (see WEIGHTS)."""
        total = sum(weight * getattr(self, name) for name, weight in WEIGHTS.items())
        return total - SPURIOUS_REBATE * self.spurious_retransmissions


# Shared by every side without trouble (most of them), as a conversation table may be large.
NO_PROBLEMS = Problems()


@dataclass(slots=True)
class Direction:
    """What one side sent: frames, bytes (frame.len) and TCP payload (tcp.len), and its trouble."""

    endpoint: Endpoint
    packets: int = 0
    bytes: int = 0
    payload_bytes: int = 0
    problems: Problems = NO_PROBLEMS
    # The first EXAMPLE_FRAMES frames of each kind of trouble, by Problems' names.
    examples: dict[str, list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class Options:
    """The options a side's SYN (or SYN/ACK) carried."""

    mss: int | None = None
    window_shift: int | None = None
    sack_permitted: bool = False
    timestamps: bool = False


@dataclass(slots=True)
class Handshake:
    """The three-way handshake as captured; times are frame.time_relative, in seconds."""

    syn_frames: list[int] = field(default_factory=list)
    syn_times: list[float] = field(default_factory=list)
    syn_count: int = 0
    synack_frame: int | None = None
    synack_time: float | None = None
    ack_frame: int | None = None
    ack_time: float | None = None
    # tshark's tcp.analysis.initial_rtt: from the last SYN to the ACK that completes the handshake.
    initial_rtt: float | None = None
    client_options: Options | None = None
    server_options: Options | None = None

    @property
    def answered_syn_time(self) -> float | None:
        """Return when the SYN that the SYN/ACK answered was sent: the last one before it."""
        if self.synack_time is None:
            return None
        earlier = [t for t in self.syn_times if t <= self.synack_time]
        return earlier[-1] if earlier else None

    @property
    def server_rtt(self) -> float | None:
        """Return SYN to SYN/ACK: the round trip between the capture point and the server."""
        syn = self.answered_syn_time
        return elapsed(syn, self.synack_time)

    @property
    def client_rtt(self) -> float | None:
        """Return SYN/ACK to ACK: the round trip between the capture point and the client."""
        return elapsed(self.synack_time, self.ack_time)

    @property
    def complete(self) -> bool:
        return bool(self.syn_frames) and self.synack_frame is not None and self.ack_frame is not None

    @property
    def mss(self) -> int | None:
        """Return the smaller MSS the two sides announced (the one that limits segments)."""
        announced = [o.mss for o in (self.client_options, self.server_options) if o and o.mss is not None]
        return min(announced) if announced else None

    def both(self, option: Callable[[Options], bool]) -> bool:
        """Return whether both sides offered an option (so that it is in use)."""
        return bool(self.client_options and self.server_options) and all(
            option(o) for o in (self.client_options, self.server_options) if o
        )

    @property
    def window_scaling(self) -> bool:
        return self.both(lambda o: o.window_shift is not None)

    @property
    def sack(self) -> bool:
        return self.both(lambda o: o.sack_permitted)

    @property
    def timestamps(self) -> bool:
        return self.both(lambda o: o.timestamps)


@dataclass(slots=True)
class Ending:
    """How the conversation ended, and the first FIN and RST of each side (frame, time)."""

    state: EndingState
    closed_by: Side | None = None
    reset_by: Side | None = None
    client_fin_frame: int | None = None
    client_fin_time: float | None = None
    server_fin_frame: int | None = None
    server_fin_time: float | None = None
    client_rst_frame: int | None = None
    client_rst_time: float | None = None
    server_rst_frame: int | None = None
    server_rst_time: float | None = None


@dataclass(slots=True)
class TcpConversation:
    stream: int
    client: Direction
    server: Direction
    first_frame: int
    last_frame: int
    start: float
    end: float
    handshake: Handshake
    ending: Ending
    # False when the client was guessed (no SYN captured): see the module's docstring.
    client_known: bool = True

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def packets(self) -> int:
        return self.client.packets + self.server.packets

    @property
    def bytes(self) -> int:
        return self.client.bytes + self.server.bytes

    @property
    def problems(self) -> Problems:
        return self.client.problems.plus(self.server.problems)

    @property
    def filter(self) -> str:
        """Return the display filter of this conversation's packets."""
        return f"tcp.stream eq {self.stream}"

    @property
    def score(self) -> int:
        return self.problems.score + ENDING_WEIGHTS.get(self.ending.state, 0)

    @property
    def has_problems(self) -> bool:
        return self.score > 0


@dataclass(slots=True)
class HealthTable:
    conversations: list[TcpConversation]
    # Conversations past MAX_CONVERSATIONS, counted but not tallied.
    untallied: int = 0
    # tshark's complaint when it stopped before the end of the capture (a file cut short).
    problem: str | None = None


def worst_first(conversations: list[TcpConversation]) -> list[TcpConversation]:
    """Return the conversations by score, highest first; ties by packets, most first, then stream."""
    return sorted(conversations, key=lambda c: (-c.score, -c.packets, c.stream))


SortKey = Literal[
    "score", "stream", "start", "duration", "packets", "bytes", "retransmissions", "initial_rtt"
]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)


def sort_key(name: str) -> Callable[[TcpConversation], tuple[float, int]]:
    """Return the sort key of a column of the table (ties by stream); raise EngineError for another."""
    keys: dict[str, Callable[[TcpConversation], float]] = {
        "score": lambda c: c.score,
        "stream": lambda c: c.stream,
        "start": lambda c: c.start,
        "duration": lambda c: c.duration,
        "packets": lambda c: c.packets,
        "bytes": lambda c: c.bytes,
        "retransmissions": lambda c: c.problems.retransmissions,
        # A conversation without a measured initial RTT sorts before every measured one.
        "initial_rtt": lambda c: -1.0 if c.handshake.initial_rtt is None else c.handshake.initial_rtt,
    }
    if name not in keys:
        raise EngineError(f"unknown sort {name!r}: choose one of {', '.join(SORT_KEYS)}")
    value = keys[name]
    return lambda c: (value(c), c.stream)


def ordered(
    table: HealthTable, sort: str = "score", descending: bool = True, problems_only: bool = False
) -> list[TcpConversation]:
    """Return a table's conversations sorted by a column, only those with problems if asked."""
    chosen = [c for c in table.conversations if c.has_problems] if problems_only else table.conversations
    if sort == "score" and descending:
        return worst_first(chosen)
    return sorted(chosen, key=sort_key(sort), reverse=descending)


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _options(cells: list[str]) -> Options:
    return Options(
        mss=_int(last(cells[MSS])),
        window_shift=_int(last(cells[WINDOW_SHIFT])),
        sack_permitted=bool(cells[SACK_PERMITTED]),
        timestamps=bool(cells[TIMESTAMP]),
    )


def source(cells: list[str]) -> tuple[str, int]:
    """Return a line's innermost source address and TCP port."""
    return last(cells[IP_SOURCE]) or last(cells[IPV6_SOURCE]), int(last(cells[SOURCE_PORT]) or 0)


def destination(cells: list[str]) -> tuple[str, int]:
    return last(cells[IP_DESTINATION]) or last(cells[IPV6_DESTINATION]), int(
        last(cells[DESTINATION_PORT]) or 0
    )


def _frame(seen: tuple[int, float] | None) -> int | None:
    return seen[0] if seen else None


def _time(seen: tuple[int, float] | None) -> float | None:
    return seen[1] if seen else None


class Tally:
    """A conversation's counts as its lines arrive; side 0 is its first packet's sender."""

    __slots__ = (
        "stream",
        "ends",
        "first_frame",
        "last_frame",
        "start",
        "end",
        "packets",
        "bytes",
        "payload",
        "problems",
        "examples",
        "syns",
        "syn_count",
        "syn_side",
        "synack",
        "synack_side",
        "ack",
        "initial_rtt",
        "options",
        "fins",
        "rsts",
    )

    def __init__(self, stream: int, cells: list[str]) -> None:
        self.stream = stream
        self.ends = (source(cells), destination(cells))
        self.first_frame = int(cells[FRAME])
        self.start = float(cells[TIME])
        self.last_frame = self.first_frame
        self.end = self.start
        self.packets = [0, 0]
        self.bytes = [0, 0]
        self.payload = [0, 0]
        # Per side, made at the first trouble: counts by Problems' names, and example frames.
        self.problems: list[dict[str, int]] | None = None
        self.examples: list[dict[str, list[int]]] | None = None
        self.syns: list[tuple[int, float]] = []
        self.syn_count = 0
        self.syn_side: int | None = None
        self.synack: tuple[int, float] | None = None
        self.synack_side: int | None = None
        self.ack: tuple[int, float] | None = None
        self.initial_rtt: float | None = None
        self.options: list[Options | None] = [None, None]
        self.fins: list[tuple[int, float] | None] = [None, None]
        self.rsts: list[tuple[int, float] | None] = [None, None]

    def add(self, cells: list[str]) -> None:
        """Count one of the conversation's lines."""
        side = 0 if source(cells) == self.ends[0] else 1
        frame, time = int(cells[FRAME]), float(cells[TIME])
        self.last_frame, self.end = frame, max(self.end, time)
        self.packets[side] += 1
        self.bytes[side] += int(cells[FRAME_LENGTH] or 0)
        self.payload[side] += int(last(cells[LENGTH]) or 0)
        flags_text = last(cells[FLAGS])
        flags = int(flags_text, 16) if flags_text else 0
        if flags & SYN:
            self._syn(side, flags, frame, time, cells)
        elif flags & ACK and self.synack is not None and self.ack is None and side != self.synack_side:
            self.ack = (frame, time)
        if cells[INITIAL_RTT] and self.initial_rtt is None:
            self.initial_rtt = float(last(cells[INITIAL_RTT]))
        if flags & FIN and self.fins[side] is None:
            self.fins[side] = (frame, time)
        if flags & RST and self.rsts[side] is None:
            self.rsts[side] = (frame, time)
        # Most packets are flagged with nothing: one look at the flags' cells passes them by.
        if not any(cells[FIRST_PROBLEM : len(FIELDS)]):
            return
        for name, index in PROBLEM_FIELDS.items():
            if cells[index]:
                if self.problems is None or self.examples is None:
                    self.problems, self.examples = [{}, {}], [{}, {}]
                counts = self.problems[side]
                counts[name] = counts.get(name, 0) + 1
                kept = self.examples[side].setdefault(name, [])
                if len(kept) < EXAMPLE_FRAMES:
                    kept.append(frame)

    def _syn(self, side: int, flags: int, frame: int, time: float, cells: list[str]) -> None:
        if flags & ACK:
            if self.synack is None:
                self.synack, self.synack_side = (frame, time), side
                self.options[side] = _options(cells)
            return
        if self.syn_side is None:
            self.syn_side = side
            self.options[side] = _options(cells)
        if side == self.syn_side:
            self.syn_count += 1
            if len(self.syns) < MAX_SYNS:
                self.syns.append((frame, time))

    def client_side(self) -> int:
        """Return which side is the client (see the module's docstring)."""
        if self.syn_side is not None:
            return self.syn_side
        if self.synack_side is not None:
            return 1 - self.synack_side
        (_, first_port), (_, second_port) = self.ends
        return 1 if second_port > first_port else 0

    def ending(self, client: int) -> Ending:
        server = 1 - client
        sides: dict[int, Side] = {client: "client", server: "server"}
        fins, rsts = self.fins, self.rsts
        ending = Ending(
            state="open",
            client_fin_frame=_frame(fins[client]),
            client_fin_time=_time(fins[client]),
            server_fin_frame=_frame(fins[server]),
            server_fin_time=_time(fins[server]),
            client_rst_frame=_frame(rsts[client]),
            client_rst_time=_time(rsts[client]),
            server_rst_frame=_frame(rsts[server]),
            server_rst_time=_time(rsts[server]),
        )
        first_fin = min((f[0], side) for side, f in enumerate(fins) if f) if any(fins) else None
        first_rst = min((r[0], side) for side, r in enumerate(rsts) if r) if any(rsts) else None
        if first_fin:
            ending.closed_by = sides[first_fin[1]]
        if first_rst:
            ending.reset_by = sides[first_rst[1]]
        opened = self.syn_side is not None
        if opened and self.synack is None and self.packets[server] == 0:
            ending.state = "unanswered"
        elif opened and self.synack is None and rsts[server] is not None:
            ending.state = "refused"
        elif first_rst:
            ending.state = "reset"
        elif fins[0] and fins[1]:
            ending.state = "closed"
        elif first_fin:
            ending.state = "half-closed"
        return ending

    def conversation(self) -> TcpConversation:
        """Return the finished conversation, its sides named."""
        client = self.client_side()
        server = 1 - client

        def direction(side: int) -> Direction:
            address, port = self.ends[side]
            return Direction(
                endpoint=Endpoint(address, port),
                packets=self.packets[side],
                bytes=self.bytes[side],
                payload_bytes=self.payload[side],
                problems=Problems(**self.problems[side]) if self.problems else NO_PROBLEMS,
                examples=self.examples[side] if self.examples else {},
            )

        handshake = Handshake(
            syn_frames=[frame for frame, _ in self.syns],
            syn_times=[time for _, time in self.syns],
            syn_count=self.syn_count,
            synack_frame=self.synack[0] if self.synack else None,
            synack_time=self.synack[1] if self.synack else None,
            ack_frame=self.ack[0] if self.ack else None,
            ack_time=self.ack[1] if self.ack else None,
            initial_rtt=self.initial_rtt,
            client_options=self.options[client],
            server_options=self.options[server],
        )
        return TcpConversation(
            stream=self.stream,
            client=direction(client),
            server=direction(server),
            first_frame=self.first_frame,
            last_frame=self.last_frame,
            start=self.start,
            end=self.end,
            handshake=handshake,
            ending=self.ending(client),
            client_known=self.syn_side is not None or self.synack_side is not None,
        )


class TableTally:
    """Every conversation's tally, fed one line at a time."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = MAX_CONVERSATIONS if limit is None else limit
        self.tallies: dict[int, Tally] = {}
        # tshark numbers streams from 0 in the order they first appear: the highest number
        # seen tells how many there are without keeping those past the limit.
        self.streams = 0

    def add(self, cells: list[str]) -> None:
        stream_text = last(cells[STREAM])
        if not stream_text:
            return
        stream = int(stream_text)
        tally = self.tallies.get(stream)
        if tally is None:
            self.streams = max(self.streams, stream + 1)
            if len(self.tallies) >= self.limit:
                return
            tally = self.tallies[stream] = Tally(stream, cells)
        tally.add(cells)

    def table(self, problem: str | None = None) -> HealthTable:
        # Each tally is let go as its conversation is made: the two are never all held at once.
        conversations = [self.tallies.pop(s).conversation() for s in sorted(self.tallies)]
        return HealthTable(conversations, untallied=self.streams - len(conversations), problem=problem)


async def tcp_health(path: Path) -> HealthTable:
    """Return every TCP conversation of a capture with its handshake, ending, traffic and trouble."""

    async def compute() -> HealthTable:
        tally = TableTally()
        outcome = await fieldpass.run(path, FIELDS, "tcp", tally.add)
        return tally.table(outcome.problem)

    return await fieldpass.remembered((path, "tcp-health"), compute)
