"""SIP calls and RTP streams, as Wireshark's Telephony → VoIP Calls, SIP Flows and RTP Streams show them.

One tshark pass prints the SIP, SDP and RTP fields of every SIP and RTP packet, and after them
tshark's own `-z rtp,streams` table (packets, lost, deltas and jitter of every stream). Calls
are then put together here as Wireshark's VoIP Calls does (ui/voip_calls.c): a call per SIP
Call-ID, started by an INVITE (or, for SIP Flows, by any request), whose state follows its
INVITE's answers and its ACK, BYE or CANCEL. An RTP stream belongs to the calls whose SIP
packets set it up (`rtp.setup-frame`).

RTP over UDP is found where SIP/SDP (or another signalling protocol) announced it; streams
nothing announced are found only with Wireshark's RTP heuristic (`heuristic_rtp=True`).
A frame carrying several SIP messages (SIP over TCP) counts as its first.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import fieldpass
from .errors import EngineError
from .fieldpass import last, values

FIELDS = [
    "frame.number",
    "frame.time_relative",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "sip.Call-ID",
    "sip.Method",
    "sip.Status-Code",
    "sip.Status-Line",
    "sip.CSeq.seq",
    "sip.from.addr",
    "sip.to.addr",
    "sip.resend",
    "sdp.media",
    "sdp.connection_info.address",
    "rtp.ssrc",
    "rtp.p_type",
    "rtp.setup-frame",
]
(
    FRAME,
    TIME,
    IP_SOURCE,
    IPV6_SOURCE,
    IP_DESTINATION,
    IPV6_DESTINATION,
    UDP_SOURCE,
    UDP_DESTINATION,
    TCP_SOURCE,
    TCP_DESTINATION,
    CALL_ID,
    METHOD,
    STATUS,
    STATUS_LINE,
    CSEQ,
    FROM,
    TO,
    RESENT,
    SDP_MEDIA,
    SDP_ADDRESS,
    SSRC,
    PAYLOAD_TYPE,
    SETUP_FRAME,
) = range(23)
FILTER = "sip || rtp"
STATISTICS = ["rtp,streams"]
HEURISTIC_RTP = ["rtp.heuristic_rtp:TRUE"]

# What one capture's summary keeps: SIP messages (a few hundred bytes each), RTP streams, and
# setup frames per stream. A capture with more says so.
MAX_SIP_MESSAGES = 200_000
MAX_RTP_STREAMS = 10_000
MAX_SETUP_FRAMES = 16
# Calls one flow diagram may show.
MAX_FLOW_CALLS = 100

CallState = Literal["setup", "in-call", "canceled", "completed", "rejected"]
# Wireshark's names for the states, as its VoIP Calls dialog shows them.
STATE_LABELS = {
    "setup": "CALL SETUP",
    "in-call": "IN CALL",
    "canceled": "CANCELED",
    "completed": "COMPLETED",
    "rejected": "REJECTED",
}

RTP_STREAMS_TITLE = "RTP Streams"
# "0x17D90134 g711A, CN  1171     0 (0.0%)  1.078 ..." after start, end, addresses and ports.
STREAM_ROW = re.compile(
    r"^\s*(?P<start>-?[\d.]+)\s+(?P<end>-?[\d.]+)\s+(?P<source>\S+)\s+(?P<source_port>\d+)\s+"
    r"(?P<destination>\S+)\s+(?P<destination_port>\d+)\s+(?P<ssrc>0x[0-9A-Fa-f]+)\s+(?P<payload>.*?)\s+"
    r"(?P<packets>\d+)\s+(?P<lost>-?\d+)\s+\((?P<lost_percent>-?[\d.]+)%\)\s+"
    r"(?P<min_delta>-?[\d.]+)\s+(?P<mean_delta>-?[\d.]+)\s+(?P<max_delta>-?[\d.]+)\s+"
    r"(?P<min_jitter>-?[\d.]+)\s+(?P<mean_jitter>-?[\d.]+)\s+(?P<max_jitter>-?[\d.]+)\s*(?P<problem>X?)\s*$"
)
STREAM_ID = re.compile(
    r"^(?P<source>[^_]+)_(?P<sport>\d+)_(?P<destination>[^_]+)_(?P<dport>\d+)_0x(?P<ssrc>[0-9A-Fa-f]{1,8})$"
)


@dataclass
class SipMessage:
    frame: int
    time: float
    source: str
    source_port: int | None
    destination: str
    destination_port: int | None
    call_id: str
    method: str | None
    status: int | None
    reason: str
    cseq: int | None
    from_uri: str
    to_uri: str
    resent: bool
    # The SDP body's media lines ("audio 16756 RTP/AVP 8 101") and connection addresses.
    sdp_media: list[str] = field(default_factory=list)
    sdp_addresses: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Return what a flow diagram writes on the message's arrow: "INVITE", "200 OK", with "SDP"."""
        text = self.method or f"{self.status} {self.reason}".strip()
        return f"{text} SDP ({'; '.join(self.sdp_media)})" if self.sdp_media else text


@dataclass
class Call:
    """A SIP call (or, with all flows, any SIP dialog), as a row of Wireshark's VoIP Calls."""

    number: int
    call_id: str
    from_uri: str
    to_uri: str
    # The address that sent the first request: Wireshark's "Initial Speaker".
    initial_speaker: str
    start: float
    stop: float
    state: CallState
    # The first request's method, and the final answers to its INVITE: "INVITE 200".
    comment: str
    packets: int
    first_frame: int
    last_frame: int
    frames: list[int] = field(default_factory=list)
    # The ids of the RTP streams this call's SIP packets set up.
    streams: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return round(self.stop - self.start, 9)

    @property
    def state_label(self) -> str:
        return STATE_LABELS[self.state]

    @property
    def filter(self) -> str:
        """Return the display filter of the call's SIP packets."""
        return f'sip.Call-ID == "{_escaped(self.call_id)}"'


@dataclass
class RtpStream:
    """A row of tshark's `-z rtp,streams`, with the frames the stream spans and what set it up."""

    source: str
    source_port: int
    destination: str
    destination_port: int
    ssrc: int
    payload: str
    packets: int
    lost: int
    lost_percent: float
    # Milliseconds; tshark prints -1 for the jitter of a payload whose clock rate it does not know.
    min_delta: float
    mean_delta: float
    max_delta: float
    min_jitter: float
    mean_jitter: float
    max_jitter: float
    problem: bool
    start: float
    end: float
    first_frame: int | None = None
    last_frame: int | None = None
    payload_types: list[int] = field(default_factory=list)
    setup_frames: list[int] = field(default_factory=list)

    @property
    def id(self) -> str:
        """Return the stream's name: source_port_destination_port_0xSSRC, as sharkd names it."""
        return stream_id(self.source, self.source_port, self.destination, self.destination_port, self.ssrc)

    @property
    def expected(self) -> int:
        return self.packets + self.lost

    @property
    def duration(self) -> float:
        return round(self.end - self.start, 9)

    @property
    def filter(self) -> str:
        """Return the display filter of the stream's packets."""
        return stream_filter(self.id)


@dataclass
class VoipSummary:
    messages: list[SipMessage]
    streams: list[RtpStream]
    # SIP messages past MAX_SIP_MESSAGES, and RTP streams past MAX_RTP_STREAMS, not kept.
    untallied_messages: int = 0
    untallied_streams: int = 0
    problem: str | None = None


@dataclass
class LadderItem:
    """An arrow of a call's flow diagram: a SIP message, or an RTP stream from its first to last packet."""

    kind: Literal["sip", "rtp"]
    call: int
    frame: int
    time: float
    source: str
    destination: str
    label: str
    comment: str
    last_frame: int | None = None
    end_time: float | None = None


@dataclass
class CallFlow:
    calls: list[int]
    nodes: list[str]
    items: list[LadderItem]


def stream_id(source: str, source_port: int, destination: str, destination_port: int, ssrc: int) -> str:
    return f"{source}_{source_port}_{destination}_{destination_port}_0x{ssrc:08X}"


def parse_stream_id(text: str) -> tuple[str, int, str, int, int]:
    """Return (source, port, destination, port, SSRC) of a stream id; raise EngineError for a bad one."""
    match = STREAM_ID.match(text.strip())
    if match is None:
        raise EngineError(f"{text!r} is not an RTP stream: expect SOURCE_PORT_DESTINATION_PORT_0xSSRC")
    try:
        source = str(ipaddress.ip_address(match["source"]))
        destination = str(ipaddress.ip_address(match["destination"]))
    except ValueError:
        raise EngineError(f"{text!r} does not name two IP addresses") from None
    ports = int(match["sport"]), int(match["dport"])
    if not all(0 <= port <= 65535 for port in ports):
        raise EngineError(f"{text!r} has a port out of range")
    return source, ports[0], destination, ports[1], int(match["ssrc"], 16)


def stream_filter(text: str) -> str:
    """Return the display filter of an RTP stream's packets."""
    source, source_port, destination, destination_port, ssrc = parse_stream_id(text)
    version = "ipv6" if ":" in source else "ip"
    return (
        f"{version}.src == {source} && udp.srcport == {source_port} && "
        f"{version}.dst == {destination} && udp.dstport == {destination_port} && rtp.ssrc == 0x{ssrc:08x}"
    )


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _port(cells: list[str], udp: int, tcp: int) -> int | None:
    text = last(cells[udp]) or last(cells[tcp])
    return int(text) if text.isdigit() else None


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


class SummaryReader:
    """Gathers the SIP messages, the RTP streams' frames and tshark's RTP statistics of a pass."""

    def __init__(self) -> None:
        self.messages: list[SipMessage] = []
        self.untallied_messages = 0
        # (source, port, destination, port, ssrc) -> [first frame, last frame, payload types, setup frames]
        self.rtp: dict[tuple[str, int, str, int, int], tuple[list[int], list[int], list[int]]] = {}
        self.untallied_streams: set[tuple[str, int, str, int, int]] = set()
        self.statistics: list[str] = []

    def add(self, cells: list[str]) -> None:
        if len(cells) != len(FIELDS):
            self.statistics.append("\t".join(cells))
            return
        if cells[CALL_ID]:
            self.sip(cells)
        if cells[SSRC]:
            self.rtp_packet(cells)

    def sip(self, cells: list[str]) -> None:
        if len(self.messages) >= MAX_SIP_MESSAGES:
            self.untallied_messages += 1
            return
        status_line = values(cells[STATUS_LINE])
        status = _int(values(cells[STATUS])[0]) if cells[STATUS] else None
        reason = ""
        if status is not None and status_line:
            reason = status_line[0].split(" ", 2)[2] if status_line[0].count(" ") >= 2 else ""
        cseq = values(cells[CSEQ])
        self.messages.append(
            SipMessage(
                frame=int(cells[FRAME]),
                time=float(cells[TIME]),
                source=last(cells[IP_SOURCE]) or last(cells[IPV6_SOURCE]),
                source_port=_port(cells, UDP_SOURCE, TCP_SOURCE),
                destination=last(cells[IP_DESTINATION]) or last(cells[IPV6_DESTINATION]),
                destination_port=_port(cells, UDP_DESTINATION, TCP_DESTINATION),
                call_id=values(cells[CALL_ID])[0],
                method=values(cells[METHOD])[0] if cells[METHOD] else None,
                status=status,
                reason=reason,
                cseq=_int(cseq[0]) if cseq else None,
                from_uri=values(cells[FROM])[0] if cells[FROM] else "",
                to_uri=values(cells[TO])[0] if cells[TO] else "",
                resent=values(cells[RESENT])[:1] == ["1"],
                sdp_media=values(cells[SDP_MEDIA]),
                sdp_addresses=values(cells[SDP_ADDRESS]),
            )
        )

    def rtp_packet(self, cells: list[str]) -> None:
        source = last(cells[IP_SOURCE]) or last(cells[IPV6_SOURCE])
        destination = last(cells[IP_DESTINATION]) or last(cells[IPV6_DESTINATION])
        ports = _port(cells, UDP_SOURCE, TCP_SOURCE), _port(cells, UDP_DESTINATION, TCP_DESTINATION)
        if ports[0] is None or ports[1] is None:
            return
        key = (source, ports[0], destination, ports[1], int(last(cells[SSRC]), 16))
        frame = int(cells[FRAME])
        known = self.rtp.get(key)
        if known is None:
            if len(self.rtp) >= MAX_RTP_STREAMS:
                if len(self.untallied_streams) < MAX_RTP_STREAMS:
                    self.untallied_streams.add(key)
                return
            known = self.rtp[key] = ([frame, frame], [], [])
        known[0][1] = frame
        payload_type = _int(last(cells[PAYLOAD_TYPE]))
        if payload_type is not None and payload_type not in known[1]:
            known[1].append(payload_type)
        setup = _int(last(cells[SETUP_FRAME]))
        if setup is not None and setup not in known[2] and len(known[2]) < MAX_SETUP_FRAMES:
            known[2].append(setup)

    def summary(self, problem: str | None) -> VoipSummary:
        streams = []
        for row in rtp_streams_table("\n".join(self.statistics)):
            key = (row.source, row.source_port, row.destination, row.destination_port, row.ssrc)
            if key in self.rtp:
                (first, final), types, setups = self.rtp[key]
                row.first_frame, row.last_frame = first, final
                row.payload_types, row.setup_frames = types, setups
            streams.append(row)
        return VoipSummary(
            messages=self.messages,
            streams=streams,
            untallied_messages=self.untallied_messages,
            untallied_streams=len(self.untallied_streams),
            problem=problem,
        )


def rtp_streams_table(output: str) -> list[RtpStream]:
    """Parse the rows of tshark's `-z rtp,streams` table."""
    rows = []
    inside = False
    for line in output.splitlines():
        if RTP_STREAMS_TITLE in line:
            inside = True
            continue
        if not inside:
            continue
        match = STREAM_ROW.match(line)
        if match is None:
            continue
        rows.append(
            RtpStream(
                source=match["source"],
                source_port=int(match["source_port"]),
                destination=match["destination"],
                destination_port=int(match["destination_port"]),
                ssrc=int(match["ssrc"], 16),
                payload=match["payload"],
                packets=int(match["packets"]),
                lost=int(match["lost"]),
                lost_percent=float(match["lost_percent"]),
                min_delta=float(match["min_delta"]),
                mean_delta=float(match["mean_delta"]),
                max_delta=float(match["max_delta"]),
                min_jitter=float(match["min_jitter"]),
                mean_jitter=float(match["mean_jitter"]),
                max_jitter=float(match["max_jitter"]),
                problem=match["problem"] == "X",
                start=float(match["start"]),
                end=float(match["end"]),
            )
        )
    return rows


async def voip_summary(path: Path, heuristic_rtp: bool = False) -> VoipSummary:
    """Return the SIP messages and RTP streams of a capture (one tshark pass, remembered)."""

    async def compute() -> VoipSummary:
        reader = SummaryReader()
        preferences = HEURISTIC_RTP if heuristic_rtp else None
        outcome = await fieldpass.run(path, FIELDS, FILTER, reader.add, preferences, STATISTICS)
        return reader.summary(outcome.problem)

    return await fieldpass.remembered((path, "voip", heuristic_rtp), compute)


class CallBuilder:
    """Wireshark's VoIP Calls state machine for SIP (ui/voip_calls.c, sip_calls_packet)."""

    def __init__(self, all_flows: bool) -> None:
        self.all_flows = all_flows
        self.calls: dict[str, Call] = {}
        # Per call: the CSeq of its INVITE, and whether a 2xx answered it.
        self.invite_cseq: dict[str, int | None] = {}
        self.answered: dict[str, bool] = {}
        self.cancel_sent: dict[str, bool] = {}

    def add(self, message: SipMessage) -> None:
        call = self.calls.get(message.call_id)
        if call is None:
            if message.method is None or not (self.all_flows or message.method == "INVITE"):
                return
            call = self.calls[message.call_id] = Call(
                number=len(self.calls),
                call_id=message.call_id,
                from_uri=message.from_uri,
                to_uri=message.to_uri,
                initial_speaker=message.source,
                start=message.time,
                stop=message.time,
                state="setup",
                comment=message.method,
                packets=0,
                first_frame=message.frame,
                last_frame=message.frame,
            )
            self.invite_cseq[message.call_id] = message.cseq
            self.answered[message.call_id] = False
            self.cancel_sent[message.call_id] = False
        key = message.call_id
        if message.method is None:
            if message.cseq == self.invite_cseq[key] and message.destination == call.initial_speaker:
                waiting = not self.answered[key] and not self.cancel_sent[key]
                if message.status is not None and 199 < message.status < 300 and waiting:
                    self.answered[key] = True
                elif message.status is not None and message.status > 299 and waiting:
                    call.state = "rejected"
                if message.status is not None and message.status >= 200:
                    call.comment += f" {message.status}"
        elif message.method == "INVITE" and message.source == call.initial_speaker:
            self.invite_cseq[key] = message.cseq
            call.state = "setup"
        elif (
            message.method == "ACK"
            and message.cseq == self.invite_cseq[key]
            and message.source == call.initial_speaker
            and self.answered[key]
            and call.state == "setup"
        ):
            call.state = "in-call"
        elif message.method == "BYE":
            call.state = "completed"
        elif (
            message.method == "CANCEL"
            and message.cseq == self.invite_cseq[key]
            and message.source == call.initial_speaker
            and call.state == "setup"
        ):
            call.state = "canceled"
            self.cancel_sent[key] = True
        call.stop = message.time
        call.last_frame = message.frame
        call.packets += 1
        call.frames.append(message.frame)


def calls_of(summary: VoipSummary, all_flows: bool = False) -> list[Call]:
    """Return the calls of a summary, numbered in the order they started."""
    builder = CallBuilder(all_flows)
    for message in summary.messages:
        builder.add(message)
    calls = list(builder.calls.values())
    by_frame = {frame: call for call in calls for frame in call.frames}
    for stream in summary.streams:
        owners = {by_frame[f].number for f in stream.setup_frames if f in by_frame}
        for call in calls:
            if call.number in owners:
                call.streams.append(stream.id)
    return calls


async def voip_calls(path: Path, all_flows: bool = False, heuristic_rtp: bool = False) -> list[Call]:
    """Return the SIP calls of a capture (every SIP dialog with all_flows), in the order they started."""
    return calls_of(await voip_summary(path, heuristic_rtp), all_flows)


async def rtp_streams(path: Path, heuristic_rtp: bool = False) -> list[RtpStream]:
    """Return the RTP streams of a capture, as tshark's `-z rtp,streams` lists them."""
    return (await voip_summary(path, heuristic_rtp)).streams


def flow_of(summary: VoipSummary, calls: list[Call], numbers: list[int]) -> CallFlow:
    """Return the flow diagram of some calls: their SIP messages and RTP streams, in time order."""
    chosen = {call.number: call for call in calls if call.number in set(numbers)}
    missing = sorted(set(numbers) - set(chosen))
    if missing:
        raise EngineError(f"there is no call {missing[0]} in this capture")
    by_frame = {frame: call.number for call in chosen.values() for frame in call.frames}
    items: list[LadderItem] = []
    for message in summary.messages:
        if message.frame in by_frame and message.call_id in {c.call_id for c in chosen.values()}:
            comment = f"SIP {message.label}" + (f" CSeq:{message.cseq}" if message.cseq is not None else "")
            items.append(
                LadderItem(
                    kind="sip",
                    call=by_frame[message.frame],
                    frame=message.frame,
                    time=message.time,
                    source=message.source,
                    destination=message.destination,
                    label=message.label,
                    comment=comment,
                )
            )
    streams = {s.id: s for s in summary.streams}
    for call in chosen.values():
        for name in call.streams:
            stream = streams[name]
            if stream.first_frame is None:
                continue
            items.append(
                LadderItem(
                    kind="rtp",
                    call=call.number,
                    frame=stream.first_frame,
                    time=stream.start,
                    source=stream.source,
                    destination=stream.destination,
                    label=f"RTP ({stream.payload})",
                    comment=(
                        f"RTP Num packets:{stream.packets} Duration:{stream.duration:.3f}s "
                        f"SSRC:0x{stream.ssrc:08X}"
                    ),
                    last_frame=stream.last_frame,
                    end_time=stream.end,
                )
            )
    items.sort(key=lambda item: (item.frame, item.kind))
    nodes: list[str] = []
    for item in items:
        for name in (item.source, item.destination):
            if name not in nodes:
                nodes.append(name)
    return CallFlow(calls=sorted(chosen), nodes=nodes, items=items)


async def call_flow(
    path: Path, numbers: list[int], all_flows: bool = False, heuristic_rtp: bool = False
) -> CallFlow:
    """Return the SIP/SDP/RTP flow diagram of some calls (by their numbers in voip_calls)."""
    if not 0 < len(numbers) <= MAX_FLOW_CALLS:
        raise EngineError(f"choose 1 to {MAX_FLOW_CALLS} calls")
    summary = await voip_summary(path, heuristic_rtp)
    return flow_of(summary, calls_of(summary, all_flows), numbers)
