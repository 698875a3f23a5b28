"""Comments in pcapng files: read them exactly, and add annotations to an exported file as comments.

Both directions work on the blocks themselves rather than through tshark and editcap:
`tshark -T fields -e frame.comment` escapes tabs and newlines but not backslashes, so its
output cannot be read back exactly; and `editcap -a N:TEXT` keeps only the last of several
comments given for one frame, and a few hundred 10,000-character comments would not fit on
a command line. The blocks are simple: every packet block and section header ends with
options, and a comment is option 1, UTF-8 text.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from .errors import EngineError
from .framecopy import PCAPNG_BYTE_ORDER, PCAPNG_FRAMES, PCAPNG_SECTION

OPT_ENDOFOPT = 0
OPT_COMMENT = 1
# Frame blocks that carry options after their packet data: enhanced and obsolete packet
# blocks. Simple packet blocks and systemd journal entries have none, so no comment either.
PACKET_BLOCKS = {0x00000006, 0x00000002}
PACKET_FIXED = 20  # interface, timestamp (2 words), captured length, original length
SECTION_FIXED = 16  # byte-order magic, major and minor version, section length
MAX_OPTION = 0xFFFF
GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK = 4 * 1024 * 1024
SECTION_TYPE = struct.pack("<I", PCAPNG_SECTION)


@dataclass
class Comments:
    """The comments of a file's first section, and of its frames by number (from 1)."""

    section: list[str] = field(default_factory=list)
    packets: dict[int, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.section or self.packets)

    def renumbered(self, numbers: Sequence[int]) -> Comments:
        """Return these comments for a file holding only the frames `numbers`, in that order."""
        packets = {
            index: self.packets[number] for index, number in enumerate(numbers, 1) if number in self.packets
        }
        return Comments(list(self.section), packets)


def _pad(size: int) -> int:
    return (size + 3) & ~3


def _options(data: bytes, order: str) -> Iterator[tuple[int, int, bytes]]:
    """Yield (offset, code, value) of each option until the end-of-options option."""
    at = 0
    while at + 4 <= len(data):
        code, size = struct.unpack_from(order + "HH", data, at)
        if code == OPT_ENDOFOPT or at + 4 + size > len(data):
            return
        yield at, code, data[at + 4 : at + 4 + size]
        at += 4 + _pad(size)


def _comments(data: bytes, order: str) -> list[str]:
    # Some writers end the text with NULs; Wireshark shows it without them.
    return [
        value.decode("utf-8", "replace").rstrip("\x00")
        for _, code, value in _options(data, order)
        if code == OPT_COMMENT
    ]


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    if compressed:
        return cast(BinaryIO, gzip.open(path, "rb"))
    return open(path, "rb")  # noqa: SIM115


def read(path: Path) -> Comments | None:
    """Return the comments of a pcapng file (gzip-compressed or not), or None for another format.

    Stops where the file is truncated or malformed, as Wireshark stops reading there too.
    """
    found = Comments()
    with _open(path) as handle:
        try:
            if not _read_blocks(handle, found):
                return None
        except (EOFError, gzip.BadGzipFile, zlib.error):
            pass  # a truncated or damaged compressed file: keep what came before
    return found


def _read_blocks(handle: BinaryIO, found: Comments) -> bool:
    """Read comments into `found`; return False if the file is not pcapng.

    The file is read in large chunks and parsed in place: a million small blocks read one
    call at a time took six times as long as capinfos reading the same file.
    """
    data = handle.read(READ_CHUNK)
    if len(data) < 4 or data[:4] != SECTION_TYPE:
        return False
    at = number = sections = 0
    order = "<"
    header = struct.Struct("<II").unpack_from
    word = struct.Struct("<I").unpack_from
    frames, packets = PCAPNG_FRAMES, PACKET_BLOCKS
    end = len(data)
    while True:
        if end - at < 12:
            data = data[at:] + handle.read(READ_CHUNK)
            at, end = 0, len(data)
            if end < 12:
                return True
        kind, length = header(data, at)
        if kind == PCAPNG_SECTION:  # the same in either byte order
            order = "<" if word(data, at + 8)[0] == PCAPNG_BYTE_ORDER else ">"
            header = struct.Struct(order + "II").unpack_from
            word = struct.Struct(order + "I").unpack_from
            kind, length = header(data, at)
            if word(data, at + 8)[0] != PCAPNG_BYTE_ORDER:
                return True
        if length < 12 or length % 4:
            return True
        if end - at < length:
            data = data[at:] + handle.read(max(READ_CHUNK, length))
            at, end = 0, len(data)
            if end < length:
                return True  # truncated
        if kind in frames:
            number += 1
            if kind in packets and length >= 12 + PACKET_FIXED:
                options = at + 8 + PACKET_FIXED + ((word(data, at + 20)[0] + 3) & ~3)
                last = at + length - 4
                if options > last:
                    return True
                if options < last and (texts := _comments(data[options:last], order)):
                    found.packets[number] = texts
        elif kind == PCAPNG_SECTION:
            sections += 1
            if length < 12 + SECTION_FIXED:
                return True
            if sections == 1:
                found.section = _comments(data[at + 8 + SECTION_FIXED : at + length - 4], order)
        at += length


def _option(code: int, value: bytes, order: str) -> bytes:
    if len(value) > MAX_OPTION:
        raise EngineError(f"a comment of {len(value)} bytes does not fit in a pcapng option")
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (_pad(len(value)) - len(value))


def _with_comments(block: bytes, fixed: int, texts: Sequence[str], order: str) -> bytes:
    """Return a block with comment options added after its own options."""
    options = block[fixed:-4]
    # Keep every option before the end-of-options one, then add ours and end the list again.
    kept = 0
    for offset, _, value in _options(options, order):
        kept = offset + 4 + _pad(len(value))
    added = b"".join(_option(OPT_COMMENT, text.encode(), order) for text in texts)
    body = block[8:fixed] + options[:kept] + added + struct.pack(order + "HH", OPT_ENDOFOPT, 0)
    length = 8 + len(body) + 4
    return block[:4] + struct.pack(order + "I", length) + body + struct.pack(order + "I", length)


def add(path: Path, comments: Comments) -> None:
    """Add comments to an uncompressed pcapng file in place: to its first section and its frames."""
    partial = path.with_suffix(".commented")
    try:
        with open(path, "rb") as source, open(partial, "wb") as target:
            _add_blocks(source, target, comments)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _add_blocks(source: BinaryIO, target: BinaryIO, comments: Comments) -> None:
    order = "<"
    number = sections = 0
    while head := source.read(8):
        if len(head) < 8:
            raise EngineError("the exported file ends in the middle of a block")
        kind = struct.unpack(order + "I", head[:4])[0]
        if struct.unpack("<I", head[:4])[0] == PCAPNG_SECTION:
            kind = PCAPNG_SECTION
            magic = source.read(4)
            order = "<" if struct.unpack("<I", magic)[0] == PCAPNG_BYTE_ORDER else ">"
            head += magic
        length = struct.unpack(order + "I", head[4:8])[0]
        if length < len(head) + 4 or length % 4:
            raise EngineError("the exported file has a malformed block")
        block = head + source.read(length - len(head))
        if len(block) < length:
            raise EngineError("the exported file ends in the middle of a block")
        if kind == PCAPNG_SECTION:
            sections += 1
            if sections == 1 and comments.section:
                block = _with_comments(block, 8 + SECTION_FIXED, comments.section, order)
        elif kind in PCAPNG_FRAMES:
            number += 1
            texts = comments.packets.get(number)
            if texts and kind in PACKET_BLOCKS:
                captured = struct.unpack_from(order + "I", block, 8 + 12)[0]
                block = _with_comments(block, 8 + PACKET_FIXED + _pad(captured), texts, order)
        target.write(block)
