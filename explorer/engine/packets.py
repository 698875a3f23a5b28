"""Packet list, packet details, filter checks and completion, answered by sharkd."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EngineError, RequestTooLong
from .sessions import engine
from .sharkd import SharkdProcess

# Column format indexes of sharkd 4.0 (positions in its `info` column list), giving
# Wireshark's default columns: No., Time, Source, Destination, Protocol, Length, Info.
NUMBER, SOURCE, DESTINATION, PROTOCOL, LENGTH, INFO = "35", "39", "14", "37", "36", "28"

TIME_FORMATS = {
    "relative": "49",  # seconds since the beginning of the capture, tshark's default
    "absolute": "1",  # date and time of day, server local time
    "utc": "46",  # date and time of day in UTC
    "delta_displayed": "9",  # seconds since the previous displayed packet
    "delta": "8",  # seconds since the previous captured packet
    "epoch": "frame.time_epoch:0",  # seconds since 1970, trimmed to the file's precision
}
DEFAULT_TIME_FORMAT = "relative"

COLUMN_NAMES = ["number", "time", "source", "destination", "protocol", "length", "info"]

# Every display filter a user sends is measured here, as the engine receives it (a JSON string:
# a quote or backslash takes 2 bytes, a character beyond ASCII 6 or 12): sharkd reads a request
# line of 2 KiB at most, and one request may carry a filter with columns, or a filter ANDed
# with a table's own.
MAX_FILTER_LENGTH = 1024
# sharkd cannot read a NUL in a request; no other control character belongs in a filter either
# (tabs and line breaks are blanks).
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# What a field name (or the start of one) may hold: anything else completes to nothing.
FIELD_PREFIX = re.compile(r"[A-Za-z0-9_.-]+")

# Filter syntax does not change while the server runs: remember recent verdicts.
CHECKED_FILTERS_KEPT = 2000
_checked_filters: dict[str, str | None] = {}


FRAME_PARAMS: dict[str, Any] = {"proto": True, "bytes": True, "columns": True}


@dataclass
class PacketRow:
    number: int
    time: str
    source: str
    destination: str
    protocol: str
    length: int
    info: str
    bg: str | None
    fg: str | None


@dataclass
class PacketPage:
    total: int
    displayed: int
    packets: list[PacketRow] = field(default_factory=list)


def filter_size(filter_text: str) -> int:
    """Return how many bytes of a request line the filter takes."""
    return len(json.dumps(filter_text)) - 2


def _validated_filter(filter_text: str) -> str | None:
    """Return the filter without surrounding blanks (None if empty); raise EngineError if unfit to send."""
    filter_text = filter_text.strip()
    if control := CONTROL_CHARACTER.search(filter_text):
        raise EngineError(f"display filter holds a control character (U+{ord(control[0]):04X}): remove it")
    size = filter_size(filter_text)
    if size > MAX_FILTER_LENGTH:
        counted = f"{len(filter_text):,} characters" if size == len(filter_text) else f"{size:,} bytes"
        raise RequestTooLong(
            f"display filter too long: {counted}, the most is {MAX_FILTER_LENGTH:,} "
            "(quotes and backslashes count twice, a character beyond ASCII 6 or 12 times)"
        )
    return filter_text or None


def _row(raw: dict[str, Any], time_format: str, precision: int) -> PacketRow:
    cells = raw["c"]
    time_text = cells[1]
    if time_format == "epoch" and "." in time_text:
        seconds, fraction = time_text.split(".", 1)
        time_text = f"{seconds}.{fraction[:precision]}" if precision else seconds
    return PacketRow(
        number=int(raw["num"]),
        time=time_text,
        source=cells[2],
        destination=cells[3],
        protocol=cells[4],
        length=int(cells[5] or 0),
        info=cells[6],
        bg=raw.get("bg"),
        fg=raw.get("fg"),
    )


async def count(path: Path, filter_text: str = "") -> int:
    """Return how many packets of the capture match the display filter (all without one)."""
    return await engine().sessions(path).count(_validated_filter(filter_text))


async def packets(
    path: Path,
    filter_text: str = "",
    offset: int = 0,
    limit: int = 100,
    time_format: str = DEFAULT_TIME_FORMAT,
    precision: int = 6,
) -> PacketPage:
    """Return one page of the packet list with the capture total and the displayed count."""
    expression = _validated_filter(filter_text)
    if time_format not in TIME_FORMATS:
        raise EngineError(f"unknown time format {time_format!r}")
    if expression:
        # The parser's own message, rather than sharkd's terse "Invalid filter parameter".
        problem = await check_filter(expression)
        if problem:
            raise EngineError(problem)
    total = await count(path)
    displayed = await count(path, expression or "")
    params: dict[str, Any] = {"limit": max(1, limit)}
    if offset > 0:
        params["skip"] = offset
    if expression:
        params["filter"] = expression
    for index, column in enumerate(
        [NUMBER, TIME_FORMATS[time_format], SOURCE, DESTINATION, PROTOCOL, LENGTH, INFO]
    ):
        params[f"column{index}"] = column
    rows: list[dict[str, Any]] = []
    if limit > 0 and offset < displayed:
        sessions = engine().sessions(path)
        # Viewers of one capture mostly ask for the same aligned pages; a remembered page is
        # answered even while the session re-dissects the capture for someone's new filter.
        key = (expression, time_format, offset, limit)
        cached = sessions.pages.get(key)
        if cached is None:
            cached = await sessions.call("frames", params, filter_text=expression)
            sessions.remember_page(key, cached)
        rows = cached
    return PacketPage(total, displayed, [_row(raw, time_format, precision) for raw in rows])


@dataclass
class TreeNode:
    label: str
    filter: str | None
    start: int | None
    length: int | None
    source: int
    severity: str | None
    generated: bool
    kind: str | None
    children: list[TreeNode]


@dataclass
class DataSource:
    name: str
    data: bytes


@dataclass
class PacketDetail:
    number: int
    tree: list[TreeNode]
    sources: list[DataSource]
    columns: list[str]
    follow: list[tuple[str, str]]


def _node(raw: dict[str, Any]) -> TreeNode:
    start = length = None
    if "h" in raw:
        start, length = int(raw["h"][0]), int(raw["h"][1])
    return TreeNode(
        label=raw.get("l", ""),
        filter=raw.get("f"),
        start=start,
        length=length,
        source=int(raw.get("ds", 0)),
        severity=raw["s"].lower() if raw.get("s") else None,
        generated=bool(raw.get("g")),
        kind=raw.get("t"),
        children=[_node(child) for child in raw.get("n", [])],
    )


def _detail_of(number: int, result: dict[str, Any]) -> PacketDetail:
    """Return the packet details in sharkd's answer to `frame`."""
    sources = [DataSource("Frame", base64.b64decode(result.get("bytes", "")))]
    for extra in result.get("ds", []):
        sources.append(DataSource(extra.get("name", "Data"), base64.b64decode(extra.get("bytes", ""))))
    return PacketDetail(
        number=number,
        tree=[_node(raw) for raw in result.get("tree", [])],
        sources=sources,
        columns=list(result.get("col", [])),
        follow=[(kind, expression) for kind, expression in result.get("fol", []) if kind and expression],
    )


async def detail(path: Path, number: int) -> PacketDetail:
    """Return a packet's protocol tree and its bytes, with extra data sources after the frame."""
    result = await engine().sessions(path).call("frame", FRAME_PARAMS | {"frame": number})
    return _detail_of(number, result)


async def detail_of_file(path: Path, number: int) -> PacketDetail:
    """Return a packet's details from a file still being written, with a sharkd of its own."""
    # The shared sessions keep a file's packet count and pages for good: right for a stored
    # capture, wrong for one that grows, so each question loads the file as it is now.
    process = SharkdProcess(path)
    try:
        await process.start()
        recorded = int(process.status.get("frames", 0))
        if number > recorded:
            raise EngineError(f"packet {number} is not recorded yet: there are {recorded:,} packets so far")
        return _detail_of(number, await process.request("frame", FRAME_PARAMS | {"frame": number}))
    finally:
        await process.close()


async def check_filter(filter_text: str) -> str | None:
    """Return the engine's message when the display filter is invalid, else None."""
    try:
        expression = _validated_filter(filter_text)
    except EngineError as error:
        return error.message
    if expression is None:
        return None
    if expression in _checked_filters:
        return _checked_filters[expression]
    problem = None
    try:
        await engine().sessions(None).call("check", {"filter": expression})
    except RequestTooLong as error:
        problem = error.message
    except EngineError as error:
        problem = error.message.removeprefix("Filter invalid - ")
    if len(_checked_filters) >= CHECKED_FILTERS_KEPT:
        _checked_filters.pop(next(iter(_checked_filters)))
    _checked_filters[expression] = problem
    return problem


async def complete_field(prefix: str, limit: int = 50) -> list[dict[str, str]]:
    """Return field names starting with prefix, with their descriptions."""
    prefix = prefix.strip()
    if not FIELD_PREFIX.fullmatch(prefix) or len(prefix) > 200:
        return []
    result = await engine().sessions(None).call("complete", {"field": prefix})
    return [{"field": item["f"], "name": item.get("n", "")} for item in result.get("field", [])[:limit]]
