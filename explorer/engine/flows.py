"""The flow graph (ladder diagram), as Wireshark's Statistics → Flow Graph draws it.

sharkd 4.0's `seqa` taps give no frame numbers, so their items cannot be linked to packets:
the diagram is built here from `frames` rows with custom columns instead.

Every packet the display filter shows is an arrow (every protocol unless the filter says
otherwise), between nodes named by address and TCP or UDP port ("endpoints"), or by address
alone ("hosts", as Wireshark's own flow graph names them). A graph of a whole capture has many
nodes: the caller may draw only some conversations (TCP and UDP streams), and only some nodes
(those it names, or the first ones to appear); the other nodes are then drawn as one column,
OTHER_NODE.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from . import fieldpass
from .errors import EngineError
from .follow import stream_filter
from .packets import INFO, PROTOCOL, _validated_filter, check_filter, count
from .sessions import engine

# Every packet: Wireshark's flow graph shows all flows unless asked for fewer.
DEFAULT_FILTER = ""
MAX_ARROWS = 500
Addresses = Literal["endpoints", "hosts"]
ADDRESSES: tuple[str, ...] = get_args(Addresses)
# Conversations one graph may be limited to (their filter must fit sharkd's request line).
MAX_CONVERSATIONS = 100
CONVERSATION_PROTOCOLS = ("tcp", "udp")
# Nodes one graph may name; the rest share one column.
MAX_NODES = 200
OTHER_NODE = "other"
# Nodes counted when listing a whole capture's nodes (a scan of a network has one per address).
MAX_LISTED_NODES = 100_000
# Rows asked of sharkd per `frames` request when listing the nodes of every packet.
PAGE_ROWS = 50_000

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
    "udp.srcport:-1",
    "udp.dstport:-1",
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
class ListedNode:
    """A node of a whole flow graph: where it first appears, and how many packets it sends or receives."""

    id: str
    first_frame: int
    packets: int


@dataclass
class NodeList:
    """The nodes of every packet a filter shows, in the order they first appear."""

    filter: str
    addresses: Addresses
    nodes: list[ListedNode] = field(default_factory=list)
    # Nodes past MAX_LISTED_NODES: seen, but neither named nor counted.
    unlisted: bool = False


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
    # The columns the arrow is drawn between: its source and destination, or OTHER_NODE for a
    # node the graph does not draw.
    source_node: str = ""
    destination_node: str = ""

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
    addresses: Addresses = "endpoints"


def flag_names(value: int) -> str:
    """Return the names of the TCP flags set in value: "SYN, ACK"."""
    return ", ".join(name for bit, name in FLAG_NAMES if value & bit)


def endpoint(host: str, port: str) -> str:
    """Return a node's name: host:port for TCP and UDP ([v6]:port), the host alone otherwise."""
    if not port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _time(text: str, precision: int) -> str:
    seconds, _, fraction = text.partition(".")
    return f"{seconds}.{fraction[:precision]}" if precision and fraction else seconds


def _ends(cells: list[str], addresses: Addresses) -> tuple[str, str, bool]:
    """Return the source and destination nodes of a row of COLUMNS (from index 2), and whether it is TCP."""
    net_source, net_destination, any_source, any_destination = cells[2:6]
    tcp_source, tcp_destination, udp_source, udp_destination = cells[6:10]
    tcp = tcp_source.isdigit() and tcp_destination.isdigit()
    udp = not tcp and udp_source.isdigit() and udp_destination.isdigit()
    source_port = tcp_source if tcp else udp_source if udp and addresses == "endpoints" else ""
    destination_port = tcp_destination if tcp else udp_destination if udp and addresses == "endpoints" else ""
    if addresses == "hosts":
        source_port = destination_port = ""
    return (
        endpoint(net_source or any_source, source_port),
        endpoint(net_destination or any_destination, destination_port),
        tcp,
    )


def _arrow(raw: dict[str, Any], precision: int, addresses: Addresses = "endpoints") -> Arrow:
    cells = raw["c"]
    time_text = cells[1]
    flags_text, seq, ack, length, info, protocol = cells[10:16]
    source, destination, tcp = _ends(cells, addresses)
    flags = int(flags_text, 16) if tcp and flags_text.startswith("0x") else 0
    return Arrow(
        frame=int(raw["num"]),
        time=_time(time_text, precision),
        source=source,
        destination=destination,
        flags=flag_names(flags),
        seq=_number(seq) if tcp else None,
        # Wireshark leaves the acknowledgment number out unless the ACK flag is set.
        ack=_number(ack) if tcp and flags & ACK_BIT else None,
        len=_number(length) if tcp else None,
        protocol=protocol,
        summary=info,
        source_node=source,
        destination_node=destination,
    )


def conversations_filter(conversations: Sequence[tuple[str, int]]) -> str:
    """Return the display filter of some TCP and UDP conversations, given as (protocol, stream)."""
    if len(conversations) > MAX_CONVERSATIONS:
        raise EngineError(f"choose at most {MAX_CONVERSATIONS} conversations")
    streams: dict[str, list[int]] = {}
    for protocol, stream in conversations:
        if protocol not in CONVERSATION_PROTOCOLS:
            raise EngineError(f"unknown conversation protocol {protocol!r}: choose tcp or udp")
        stream_filter(protocol.upper(), stream)  # refuses a number out of range
        streams.setdefault(protocol, [])
        if stream not in streams[protocol]:
            streams[protocol].append(stream)
    return " || ".join(
        f"{protocol}.stream in {{{', '.join(map(str, numbers))}}}" for protocol, numbers in streams.items()
    )


def flow_filter(
    filter_text: str, stream: int | None = None, conversations: Sequence[tuple[str, int]] = ()
) -> str:
    """Return the display filter of a flow graph: one TCP stream, the user's filter, or every packet.

    Chosen conversations narrow it further.
    """
    if stream is not None:
        expression = stream_filter("TCP", stream)
    else:
        expression = filter_text.strip() or DEFAULT_FILTER
    if not conversations:
        return expression
    chosen = conversations_filter(conversations)
    return f"({expression}) && ({chosen})" if expression else chosen


def _check_addresses(addresses: str) -> None:
    if addresses not in ADDRESSES:
        raise EngineError(f"unknown addresses {addresses!r}: choose one of {', '.join(ADDRESSES)}")


async def _checked(display_filter: str) -> str | None:
    expression = _validated_filter(display_filter)
    if expression:
        problem = await check_filter(expression)
        if problem:
            raise EngineError(problem)
    return expression


def _tally_nodes(rows: list[dict[str, Any]], addresses: Addresses, listed: dict[str, list[int]]) -> bool:
    """Count the nodes of some rows into listed (id -> [first frame, packets]); False once it is full."""
    for raw in rows:
        cells = ["", "", *raw["c"]]
        for name in _ends(cells, addresses)[:2]:
            known = listed.get(name)
            if known is not None:
                known[1] += 1
            elif len(listed) < MAX_LISTED_NODES:
                listed[name] = [int(raw["num"]), 1]
            else:
                return False
    return True


async def flow_nodes(
    path: Path, display_filter: str = DEFAULT_FILTER, addresses: str = "endpoints"
) -> NodeList:
    """Return the nodes of every packet a display filter shows, in the order they first appear."""
    _check_addresses(addresses)
    expression = await _checked(display_filter)
    chosen: Addresses = "hosts" if addresses == "hosts" else "endpoints"

    async def compute() -> NodeList:
        total = await count(path, expression or "")
        sessions = engine().sessions(path)
        listed: dict[str, list[int]] = {}
        complete = True
        for skip in range(0, total, PAGE_ROWS):
            params: dict[str, Any] = {"limit": PAGE_ROWS}
            params.update({f"column{i}": c for i, c in enumerate(COLUMNS[2:10])})
            if skip:
                params["skip"] = skip  # sharkd 4.0 refuses skip=0
            if expression:
                params["filter"] = expression
            rows = await sessions.call("frames", params, filter_text=expression)
            complete = await asyncio.to_thread(_tally_nodes, rows, chosen, listed)
            if not complete:
                break
        nodes = [ListedNode(name, first, packets) for name, (first, packets) in listed.items()]
        return NodeList(filter=expression or "", addresses=chosen, nodes=nodes, unlisted=not complete)

    return await fieldpass.remembered((path, "flow-nodes", expression, chosen), compute)


async def flow(
    path: Path,
    display_filter: str = DEFAULT_FILTER,
    offset: int = 0,
    limit: int = MAX_ARROWS,
    precision: int = 6,
    addresses: str = "endpoints",
    nodes: Sequence[str] = (),
    max_nodes: int | None = None,
) -> Flow:
    """Return one page of the flow graph of the packets a display filter shows (all without one).

    Without `nodes` or `max_nodes` the page's nodes are those its arrows reach, in the order
    they first appear. With them, the graph's nodes are those named (in that order), or the
    first `max_nodes` to appear among all the packets the filter shows, the same on every page;
    an arrow's other ends are drawn as OTHER_NODE.
    """
    _check_addresses(addresses)
    chosen_addresses: Addresses = "hosts" if addresses == "hosts" else "endpoints"
    if not 0 < limit <= MAX_ARROWS or offset < 0:
        raise EngineError(f"offset must be 0 or more and limit from 1 to {MAX_ARROWS}")
    if len(nodes) > MAX_NODES or (max_nodes is not None and not 0 < max_nodes <= MAX_NODES):
        raise EngineError(f"a flow graph draws from 1 to {MAX_NODES} nodes")
    expression = await _checked(display_filter)
    total = await count(path, expression or "")
    result = Flow(filter=expression or "", total=total, offset=offset, addresses=chosen_addresses)
    drawn: list[str] | None = None
    if nodes:
        drawn = list(dict.fromkeys(nodes))
    elif max_nodes is not None:
        listed = await flow_nodes(path, expression or "", chosen_addresses)
        drawn = [node.id for node in listed.nodes[:max_nodes]]
    if offset >= total:
        if drawn is not None:
            result.nodes = [Node(id=name, label=name) for name in drawn]
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
    result.arrows = [_arrow(raw, precision, chosen_addresses) for raw in rows]
    if drawn is None:
        # Nodes in the order they first appear, each arrow's source before its destination.
        seen: dict[str, Node] = {}
        for arrow in result.arrows:
            for name in (arrow.source, arrow.destination):
                if name not in seen:
                    seen[name] = Node(id=name, label=name)
        result.nodes = list(seen.values())
        return result
    named = set(drawn)
    for arrow in result.arrows:
        arrow.source_node = arrow.source if arrow.source in named else OTHER_NODE
        arrow.destination_node = arrow.destination if arrow.destination in named else OTHER_NODE
    result.nodes = [Node(id=name, label=name) for name in drawn]
    if any(OTHER_NODE in (a.source_node, a.destination_node) for a in result.arrows):
        result.nodes.append(Node(id=OTHER_NODE, label="Other nodes"))
    return result
