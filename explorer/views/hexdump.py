"""Hex dump lines for the bytes pane: offset, 16 bytes as hex, and their ASCII."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

BYTES_PER_LINE = 16
# Every byte becomes two elements in the page; beyond this a dump stops being usable and
# the page grows by megabytes, so longer sources are cut (the page says so).
MAX_BYTES = 64 * 1024

PRINTABLE = range(0x20, 0x7F)


@dataclass
class HexLine:
    offset: str
    hex: SafeString
    ascii: SafeString


@dataclass
class HexDump:
    index: int
    name: str
    size: int
    lines: list[HexLine]

    @property
    def truncated(self) -> bool:
        return self.size > MAX_BYTES

    @property
    def shown(self) -> int:
        return min(self.size, MAX_BYTES)


def _hex_cells(offset: int, chunk: bytes) -> str:
    cells = []
    for i, byte in enumerate(chunk):
        # A double space between the two groups of eight, as Wireshark shows them.
        gap = "  " if i == 8 else (" " if i else "")
        cells.append(f'{gap}<span class="hex-byte" data-offset="{offset + i}">{byte:02x}</span>')
    return "".join(cells)


def _ascii_cells(offset: int, chunk: bytes) -> str:
    cells = []
    for i, byte in enumerate(chunk):
        char = escape(chr(byte)) if byte in PRINTABLE else "."
        gap = " " if i == 8 else ""
        cells.append(f'{gap}<span class="ascii-byte" data-offset="{offset + i}">{char}</span>')
    return "".join(cells)


def lines(data: bytes, limit: int = MAX_BYTES) -> list[HexLine]:
    """Return the dump of data (up to limit bytes), one line per 16 bytes."""
    width = len(f"{max(len(data) - 1, 0):x}")
    digits = max(4, width)
    result = []
    for offset in range(0, min(len(data), limit), BYTES_PER_LINE):
        chunk = data[offset : offset + BYTES_PER_LINE]
        # Safe by construction: the markup holds only integers, hex digits and escaped
        # printable ASCII, never the bytes themselves.
        result.append(
            HexLine(
                offset=f"{offset:0{digits}x}",
                hex=mark_safe(_hex_cells(offset, chunk)),  # noqa: S308
                ascii=mark_safe(_ascii_cells(offset, chunk)),  # noqa: S308
            )
        )
    return result


def dump(index: int, name: str, data: bytes) -> HexDump:
    """Return the dump of one data source of a packet."""
    return HexDump(index=index, name=name, size=len(data), lines=lines(data))
