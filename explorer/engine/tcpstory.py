"""A TCP conversation told in plain sentences, each linked to the packets it speaks of.

"The server answered the SYN after 31 ms (packet 2). The client sent bytes 4,097-5,464 again
3 times, 200 ms, 400 ms and 800 ms after the first try (packet 39): packets 41, 43, 47. The
server closed with a FIN (packet 60); the client reset the connection 2.0 ms later (packet 61)."

Every number is one tshark printed for the stream's packets (tcpstream) or a difference of
them: times are frame.time_relative, byte ranges are the relative tcp.seq to tcp.nxtseq - 1,
and what happened is what tshark's analysis flagged (tcp.analysis.*) and the TCP flags.
A retransmission's "first try" is the first earlier segment from the same side that carried
any of the same bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .tcphealth import Direction, Endpoint, Handshake, Options, TcpConversation, elapsed
from .tcpstream import ABSENT, StreamPackets, stream_packets

SentenceKind = Literal[
    "handshake", "options", "traffic", "retransmission", "duplicate-ack", "window", "order", "loss", "ending"
]

SYN, FIN = 0x002, 0x001
# Sentences of one kind told one by one; the rest are summed up in one more.
MAX_TOLD = 12
# Packet numbers named in one sentence at most.
MAX_FRAMES_NAMED = 10


@dataclass
class Sentence:
    kind: SentenceKind
    text: str
    frames: list[int] = field(default_factory=list)


@dataclass
class Story:
    stream: int
    client: Endpoint
    server: Endpoint
    sentences: list[Sentence]
    # The stream has more packets than tcpstream.MAX_STREAM_PACKETS: the story tells the first.
    truncated: bool = False


def duration_text(seconds: float) -> str:
    """Return a duration as people read it: 0.073 ms, 2.1 ms, 31 ms, 2.0 s."""
    if seconds < 0.001:
        return f"{seconds * 1000:.3f} ms"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def time_text(seconds: float) -> str:
    """Return a time from the start of the capture, to the microsecond: 60.991770 s."""
    return f"{seconds:.6f} s"


def joined(items: list[str], conjunction: str = "and") -> str:
    """Return "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {conjunction} " + items[-1]


def packets_text(frames: list[int]) -> str:
    """Return "packet 4" or "packets 4, 6 and 9" (the first MAX_FRAMES_NAMED, then how many more)."""
    if len(frames) == 1:
        return f"packet {frames[0]}"
    named = [str(frame) for frame in frames[:MAX_FRAMES_NAMED]]
    if len(frames) > MAX_FRAMES_NAMED:
        return f"packets {', '.join(named)} and {len(frames) - MAX_FRAMES_NAMED} more"
    return f"packets {joined(named)}"


def times_text(count: int) -> str:
    return "once" if count == 1 else "twice" if count == 2 else f"{count:,} times"


def byte_range(seq: int, next_seq: int) -> str:
    return f"{seq:,}-{next_seq - 1:,}"


class Teller:
    """Builds the sentences of one stream's story."""

    def __init__(self, packets: StreamPackets) -> None:
        assert packets.conversation is not None
        self.packets = packets
        self.conversation: TcpConversation = packets.conversation
        self.sentences: list[Sentence] = []
        # The packets tshark flagged with some trouble, found once: a stream may be a million long.
        self.troubled = [i for i, bits in enumerate(packets.analysis) if bits]

    def flagged_by(self, name: str, side: int | None = None) -> list[int]:
        """Return the indexes of the packets flagged with one kind of trouble (of one side)."""
        p = self.packets
        return [i for i in self.troubled if p.flagged(i, name) and (side is None or p.from_client[i] == side)]

    def say(self, kind: SentenceKind, text: str, frames: list[int] | None = None) -> None:
        self.sentences.append(Sentence(kind, text, sorted(set(frames or []))))

    def side_name(self, from_client: int) -> str:
        return "client" if from_client else "server"

    def story(self) -> Story:
        self.opening()
        self.options()
        self.traffic()
        self.retransmissions()
        self.duplicate_acks()
        self.zero_windows()
        self.flagged("window_full", "window", "filled the other side's receive window")
        self.flagged("out_of_order", "order", "sent segments that arrived out of order")
        self.losses()
        self.ending()
        return Story(
            stream=self.packets.stream,
            client=self.conversation.client.endpoint,
            server=self.conversation.server.endpoint,
            sentences=self.sentences,
            truncated=self.packets.truncated,
        )

    def opening(self) -> None:
        c = self.conversation
        handshake = c.handshake
        client, server = c.client.endpoint.label, c.server.endpoint.label
        if not handshake.syn_frames:
            if handshake.synack_frame is not None:
                self.say(
                    "handshake",
                    f"The capture missed the client's SYN: it starts with the server's SYN/ACK "
                    f"(packet {handshake.synack_frame}), from {server} to {client}.",
                    [handshake.synack_frame],
                )
            else:
                self.say(
                    "handshake",
                    f"The capture starts in the middle of the connection between {client} and {server} "
                    f"(packet {c.first_frame}): its handshake was not captured, so the client named here "
                    f"is the side with the higher port.",
                    [c.first_frame],
                )
            self.handshake_end(handshake)
            return
        syns = handshake.syn_frames
        if handshake.syn_count == 1:
            self.say(
                "handshake", f"The client {client} opened a connection to {server} (packet {syns[0]}).", syns
            )
        else:
            self.say(
                "handshake",
                f"The client {client} sent its SYN to {server} {times_text(handshake.syn_count)} "
                f"({packets_text(syns)}), "
                f"over {_since(handshake.syn_times[0], handshake.syn_times[-1])}.",
                syns,
            )
        if c.ending.state == "unanswered":
            self.say("handshake", "The server never answered.", [])
            return
        if c.ending.state == "refused":
            rst_frame, rst_time = c.ending.server_rst_frame, c.ending.server_rst_time
            assert rst_frame is not None and rst_time is not None
            before = [t for t in handshake.syn_times if t <= rst_time]
            after = f" {_since(before[-1], rst_time)} after the SYN" if before else ""
            self.say(
                "handshake",
                f"The server refused the connection: it answered with a reset{after} (packet {rst_frame}).",
                [rst_frame],
            )
            return
        self.handshake_end(handshake)

    def handshake_end(self, handshake: Handshake) -> None:
        if handshake.synack_frame is not None and handshake.server_rtt is not None:
            self.say(
                "handshake",
                f"The server answered the SYN after {duration_text(handshake.server_rtt)} "
                f"(packet {handshake.synack_frame}).",
                [handshake.synack_frame],
            )
        if handshake.ack_frame is not None and handshake.client_rtt is not None:
            total = ""
            if handshake.initial_rtt is not None:
                total = f": a round trip of {duration_text(handshake.initial_rtt)} in all"
            self.say(
                "handshake",
                f"The client completed the handshake {duration_text(handshake.client_rtt)} later "
                f"(packet {handshake.ack_frame}){total}.",
                [handshake.ack_frame],
            )

    def options(self) -> None:
        handshake = self.conversation.handshake
        client, server = handshake.client_options, handshake.server_options
        if client is None or server is None:
            return
        frames = [f for f in (handshake.syn_frames[:1] + [handshake.synack_frame or 0]) if f]
        sentences = []
        if client.mss is not None or server.mss is not None:
            sentences.append(
                f"The client announced a largest segment (MSS) of {_mss(client)} bytes, "
                f"the server {_mss(server)}."
            )
        used, one_sided, neither = [], [], []
        offers = (
            ("window scaling", client.window_shift is not None, server.window_shift is not None),
            ("SACK", client.sack_permitted, server.sack_permitted),
            ("timestamps", client.timestamps, server.timestamps),
        )
        for name, by_client, by_server in offers:
            if by_client and by_server:
                used.append(name)
            elif by_client or by_server:
                offering, other = ("client", "server") if by_client else ("server", "client")
                one_sided.append(f"The {offering} offered {name} but the {other} did not, so it is not used.")
            else:
                neither.append(name)
        if used:
            if (
                "window scaling" in used
                and client.window_shift is not None
                and server.window_shift is not None
            ):
                scale = (
                    f"window scaling (client ×{2**client.window_shift:,}, server ×{2**server.window_shift:,})"
                )
                used[used.index("window scaling")] = scale
            sentences.append(f"Both sides use {joined(used)}.")
        sentences += one_sided
        if neither:
            sentences.append(f"Neither side offered {joined(neither, 'or')}.")
        self.say("options", " ".join(sentences), frames)

    def traffic(self) -> None:
        c = self.conversation

        def sent(name: str, side: Direction) -> str:
            if not side.packets:
                return f"the {name} sent nothing"
            packets = f"{side.packets:,} packet{'s' if side.packets != 1 else ''}"
            if not side.payload_bytes:
                return f"the {name} sent no data ({packets})"
            return f"the {name} sent {side.payload_bytes:,} bytes of data in {packets}"

        text = f"{sent('client', c.client)}; {sent('server', c.server)}."
        self.say("traffic", text[0].upper() + text[1:], [])

    def retransmissions(self) -> None:
        p = self.packets
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i in self.flagged_by("retransmissions"):
            if p.flags[i] & SYN or p.seqs[i] == ABSENT:
                continue
            end = p.next_seqs[i] if p.next_seqs[i] != ABSENT else p.seqs[i]
            groups.setdefault((p.from_client[i], p.seqs[i], end), []).append(i)
        told = 0
        left: list[int] = []
        for (side, seq, end), indexes in groups.items():
            if told >= MAX_TOLD:
                left += [p.frames[i] for i in indexes]
                continue
            told += 1
            self.retransmission(side, seq, end, indexes)
        if left:
            self.say(
                "retransmission",
                f"There were {len(left):,} more retransmissions ({packets_text(left)}).",
                left,
            )

    def first_try(self, side: int, seq: int, end: int, before: int) -> int | None:
        """Return the index of the first earlier segment from a side that carried any of seq..end."""
        p = self.packets
        for i in range(before):
            if p.from_client[i] != side or p.seqs[i] == ABSENT or p.flagged(i, "retransmissions"):
                continue
            other_end = p.next_seqs[i] if p.next_seqs[i] != ABSENT else p.seqs[i]
            if p.seqs[i] < max(end, seq + 1) and seq < max(other_end, p.seqs[i] + 1):
                return i
        return None

    def retransmission(self, side: int, seq: int, end: int, indexes: list[int]) -> None:
        p = self.packets
        who = self.side_name(side)
        if end > seq:
            what = f"bytes {byte_range(seq, end)}"
        elif p.flags[indexes[0]] & FIN:
            what = "its FIN"
        else:
            what = f"an empty segment at {seq:,}"
        frames = [p.frames[i] for i in indexes]
        first = self.first_try(side, seq, end, indexes[0])
        kinds = []
        fast = [p.frames[i] for i in indexes if p.flagged(i, "fast_retransmissions")]
        spurious = [p.frames[i] for i in indexes if p.flagged(i, "spurious_retransmissions")]
        if fast:
            kinds.append(_which("fast retransmission", fast, len(indexes)))
        if spurious:
            kinds.append(_which("spurious retransmission", spurious, len(indexes)) + ": not needed")
        again = "again" if len(indexes) == 1 else f"again {times_text(len(indexes))}"
        if first is None:
            text = f"The {who} sent {what} {again} ({packets_text(frames)}); the first try was not captured."
            linked = frames
        else:
            delays = [_since(p.times[first], p.times[i]) for i in indexes]
            text = (
                f"The {who} sent {what} {again}, {joined(delays)} after the first try "
                f"(packet {p.frames[first]}): {packets_text(frames)}."
            )
            linked = [p.frames[first], *frames]
        if kinds:
            text = text[:-1] + f" ({'; '.join(kinds)})."
        self.say("retransmission", text, linked)

    def duplicate_acks(self) -> None:
        p = self.packets
        groups: dict[tuple[int, int], list[int]] = {}
        for i in self.flagged_by("duplicate_acks"):
            groups.setdefault((p.from_client[i], p.acks[i]), []).append(p.frames[i])
        for told, ((side, ack), frames) in enumerate(groups.items()):
            if told >= MAX_TOLD:
                rest = [f for fs in list(groups.values())[MAX_TOLD:] for f in fs]
                self.say(
                    "duplicate-ack",
                    f"There were {len(rest):,} more duplicate ACKs ({packets_text(rest)}).",
                    rest,
                )
                break
            count = f"{len(frames):,} duplicate ACK{'s' if len(frames) > 1 else ''}"
            self.say(
                "duplicate-ack",
                f"The {self.side_name(side)} sent {count} of {ack:,} ({packets_text(frames)}), "
                f"asking again for the bytes from {ack:,}.",
                frames,
            )

    def zero_windows(self) -> None:
        p = self.packets
        for side in (1, 0):
            zeros = self.flagged_by("zero_windows", side)
            if not zeros:
                continue
            who = self.side_name(side)
            frames = [p.frames[i] for i in zeros]
            opened = self.reopened(side, zeros[-1])
            if len(zeros) == 1:
                when = f"at {time_text(p.times[zeros[0]])} (packet {frames[0]})"
            else:
                when = f"{times_text(len(zeros))} ({packets_text(frames)})"
            text = f"The {who}'s receive buffer filled up: it advertised a zero window {when}"
            if opened is None:
                text += ", and had not opened it again when the capture ended."
            else:
                delay = _since(p.times[zeros[-1]], p.times[opened])
                since = "later" if len(zeros) == 1 else "after the last one"
                text += f", and opened it again {delay} {since} (packet {p.frames[opened]})."
                frames.append(p.frames[opened])
            self.say("window", text, frames)

    def reopened(self, side: int, after: int) -> int | None:
        """Return the index of the side's first packet after `after` offering a window above zero."""
        p = self.packets
        for i in range(after + 1, len(p)):
            if p.from_client[i] == side and p.windows[i] not in (ABSENT, 0):
                return i
        return None

    def flagged(self, name: str, kind: SentenceKind, what: str) -> None:
        p = self.packets
        for side in (1, 0):
            frames = [p.frames[i] for i in self.flagged_by(name, side)]
            if frames:
                self.say(
                    kind,
                    f"The {self.side_name(side)} {what} {times_text(len(frames))} ({packets_text(frames)}).",
                    frames,
                )

    def losses(self) -> None:
        p = self.packets
        for side in (1, 0):
            who = self.side_name(side)
            other = self.side_name(1 - side)
            lost = [p.frames[i] for i in self.flagged_by("lost_segments", side)]
            if lost:
                self.say(
                    "loss",
                    f"The capture missed segments the {who} sent before {packets_text(lost)}: "
                    f"the sequence numbers jump ahead there.",
                    lost,
                )
            unseen = [p.frames[i] for i in self.flagged_by("ack_lost_segments", side)]
            if unseen:
                self.say(
                    "loss",
                    f"The {who} acknowledged segments of the {other} that the capture never saw "
                    f"({packets_text(unseen)}).",
                    unseen,
                )

    def ending(self) -> None:
        c = self.conversation
        e = c.ending
        if e.state in ("refused", "unanswered"):
            return
        # The first FIN of each side and the first reset, told in the order they happened.
        seen: list[tuple[float, int, str, str]] = []
        for side, frame, time, what in (
            ("client", e.client_fin_frame, e.client_fin_time, "fin"),
            ("server", e.server_fin_frame, e.server_fin_time, "fin"),
            ("client", e.client_rst_frame, e.client_rst_time, "rst"),
            ("server", e.server_rst_frame, e.server_rst_time, "rst"),
        ):
            if frame is not None and time is not None and (what == "fin" or side == e.reset_by):
                seen.append((time, frame, side, what))
        parts: list[str] = []
        frames: list[int] = []
        previous: float | None = None
        fin_told = False
        for time, frame, side, what in sorted(seen):
            if previous is None:
                first = "closed with a FIN" if what == "fin" else f"reset the connection at {time_text(time)}"
                parts.append(f"The {side} {first} (packet {frame})")
            elif what == "fin":
                own = "its own FIN" if fin_told else "a FIN"
                parts.append(f"the {side} sent {own} {_since(previous, time)} later (packet {frame})")
            else:
                parts.append(
                    f"the {side} reset the connection {_since(previous, time)} later (packet {frame})"
                )
            fin_told |= what == "fin"
            previous = time
            frames.append(frame)
        if e.state == "half-closed":
            other = "server" if e.closed_by == "client" else "client"
            parts.append(f"the {other} had not closed its side when the capture ended")
        if e.state == "open":
            self.say(
                "ending",
                f"The connection was still open when the capture ended (its last packet, {c.last_frame}, "
                f"at {time_text(c.end)}).",
                [c.last_frame],
            )
            return
        self.say("ending", "; ".join(parts) + ".", frames)


def _since(first: float, then: float) -> str:
    return duration_text(elapsed(first, then) or 0.0)


def _which(name: str, frames: list[int], of: int) -> str:
    """Return "a fast retransmission", "all fast retransmissions" or "fast retransmissions: packet 4"."""
    if of == 1:
        return f"a {name}"
    if len(frames) == of:
        return f"all {name}s"
    return f"{name}s: {packets_text(frames)}"


def _mss(options: Options) -> str:
    return f"{options.mss:,}" if options.mss is not None else "none"


def tell(packets: StreamPackets) -> Story:
    """Return the story of a stream's packets."""
    return Teller(packets).story()


async def tcp_story(path: Path, stream: int) -> Story:
    """Return the story of one TCP stream of a capture."""
    packets = await stream_packets(path, stream)
    return await asyncio.to_thread(tell, packets)
