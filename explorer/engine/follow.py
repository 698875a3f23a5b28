"""Follow a stream of one of the protocols sharkd follows (PROTOCOLS): its payloads in order, by side."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import EngineError
from .sessions import engine

Side = Literal["client", "server"]


@dataclass(frozen=True)
class FollowProtocol:
    """A follower sharkd offers: its name, the field numbering its streams, and its sub-streams'."""

    kind: str
    stream_field: str
    # Protocols that carry several streams in one connection number them with a second field.
    substream_field: str | None = None


# The followers sharkd 4.0 offers (TCP, UDP, HTTP, TLS, HTTP/2, QUIC). A new one is an entry
# here: the follow page, the packet details' Follow links and the API's follow endpoints
# accept exactly these kinds.
PROTOCOLS = {
    protocol.kind: protocol
    for protocol in (
        FollowProtocol("TCP", "tcp.stream"),
        FollowProtocol("UDP", "udp.stream"),
        FollowProtocol("HTTP", "tcp.stream"),
        FollowProtocol("TLS", "tcp.stream"),
        FollowProtocol("HTTP2", "tcp.stream", substream_field="http2.streamid"),
        FollowProtocol("QUIC", "quic.connection.number", substream_field="quic.stream.stream_id"),
    )
}
KINDS = tuple(PROTOCOLS)

# sharkd 4.0 never tells its follower which sub-stream the filter names (Wireshark's dialog
# does), so it returns sub-stream 0 of whichever packets match: other sub-streams cannot be
# followed correctly through it.
FOLLOWABLE_SUBSTREAM = 0

MAX_STREAM = 2**31 - 1

# sharkd's follow hints, as the packet detail carries them: "tcp.stream eq 0",
# "tcp.stream eq 0 and http2.streamid eq 3", "quic.connection.number eq 0 and quic.stream.stream_id eq 2".
HINT = re.compile(
    r"^(?P<field>[a-z0-9.]+) eq (?P<stream>\d+)(?: and (?P<subfield>[a-z0-9._]+) eq (?P<sub>\d+))?$"
)


@dataclass
class Peer:
    host: str | None
    port: int | None
    bytes: int = 0
    packets: int = 0


@dataclass
class Segment:
    frame: int
    side: Side
    data: bytes


@dataclass
class FollowResult:
    kind: str
    stream: int
    substream: int | None
    filter: str
    client: Peer
    server: Peer
    segments: list[Segment] = field(default_factory=list)

    @property
    def turns(self) -> int:
        """Return how often the talking side changes, as Wireshark counts turns."""
        return sum(1 for a, b in zip(self.segments, self.segments[1:], strict=False) if a.side != b.side)

    def data(self, side: str = "both") -> bytes:
        """Return the payloads of one side (or both, in order) joined together."""
        return b"".join(s.data for s in self.segments if side == "both" or s.side == side)


def stream_filter(kind: str, stream: int, substream: int | None = None) -> str:
    """Return the display filter selecting one stream, or raise EngineError for a bad request."""
    protocol = PROTOCOLS.get(kind)
    if protocol is None:
        raise EngineError(f"unknown stream kind {kind!r} (one of {', '.join(KINDS)})")
    if not 0 <= stream <= MAX_STREAM:
        raise EngineError(f"stream must be a number from 0 to {MAX_STREAM}")
    expression = f"{protocol.stream_field} eq {stream}"
    if protocol.substream_field is None:
        if substream is not None:
            raise EngineError(f"{kind} streams have no sub-streams")
        return expression
    if substream is None:
        substream = FOLLOWABLE_SUBSTREAM
    if substream != FOLLOWABLE_SUBSTREAM:
        raise EngineError(
            f"this engine (sharkd 4.0) can follow only {kind} sub-stream {FOLLOWABLE_SUBSTREAM}"
        )
    return f"{expression} and {protocol.substream_field} eq {substream}"


def parse_hint(kind: str, expression: str) -> tuple[int, int | None] | None:
    """Return (stream, sub-stream) of one of sharkd's follow hints, or None when not followable."""
    match = HINT.match(expression.strip())
    protocol = PROTOCOLS.get(kind)
    if match is None or protocol is None or protocol.stream_field != match["field"]:
        return None
    subfield = match["subfield"]
    if subfield is not None and subfield != protocol.substream_field:
        return None
    stream = int(match["stream"])
    substream = int(match["sub"]) if subfield is not None else None
    try:
        stream_filter(kind, stream, substream)
    except EngineError:
        return None
    return stream, substream


def _peer(host: Any, port: Any) -> Peer:
    # sharkd says "NONE" and "0" for an endpoint its follower never saw.
    host = str(host) if host and host != "NONE" else None
    port = int(port) if str(port).isdigit() and int(port) else None
    return Peer(host, port)


async def follow(path: Path, kind: str, stream: int, substream: int | None = None) -> FollowResult:
    """Return the payloads of one stream of a capture, client and server marked."""
    expression = stream_filter(kind, stream, substream)
    if PROTOCOLS[kind].substream_field is not None and substream is None:
        substream = FOLLOWABLE_SUBSTREAM
    result = await engine().sessions(path).call("follow", {"follow": kind, "filter": expression})
    segments = [
        Segment(int(raw["n"]), "server" if raw.get("s") else "client", base64.b64decode(raw.get("d", "")))
        for raw in result.get("payloads", [])
    ]
    client = _peer(result.get("chost"), result.get("cport"))
    server = _peer(result.get("shost"), result.get("sport"))
    if not segments and client.host is None and server.host is None:
        raise EngineError(f"there is no {kind} stream {stream} in this capture")
    # Counted here: sharkd 4.0 reports the client's byte count as "sbytes" and the server's as "cbytes".
    for segment in segments:
        peer = client if segment.side == "client" else server
        peer.bytes += len(segment.data)
        peer.packets += 1
    return FollowResult(
        kind=kind,
        stream=stream,
        substream=substream,
        filter=expression,
        client=client,
        server=server,
        segments=segments,
    )
