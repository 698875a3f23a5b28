"""Each frame's time stamp and length, read from a capture's record headers rather than dissected.

Packets and bytes per interval need no dissection: every record header of a pcap or pcapng file
holds its frame's time stamp and original length. Reading them takes under two seconds for a
million frames, where sharkd's `iograph` dissects every frame and keeps only the first 250,000
intervals. The readers follow Wireshark 4.0's wiretap:

* pcap: both byte orders, microsecond and nanosecond magic numbers;
* pcapng: sections in either byte order; interfaces with `if_tsresol` (a power of ten or of two)
  and `if_tsoffset` (seconds added to every time stamp); enhanced and obsolete packet blocks;
  simple packet blocks, which carry no time stamp and which Wireshark dates 1970-01-01 00:00:00.

What wiretap reads differently (link types whose records start with a pseudo-header that it
takes off the frame length, file variants, systemd journal entries, event blocks) is caught by
comparing the frame count, byte total and duration with sharkd's; such a capture, and a file
of any other format, gets its timeline from sharkd's packet list instead (one dissection pass).

Times are kept as nanoseconds from frame 1's time stamp, the `frame.time_relative` that
Wireshark's I/O graphs bucket: a frame earlier than frame 1 is in no interval.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import struct
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import accumulate
from pathlib import Path
from typing import Any

from .framecopy import PCAP_MAGICS, PCAPNG_BYTE_ORDER, PCAPNG_SECTION, file_kind
from .packets import NUMBER, count
from .sessions import COUNT_INTERVAL_MS, engine

log = logging.getLogger(__name__)

NANOSECOND_PCAP = 0xA1B23C4D
# Link types (pcap LINKTYPE_ values) whose records wiretap hands over whole, with no
# pseudo-header taken off the frame length; captures of others are read by sharkd.
PLAIN_LINK_TYPES = frozenset(
    {0, 1, 6, 8, 9, 10, 12, 14, 50, 51, 101, 104, 105, 107, 108, 113, 119, 127, 163}
    | {189, 195, 215, 220, 228, 229, 230, 239, 249, 276}
    | set(range(147, 163))  # the user-defined link types
)
IDB, OPB, SPB, EPB = 0x00000001, 0x00000002, 0x00000003, 0x00000006
SYSTEMD_JOURNAL = 0x00000009
IF_TSRESOL, IF_TSOFFSET = 9, 14
DEFAULT_UNITS = 1_000_000  # pcapng time stamps count microseconds unless if_tsresol says otherwise
U64 = (1 << 64) - 1

# Timelines kept: a million frames take about 30 MB.
TIMELINES_KEPT = 4
# The frames of display filters kept, for filtered series beyond sharkd's iograph.
SELECTIONS_KEPT = 8
# Rows asked of sharkd per `frames` request when it lists every frame or a filter's frames.
PAGE_ROWS = 50_000
EPOCH, LENGTH = "frame.time_epoch:0", "frame.len:0"


class Unreadable(Exception):
    """The file's records may not be read here as wiretap reads them."""


@dataclass(eq=False)
class Frames:
    """Some frames' offsets from frame 1 (ns, ascending, none negative) and their running byte total."""

    offsets: array[int]
    # sizes[i]: the bytes of the first i frames, so one entry longer than offsets.
    sizes: array[int]

    def __len__(self) -> int:
        return len(self.offsets)

    def intervals(self, interval_ns: int) -> int:
        """Return how many intervals reach the last frame (0 without frames)."""
        return self.offsets[-1] // interval_ns + 1 if self.offsets else 0

    def count(self, interval_ns: int, first: int, last: int) -> tuple[list[int], list[int]]:
        """Return the packets and bytes in intervals first..last-1."""
        packets, size = [0] * (last - first), [0] * (last - first)
        offsets, sizes = self.offsets, self.sizes
        position = bisect_left(offsets, first * interval_ns)
        end = bisect_left(offsets, last * interval_ns, position)
        # One step per interval that holds frames: a sparse stretch costs as little as a dense one.
        while position < end:
            index = offsets[position] // interval_ns
            after = bisect_left(offsets, (index + 1) * interval_ns, position, end)
            packets[index - first] = after - position
            size[index - first] = sizes[after] - sizes[position]
            position = after
        return packets, size

    def next_active(self, interval_ns: int, index: int) -> int | None:
        """Return the first interval from index on that holds a frame."""
        position = bisect_left(self.offsets, index * interval_ns)
        return self.offsets[position] // interval_ns if position < len(self.offsets) else None

    def previous_active(self, interval_ns: int, index: int) -> int | None:
        """Return the last interval before index that holds a frame."""
        position = bisect_left(self.offsets, index * interval_ns)
        return self.offsets[position - 1] // interval_ns if position > 0 else None


def _frames(offsets: array[int], lengths: array[int], indexes: Sequence[int] | None) -> Frames:
    """Gather the frames at these indexes (all without), drop those before frame 1, sort by time."""
    if indexes is None:
        chosen, chosen_lengths = offsets, lengths
    else:
        chosen = array("q", (offsets[i] for i in indexes))
        chosen_lengths = array("I", (lengths[i] for i in indexes))
    if not chosen or (min(chosen) >= 0 and all(a <= b for a, b in zip(chosen, chosen[1:], strict=False))):
        # The usual case: frames in time order, so the arrays are shared rather than copied.
        ordered, ordered_lengths = chosen, chosen_lengths
    else:
        order = sorted((i for i in range(len(chosen)) if chosen[i] >= 0), key=chosen.__getitem__)
        ordered = array("q", (chosen[i] for i in order))
        ordered_lengths = array("I", (chosen_lengths[i] for i in order))
    return Frames(ordered, array("q", accumulate(ordered_lengths, initial=0)))


@dataclass(eq=False)
class Timeline:
    """Every frame's offset from frame 1 (ns) and length, by frame number - 1."""

    offsets: array[int]
    lengths: array[int]
    everything: Frames

    @classmethod
    def from_times(cls, times: array[int], lengths: array[int]) -> Timeline:
        start = times[0] if times else 0
        offsets = array("q", (t - start for t in times)) if start else times
        return cls(offsets, lengths, _frames(offsets, lengths, None))

    def select(self, numbers: Sequence[int]) -> Frames:
        """Return the frames with these numbers (1-based, ascending)."""
        return _frames(self.offsets, self.lengths, [n - 1 for n in numbers])


_PCAP = {order: struct.Struct(order + "IIII") for order in "<>"}
_U32 = {order: struct.Struct(order + "I") for order in "<>"}
_U16 = {order: struct.Struct(order + "H") for order in "<>"}
_OPTION = {order: struct.Struct(order + "HH") for order in "<>"}
_I64 = {order: struct.Struct(order + "q") for order in "<>"}
_EPB = {order: struct.Struct(order + "IIIII") for order in "<>"}
_OPB = {order: struct.Struct(order + "HHIIII") for order in "<>"}


def _read_pcap(data: mmap.mmap) -> tuple[array[int], array[int]]:
    if len(data) < 24:
        raise Unreadable("the file header is cut short")
    order = "<" if _U32["<"].unpack_from(data, 0)[0] in PCAP_MAGICS else ">"
    scale = 1 if _U32[order].unpack_from(data, 0)[0] == NANOSECOND_PCAP else 1000
    link_type = _U32[order].unpack_from(data, 20)[0]
    if link_type not in PLAIN_LINK_TYPES:
        raise Unreadable(f"link type {link_type}")
    times, lengths = array("q"), array("I")
    add_time, add_length = times.append, lengths.append
    unpack = _PCAP[order].unpack_from
    position, size = 24, len(data)
    while position + 16 <= size:
        seconds, fraction, captured, original = unpack(data, position)
        position += 16 + captured
        if position > size:
            break  # a record cut short: wiretap stops before it too
        add_time(seconds * 1_000_000_000 + fraction * scale)
        add_length(original)
    return times, lengths


def _interface(data: mmap.mmap, order: str, start: int, end: int) -> tuple[int, int]:
    """Return an interface's time units per second and time stamp offset (s) from its options."""
    link_type = _U16[order].unpack_from(data, start)[0]
    if link_type not in PLAIN_LINK_TYPES:
        raise Unreadable(f"link type {link_type}")
    units, offset = DEFAULT_UNITS, 0
    position = start + 8
    while position + 4 <= end:
        code, length = _OPTION[order].unpack_from(data, position)
        if code == 0:
            break
        value = position + 4
        if code == IF_TSRESOL and length == 1:
            resolution = data[value]
            base, exponent = (2, resolution & 0x7F) if resolution & 0x80 else (10, resolution)
            fits = exponent < 64 if base == 2 else exponent < 20
            units = base**exponent if fits else U64
        elif code == IF_TSOFFSET and length == 8:
            offset = _I64[order].unpack_from(data, value)[0]
        position = value + length + (-length % 4)
    return units, offset


def _nanoseconds(stamp: int, units: int, offset: int) -> int:
    """Convert a pcapng time stamp as wiretap does, 64-bit wrap-around included."""
    seconds = stamp // units
    fraction = (((stamp % units) * 1_000_000_000) & U64) // units
    return (seconds + offset) * 1_000_000_000 + fraction


def _read_pcapng(data: mmap.mmap) -> tuple[array[int], array[int]]:
    times, lengths = array("q"), array("I")
    order = "<"
    interfaces: list[tuple[int, int]] = []
    position, size = 0, len(data)
    while position + 12 <= size:
        if _U32["<"].unpack_from(data, position)[0] == PCAPNG_SECTION:
            byte_order = _U32["<"].unpack_from(data, position + 8)[0]
            order = "<" if byte_order == PCAPNG_BYTE_ORDER else ">"
            interfaces = []  # interface numbers start again in every section
            kind = PCAPNG_SECTION
        else:
            kind = _U32[order].unpack_from(data, position)[0]
        length = _U32[order].unpack_from(data, position + 4)[0]
        if length < 12 or length % 4 or position + length > size:
            break  # wiretap stops at a malformed or cut-short block; the counts then disagree
        body, end = position + 8, position + length - 4
        if kind == IDB:
            interfaces.append(_interface(data, order, body, end))
        elif kind == EPB:
            interface, high, low, _, original = _EPB[order].unpack_from(data, body)
            units, offset = interfaces[interface] if interface < len(interfaces) else (0, 0)
            if not units:
                raise Unreadable(f"interface {interface} is not described")
            times.append(_nanoseconds(high << 32 | low, units, offset))
            lengths.append(original)
        elif kind == SPB:
            times.append(0)
            lengths.append(_U32[order].unpack_from(data, body)[0])
        elif kind == OPB:
            interface, _, high, low, _, original = _OPB[order].unpack_from(data, body)
            units, offset = interfaces[interface] if interface < len(interfaces) else (0, 0)
            if not units:
                raise Unreadable(f"interface {interface} is not described")
            times.append(_nanoseconds(high << 32 | low, units, offset))
            lengths.append(original)
        elif kind == SYSTEMD_JOURNAL:
            raise Unreadable("systemd journal entries")
        position += length
    return times, lengths


def read_headers(path: Path) -> Timeline:
    """Read every frame's time stamp and length from a pcap or pcapng file's record headers."""
    kind = file_kind(path)
    if not kind:
        raise Unreadable("neither pcap nor pcapng")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            times, lengths = _read_pcap(data) if kind == "pcap" else _read_pcapng(data)
        except (OverflowError, struct.error) as error:
            raise Unreadable(str(error)) from error
    return Timeline.from_times(times, lengths)


async def _engine_totals(path: Path) -> tuple[int, int, float]:
    """Return sharkd's frame count, byte total and duration (the largest offset from frame 1)."""
    frames = await count(path)
    sessions = engine().sessions(path)
    status = await sessions.call("status")
    totals = await sessions.call("intervals", {"interval": COUNT_INTERVAL_MS})
    return frames, int(totals.get("bytes", 0)), float(status.get("duration") or 0)


def _agrees(timeline: Timeline, totals: tuple[int, int, float]) -> bool:
    """Tell whether sharkd counts the same frames, bytes and duration as the headers say."""
    frames, size, duration = totals
    offsets = timeline.everything.offsets
    longest = offsets[-1] / 1e9 if offsets else 0.0
    # sharkd prints the duration from a double: nanoseconds are lost beyond 10^7 s.
    same_time = abs(duration - longest) <= 1e-6 + duration * 1e-15
    return frames == len(timeline.offsets) and size == sum(timeline.lengths) and same_time


def _read_or_none(path: Path) -> Timeline | None:
    try:
        return read_headers(path)
    except Unreadable as reason:
        log.info("%s: frame times come from the engine (%s)", path.name, reason)
        return None


def _epoch_nanoseconds(text: str) -> int:
    # A frame without a time stamp (a simple packet block) shows none; wiretap dates it 0.
    try:
        return int(Decimal(text) * 1_000_000_000) if text else 0
    except InvalidOperation:
        return 0


def _parse_rows(rows: list[dict[str, Any]], times: array[int], lengths: array[int]) -> None:
    for row in rows:
        epoch, length = row["c"]
        times.append(_epoch_nanoseconds(epoch))
        lengths.append(int(length or 0))


async def _from_engine(path: Path) -> Timeline:
    """List every frame's time stamp and length with sharkd (it dissects every frame)."""
    total = await count(path)
    sessions = engine().sessions(path)
    times, lengths = array("q"), array("I")
    for skip in range(0, total, PAGE_ROWS):
        params: dict[str, Any] = {"limit": PAGE_ROWS, "column0": EPOCH, "column1": LENGTH}
        if skip:
            params["skip"] = skip  # sharkd 4.0 refuses skip=0
        rows = await sessions.call("frames", params)
        await asyncio.to_thread(_parse_rows, rows, times, lengths)
    return await asyncio.to_thread(Timeline.from_times, times, lengths)


_timelines: OrderedDict[Hashable, Timeline] = OrderedDict()
_selections: OrderedDict[Hashable, Frames] = OrderedDict()
_locks: dict[Hashable, asyncio.Lock] = {}


def _key(path: Path) -> Hashable:
    stat = path.stat()
    return (path, stat.st_mtime_ns, stat.st_size)


def _keep(cache: OrderedDict[Hashable, Any], key: Hashable, value: Any, kept: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > kept:
        cache.popitem(last=False)


async def timeline(path: Path) -> Timeline:
    """Return every frame's offset and length, read once per file version."""
    key = await asyncio.to_thread(_key, path)
    if key in _timelines:
        _timelines.move_to_end(key)
        return _timelines[key]
    async with _locks.setdefault(path, asyncio.Lock()):
        if key in _timelines:
            return _timelines[key]
        # The headers are read while sharkd loads the capture, whose totals check them.
        found, totals = await asyncio.gather(asyncio.to_thread(_read_or_none, path), _engine_totals(path))
        if found is not None and not _agrees(found, totals):
            log.warning("%s: record headers disagree with the engine; asking it instead", path.name)
            found = None
        if found is None:
            found = await _from_engine(path)
        _keep(_timelines, key, found, TIMELINES_KEPT)
        return found


def known_selection(path: Path, expression: str) -> Frames | None:
    """Return the frames a display filter matches if they were gathered already, else None."""
    try:
        key = (_key(path), expression)
    except OSError:
        return None
    if key in _selections:
        _selections.move_to_end(key)
    return _selections.get(key)


async def selection(path: Path, expression: str) -> Frames:
    """Return the frames a display filter matches (sharkd dissects each one for its number)."""
    found = known_selection(path, expression)
    if found is not None:
        return found
    key = (await asyncio.to_thread(_key, path), expression)
    async with _locks.setdefault(key, asyncio.Lock()):
        if (found := known_selection(path, expression)) is not None:
            return found
        whole = await timeline(path)
        sessions = engine().sessions(path)
        matched = await count(path, expression)
        numbers = array("I")
        for skip in range(0, matched, PAGE_ROWS):
            params: dict[str, Any] = {"filter": expression, "limit": PAGE_ROWS, "column0": NUMBER}
            if skip:
                params["skip"] = skip
            rows = await sessions.call("frames", params, filter_text=expression)
            numbers.extend(int(row["num"]) for row in rows)
        found = await asyncio.to_thread(whole.select, numbers)
        _keep(_selections, key, found, SELECTIONS_KEPT)
    _locks.pop(key, None)
    return found
