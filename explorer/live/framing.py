"""Record boundaries of a growing pcap or pcapng stream: what a live capture may write to its file.

A live capture arrives in pieces of any size (dumpcap's pipe, a request body). Only whole
records (pcap) or blocks (pcapng) go to the recording's files, so that the file is a valid
capture at every moment and may be split after any of them (a ring buffer). This reads only
the headers that say where a record or block ends; the engine reads the packets themselves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
}
PCAP_HEADER = 24
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
PCAPNG_BYTE_ORDERS = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
PCAPNG_PACKET_BLOCKS = {2, 3, 6}  # Packet, Simple Packet, Enhanced Packet
# A block or record this large is not a packet of a capture stream.
MAX_BLOCK = 16 * 1024 * 1024
NOT_A_CAPTURE = "not a pcap or pcapng stream: send what `tcpdump -w -` or `dumpcap -w -` writes"


class NotAStream(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Records:
    """Whole records and blocks that one piece of a stream completed, in order."""

    data: bytes = b""
    # Where each record or block starts in data.
    starts: list[int] = field(default_factory=list)
    # Where a file may be split at the earliest: after the last header block in data.
    earliest_split: int = 0


class PacketStream:
    """Split a pcap or pcapng byte stream into whole records/blocks, counting packets."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.packets = 0
        self.header_read = False
        self.pcapng = False
        self.endian = "<"
        self.damage: NotAStream | None = None
        # The file header (pcap) or every block that is not a packet (pcapng): what a file
        # needs before packets of this stream, when they are split into several files.
        self.preamble = bytearray()

    def feed(self, data: bytes, room: int | None = None) -> Records:
        """Take bytes received; return the whole records and blocks they complete.

        With room, a record that starts more than room bytes in is left unread, and so are
        those after it: the capture they would go to is full. Damage further on ends the
        records returned before it, and the next call raises it.
        """
        if self.damage is not None:
            raise self.damage
        self.pending += data
        starts: list[int] = []
        complete = earliest_split = 0
        if not self.header_read:
            complete = self._header()
            if not self.header_read:
                return Records()
            self.preamble += self.pending[:complete]
            earliest_split = complete
        try:
            while room is None or complete <= max(room, earliest_split):
                size = self._next_size(complete)
                if size is None or complete + size > len(self.pending):
                    break
                starts.append(complete)
                if self.pcapng and self._kind(complete) not in PCAPNG_PACKET_BLOCKS:
                    self.preamble += self.pending[complete : complete + size]
                    earliest_split = complete + size
                complete += size
        except NotAStream as error:
            self.damage = error
        out = bytes(self.pending[:complete])
        del self.pending[:complete]
        return Records(out, starts, earliest_split)

    def _header(self) -> int:
        if len(self.pending) < 4:
            return 0
        magic = bytes(self.pending[:4])
        if magic == PCAPNG_MAGIC:
            if len(self.pending) < 12:
                return 0
            order = bytes(self.pending[8:12])
            if order not in PCAPNG_BYTE_ORDERS:
                raise NotAStream(NOT_A_CAPTURE)
            self.pcapng, self.header_read = True, True
            self.endian = PCAPNG_BYTE_ORDERS[order]
            return 0  # the section header is a block like the others
        if magic not in PCAP_MAGICS:
            raise NotAStream(NOT_A_CAPTURE)
        if len(self.pending) < PCAP_HEADER:
            return 0
        self.endian, self.header_read = PCAP_MAGICS[magic], True
        return PCAP_HEADER

    def _kind(self, offset: int) -> int:
        return int(struct.unpack_from(self.endian + "I", self.pending, offset)[0])

    def _next_size(self, offset: int) -> int | None:
        if self.pcapng:
            if len(self.pending) - offset < 8:
                return None
            kind, size = struct.unpack_from(self.endian + "II", self.pending, offset)
            if kind == 0x0A0D0D0A and len(self.pending) - offset >= 12:
                # A new section may change the byte order.
                order = bytes(self.pending[offset + 8 : offset + 12])
                self.endian = "<" if order == b"\x4d\x3c\x2b\x1a" else ">"
                size = struct.unpack_from(self.endian + "I", self.pending, offset + 4)[0]
            if size < 12 or size % 4 or size > MAX_BLOCK:
                raise NotAStream(f"damaged pcapng stream: a block of {size} bytes")
            if kind in PCAPNG_PACKET_BLOCKS and len(self.pending) - offset >= size:
                self.packets += 1
            return int(size)
        if len(self.pending) - offset < 16:
            return None
        captured = struct.unpack_from(self.endian + "I", self.pending, offset + 8)[0]
        if captured > MAX_BLOCK:
            raise NotAStream(f"damaged pcap stream: a packet of {captured} bytes")
        if len(self.pending) - offset >= 16 + captured:
            self.packets += 1
        return 16 + int(captured)


def check_file_header(first: bytes) -> None:
    """Raise NotAStream unless the first bytes of a stream begin a pcap or pcapng file.

    Only the file header: a damaged packet further on ends the capture, kept until there.
    """
    header = PacketStream()
    header.feed(first[:PCAP_HEADER])
    if header.damage is not None:
        raise header.damage
