"""Copy chosen frames of a pcap or pcapng file, by frame number, to a new file of the same format.

`tshark -2 -Y FILTER -w` also writes the frames that the matching ones depend on (every
segment of a reassembled PDU), and editcap keeps at most 512 selections; so the frames a
display filter matches are copied here, block by block, byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from .errors import EngineError

PCAP_MAGICS = {0xA1B2C3D4, 0xA1B23C4D}  # microsecond and nanosecond files
PCAPNG_SECTION = 0x0A0D0D0A
PCAPNG_BYTE_ORDER = 0x1A2B3C4D
# Blocks that Wireshark numbers as frames: packet, simple packet, enhanced packet, systemd journal.
PCAPNG_FRAMES = {0x00000002, 0x00000003, 0x00000006, 0x00000009}


def file_kind(path: Path) -> str:
    """Return "pcap", "pcapng" or "" (another format, to be converted first)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if len(head) < 4:
        return ""
    if struct.unpack("<I", head)[0] == PCAPNG_SECTION:
        return "pcapng"
    if struct.unpack("<I", head)[0] in PCAP_MAGICS or struct.unpack(">I", head)[0] in PCAP_MAGICS:
        return "pcap"
    return ""


def _read(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise EngineError("capture file ends in the middle of a record")
    return data


def _copy_pcap(source: BinaryIO, target: BinaryIO, wanted: set[int]) -> int:
    header = _read(source, 24)
    order = "<" if struct.unpack("<I", header[:4])[0] in PCAP_MAGICS else ">"
    target.write(header)
    number = written = 0
    while record := source.read(16):
        if len(record) < 16:
            break  # a truncated last record: Wireshark stops before it too
        length = struct.unpack(order + "I", record[8:12])[0]
        data = source.read(length)
        if len(data) < length:
            break
        number += 1
        if number in wanted:
            target.write(record + data)
            written += 1
    return written


def _copy_pcapng(source: BinaryIO, target: BinaryIO, wanted: set[int]) -> int:
    order = "<"
    number = written = 0
    while head := source.read(8):
        if len(head) < 8:
            break
        kind = struct.unpack(order + "I", head[:4])[0]
        if struct.unpack("<I", head[:4])[0] == PCAPNG_SECTION:
            kind = PCAPNG_SECTION
            magic = source.read(4)
            order = "<" if struct.unpack("<I", magic)[0] == PCAPNG_BYTE_ORDER else ">"
            head += magic
        length = struct.unpack(order + "I", head[4:8])[0]
        if length < len(head) or length % 4:
            raise EngineError("capture file has a malformed block")
        body = source.read(length - len(head))
        if len(body) < length - len(head):
            break
        if kind in PCAPNG_FRAMES:
            number += 1
            if number not in wanted:
                continue
            written += 1
        target.write(head + body)
    return written


def copy_frames(source: Path, destination: Path, numbers: Iterable[int]) -> None:
    """Write the frames with these numbers (1-based) of a pcap or pcapng file to destination."""
    wanted = set(numbers)
    kind = file_kind(source)
    with open(source, "rb") as reader, open(destination, "wb") as writer:
        if kind == "pcap":
            written = _copy_pcap(reader, writer, wanted)
        elif kind == "pcapng":
            written = _copy_pcapng(reader, writer, wanted)
        else:
            raise EngineError("only pcap and pcapng files can be copied frame by frame")
    if written != len(wanted):
        raise EngineError(f"copied {written} of {len(wanted)} frames: the file's records are not all frames")
