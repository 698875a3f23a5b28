"""Give each copy of the source traffic its own IP addresses, checksums kept valid.

Time-shifted but otherwise identical copies of a TCP flow share addresses, ports and
sequence numbers, so Wireshark treats every later copy as a retransmission of the first
and never hands its payload to HTTP, TLS, ... That would make the big capture cheaper
to dissect than real traffic, and filters like `http.request` would match only the
first copy. Adding `variant` to one byte of every unicast address makes the flows of
each copy distinct conversations while keeping them consistent in both directions.

Only the outer Ethernet (+VLAN) / IPv4 / IPv6 header is rewritten; IPv4 header and
TCP/UDP/ICMPv6 checksums are updated incrementally (RFC 1624), so packets that had
valid checksums still have them.
"""

from __future__ import annotations

import struct
from pathlib import Path

ETHERNET = 1
VLAN_TAGS = (0x8100, 0x88A8)
IPV4, IPV6 = 0x0800, 0x86DD
TCP, UDP, ICMPV6 = 6, 17, 58
# Offset of the checksum field inside each transport header.
L4_CHECKSUM = {TCP: 16, UDP: 6, ICMPV6: 2}
# Hop-by-hop, routing, fragment and destination options: the ones before a transport.
EXTENSION_HEADERS = (0, 43, 44, 60)
FRAGMENT = 44
Change = tuple[int, int]  # (old 16-bit word, new 16-bit word)


def _word(buf: bytearray, at: int) -> int:
    return buf[at] << 8 | buf[at + 1]


def _adjust_checksum(buf: bytearray, at: int, end: int, changes: list[Change], zero_means_none: bool) -> None:
    """Incrementally update the checksum at buf[at:at+2] for the changed words."""
    if at + 2 > end:
        return  # not captured (snaplen)
    old = _word(buf, at)
    if zero_means_none and old == 0:
        return  # UDP over IPv4 without a checksum
    total = ~old & 0xFFFF
    for before, after in changes:
        total += (~before & 0xFFFF) + after
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    new = ~total & 0xFFFF
    if zero_means_none and new == 0:
        new = 0xFFFF  # 0 would mean "no checksum" in UDP
    buf[at], buf[at + 1] = new >> 8, new & 0xFF


def _bump(buf: bytearray, word_at: int, variant: int, changes: list[Change]) -> None:
    """Add variant to the low byte of the 16-bit word at word_at; record the change.

    word_at must be even relative to the address (checksums sum header-aligned words;
    the buffer offset itself may be odd).
    """
    before = _word(buf, word_at)
    buf[word_at + 1] = (buf[word_at + 1] + variant) & 0xFF
    changes.append((before, _word(buf, word_at)))


def _ipv4(buf: bytearray, l3: int, end: int, variant: int) -> None:
    if l3 + 20 > end or buf[l3] >> 4 != 4:
        return
    changes: list[Change] = []
    for addr in (l3 + 12, l3 + 16):
        first = buf[addr]
        if first not in (0, 127) and first < 224:  # leave any/loopback/multicast/broadcast
            _bump(buf, addr, variant, changes)  # the second octet
    if not changes:
        return
    _adjust_checksum(buf, l3 + 10, end, changes, zero_means_none=False)
    fragment_offset = _word(buf, l3 + 6) & 0x1FFF
    protocol = buf[l3 + 9]
    if fragment_offset == 0 and protocol in (TCP, UDP):  # ICMPv4 has no pseudo-header
        l4 = l3 + (buf[l3] & 0x0F) * 4
        _adjust_checksum(buf, l4 + L4_CHECKSUM[protocol], end, changes, zero_means_none=protocol == UDP)


def _is_rewritable_v6(buf: bytearray, addr: int) -> bool:
    """Not multicast (ff00::/8), link-local (fe80::/10) or unspecified (::)."""
    first, second = buf[addr], buf[addr + 1]
    link_local = first == 0xFE and second & 0xC0 == 0x80
    return first != 0xFF and not link_local and any(buf[addr : addr + 16])


def _ipv6_payload(buf: bytearray, l3: int, end: int) -> tuple[int, int] | None:
    """(transport protocol, its offset) after extension headers; None if not reachable."""
    next_header, pos = buf[l3 + 6], l3 + 40
    while next_header in EXTENSION_HEADERS:
        if pos + 8 > end:
            return None
        if next_header == FRAGMENT:
            if _word(buf, pos + 2) & 0xFFF8:  # not the first fragment: no transport header
                return None
            length = 8
        else:
            length = (buf[pos + 1] + 1) * 8
        next_header, pos = buf[pos], pos + length
    return next_header, pos


def _ipv6(buf: bytearray, l3: int, end: int, variant: int) -> None:
    if l3 + 40 > end or buf[l3] >> 4 != 6:
        return
    changes: list[Change] = []
    for addr in (l3 + 8, l3 + 24):
        if _is_rewritable_v6(buf, addr):
            _bump(buf, addr + 4, variant, changes)  # byte 5: inside the /48 routing prefix
    payload = _ipv6_payload(buf, l3, end) if changes else None
    if payload is not None and payload[0] in L4_CHECKSUM:
        protocol, l4 = payload
        _adjust_checksum(buf, l4 + L4_CHECKSUM[protocol], end, changes, zero_means_none=False)


def _frame(buf: bytearray, start: int, end: int, variant: int) -> None:
    pos = start + 12
    while pos + 2 <= end and _word(buf, pos) in VLAN_TAGS:
        pos += 4
    if pos + 2 > end:
        return
    ethertype = _word(buf, pos)
    if ethertype == IPV4:
        _ipv4(buf, pos + 2, end, variant)
    elif ethertype == IPV6:
        _ipv6(buf, pos + 2, end, variant)


def readdress(path: Path, variant: int) -> None:
    """Rewrite the Ethernet pcap at path in place with address variant (0 = unchanged)."""
    variant %= 256
    if variant == 0:
        return
    buf = bytearray(path.read_bytes())
    magic = buf[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        order = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        order = ">"
    else:
        raise ValueError(f"{path} is not a microsecond pcap file")
    if struct.unpack_from(order + "I", buf, 20)[0] != ETHERNET:
        raise ValueError(f"{path} is not an Ethernet capture")
    record = struct.Struct(order + "IIII")
    pos = 24
    while pos + 16 <= len(buf):
        caplen = record.unpack_from(buf, pos)[2]
        data = pos + 16
        _frame(buf, data, min(data + caplen, len(buf)), variant)
        pos = data + caplen
    path.write_bytes(buf)
