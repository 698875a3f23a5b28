"""The flow graph (ladder diagram) of TCP flows, as Wireshark's Statistics → Flow Graph draws it.

sharkd 4.0's `seqa:tcp` tap gives no frame numbers, so its items cannot be linked to packets:
the diagram is built here from `frames` rows with custom columns instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EngineError
from .follow import stream_filter
from .packets import INFO, PROTOCOL, _validated_filter, check_filter, count
from .sessions import engine

DEFAULT_FILTER = "tcp"
MAX_ARROWS = 500

# "Net src/dst addr (unresolved)" is pinfo's network address: the innermost IPv4 or IPv6
# address of a packet, the one Wireshark's own flow graph names nodes by, with no choice to
# make between the layers of a tunnel as with ip.src/ipv6.src. Packets without a network
# layer (ARP) fall back to the "Src/Dest addr (unresolved)" columns: their hardware addresses.
NET_SOURCE, NET_DESTINATION, ANY_SOURCE, ANY_DESTINATION = "32", "30", "42", "11"

# Custom columns name a field and its occurrence; -1 is the last one, the innermost header
# (a tunnelled or ICMP-quoted packet has several).
COLUMNS = [
    "frame.number:0",
    "frame.time_relative:0",
    NET_SOURCE,
    NET_DESTINATION,
    ANY_SOURCE,
    ANY_DESTINATION,
    "tcp.srcport:-1",
    "tcp.dstport:-1",
    "tcp.flags:-1",  # "0x012": decoded below, as tcp.flags.str spells them with dots
    "tcp.seq:-1",  # relative, as tshark's default preferences show them
    "tcp.ack:-1",
    "tcp.len:-1",
    INFO,
    PROTOCOL,
]

# Bits of tcp.flags in the order Wireshark's Info column names them: "[SYN, ACK]".
FLAG_NAMES = [
    (0x001, "FIN"),
    (0x002, "SYN"),
    (0x004, "RST"),
    (0x008, "PSH"),
    (0x010, "ACK"),
    (0x020, "URG"),
    (0x040, "ECE"),
    (0x080, "CWR"),
    (0x100, "NS"),
]
ACK_BIT = 0x010


@dataclass
class Node:
    id: str
    label: str


@dataclass
class Arrow:
    frame: int
    time: str
    source: str
    destination: str
    flags: str
    seq: int | None
    ack: int | None
    len: int | None
    protocol: str
    summary: str

    @property
    def label(self) -> str:
        """Return the text written above the arrow: "SYN, ACK Seq=0 Ack=1 Len=0" (or the protocol)."""
        if self.seq is None:
            return self.protocol
        parts = [self.flags] if self.flags else []
        parts.append(f"Seq={self.seq}")
        if self.ack is not None:
            parts.append(f"Ack={self.ack}")
        if self.len is not None:
            parts.append(f"Len={self.len}")
        return " ".join(parts)


@dataclass
class Flow:
    filter: str
    total: int
    offset: int
    nodes: list[Node] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)


def flag_names(value: int) -> str:
    """Return the names of the TCP flags set in value: "SYN, ACK"."""
    return ", ".join(name for bit, name in FLAG_NAMES if value & bit)


def endpoint(host: str, port: str) -> str:
    """Return a node's name: host:port for TCP ([v6]:port), the host alone otherwise."""
    if not port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _time(text: str, precision: int) -> str:
    seconds, _, fraction = text.partition(".")
    return f"{seconds}.{fraction[:precision]}" if precision and fraction else seconds


def _arrow(raw: dict[str, Any], precision: int) -> Arrow:
    (
        _,
        time_text,
        net_source,
        net_destination,
        any_source,
        any_destination,
        source_port,
        destination_port,
        flags_text,
        seq,
        ack,
        length,
        info,
        protocol,
    ) = raw["c"]
    tcp = source_port.isdigit() and destination_port.isdigit()
    flags = int(flags_text, 16) if tcp and flags_text.startswith("0x") else 0
    return Arrow(
        frame=int(raw["num"]),
        time=_time(time_text, precision),
        source=endpoint(net_source or any_source, source_port if tcp else ""),
        destination=endpoint(net_destination or any_destination, destination_port if tcp else ""),
        flags=flag_names(flags),
        seq=_number(seq) if tcp else None,
        # Wireshark leaves the acknowledgment number out unless the ACK flag is set.
        ack=_number(ack) if tcp and flags & ACK_BIT else None,
        len=_number(length) if tcp else None,
        protocol=protocol,
        summary=info,
    )


def flow_filter(filter_text: str, stream: int | None = None) -> str:
    """Return the display filter of a flow graph: one TCP stream, the user's filter, or all TCP."""
    if stream is not None:
        return stream_filter("TCP", stream)
    return filter_text.strip() or DEFAULT_FILTER


async def flow(
    path: Path,
    display_filter: str = DEFAULT_FILTER,
    offset: int = 0,
    limit: int = MAX_ARROWS,
    precision: int = 6,
) -> Flow:
    """Return one page of the flow graph of the packets a display filter shows (all without one)."""
    expression = _validated_filter(display_filter)
    if not 0 < limit <= MAX_ARROWS or offset < 0:
        raise EngineError(f"offset must be 0 or more and limit from 1 to {MAX_ARROWS}")
    if expression:
        problem = await check_filter(expression)
        if problem:
            raise EngineError(problem)
    total = await count(path, expression or "")
    result = Flow(filter=expression or "", total=total, offset=offset)
    if offset >= total:
        return result
    params: dict[str, Any] = {"limit": limit, **{f"column{i}": c for i, c in enumerate(COLUMNS)}}
    if offset:
        params["skip"] = offset
    if expression:
        params["filter"] = expression
    sessions = engine().sessions(path)
    key = ("flow", expression, offset, limit)
    rows = sessions.pages.get(key)
    if rows is None:
        rows = await sessions.call("frames", params, filter_text=expression)
        sessions.remember_page(key, rows)
    result.arrows = [_arrow(raw, precision) for raw in rows]
    # Nodes in the order they first appear, each arrow's source before its destination.
    seen: dict[str, Node] = {}
    for arrow in result.arrows:
        for name in (arrow.source, arrow.destination):
            if name not in seen:
                seen[name] = Node(id=name, label=name)
    result.nodes = list(seen.values())
    return result
