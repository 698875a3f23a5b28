"""Conversations, endpoints and the protocol hierarchy, as Wireshark's Statistics menu shows them.

Conversations and endpoints come from sharkd's `conv:` and `endpt:` taps. sharkd 4.0 takes no
display filter for a tap ("filter is not a valid member name"), so "limit to display filter"
runs the same tap on a copy of the capture holding only the frames sharkd displays for the
filter (chosen with the whole capture as context, as Wireshark's two passes choose them).
sharkd 4.0 has no protocol hierarchy tap either: that comes from `tshark -2 -q -z io,phs`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import signal
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings

from . import commands, framecopy
from .errors import EngineError
from .keylog import keylog_for
from .packets import NUMBER, _validated_filter, check_filter, count
from .sessions import COUNT_INTERVAL_MS, engine

log = logging.getLogger(__name__)

# The tap names of sharkd 4.0 (its `info` lists them under "convs").
KINDS = ["Ethernet", "IPv4", "IPv6", "TCP", "UDP"]
PORT_KINDS = {"TCP", "UDP"}

# Copies of captures limited to a display filter, kept for the next tab or sort.
FILTERED_KEPT = 16
# Tap results remembered (a stored capture never changes): sorting a table is then instant.
RESULTS_KEPT = 64

PHS_LINE = re.compile(r"^( *)(\S+)\s+frames:(\d+)\s+bytes:(\d+)\s*$")


@dataclass
class Conversation:
    address_a: str
    port_a: str
    address_b: str
    port_b: str
    packets_ab: int
    bytes_ab: int
    packets_ba: int
    bytes_ba: int
    packets: int
    bytes: int
    rel_start: Decimal
    duration: Decimal
    filter: str


@dataclass
class Endpoint:
    address: str
    port: str
    packets: int
    bytes: int
    tx_packets: int
    tx_bytes: int
    rx_packets: int
    rx_bytes: int
    filter: str


@dataclass
class ProtocolNode:
    protocol: str
    packets: int
    bytes: int
    percent_packets: float
    percent_bytes: float
    children: list[ProtocolNode] = field(default_factory=list)


_results: OrderedDict[Hashable, Any] = OrderedDict()
_copy_locks: dict[Path, asyncio.Lock] = {}


def _recall(key: Hashable) -> Any | None:
    """Return a remembered result (marking it recently used), or None."""
    if key not in _results:
        return None
    _results.move_to_end(key)
    return _results[key]


def _remember(key: Hashable, value: Any) -> Any:
    _results[key] = value
    _results.move_to_end(key)
    while len(_results) > RESULTS_KEPT:
        _results.popitem(last=False)
    return value


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise EngineError(f"unknown kind {kind!r}: choose one of {', '.join(KINDS)}")


async def _checked(path: Path, filter_text: str) -> str | None:
    """Return the filter expression (None for none), or raise EngineError with the parser's message."""
    expression = _validated_filter(filter_text)
    if expression:
        problem = await check_filter(expression)
        if problem:
            raise EngineError(problem)
    return expression


async def _run(command: list[str]) -> tuple[int, str, str]:
    """Run a command in its own process group; kill the group if the caller gives up."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await process.communicate()
    except asyncio.CancelledError:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


def _filtered_dir() -> Path:
    return Path(settings.CAPTURES_DIR) / ".filtered"


def _filtered_path(path: Path, expression: str) -> Path:
    digest = hashlib.sha256(expression.encode()).hexdigest()[:24]
    return _filtered_dir() / f"{path.name}.{digest}.cap"


async def matching_frames(path: Path, expression: str) -> list[int]:
    """Return the numbers of the frames sharkd displays for a display filter, in order."""
    rows = (
        await engine()
        .sessions(path)
        .call("frames", {"filter": expression, "column0": NUMBER}, filter_text=expression)
    )
    return [int(row["num"]) for row in rows]


async def _filtered_copy(path: Path, expression: str) -> Path:
    """Return a copy of the capture holding only the frames that match the filter."""
    destination = _filtered_path(path, expression)
    lock = _copy_locks.setdefault(destination, asyncio.Lock())
    async with lock:
        if destination.exists():
            os.utime(destination)  # recently used: pruned last
            return destination
        _filtered_dir().mkdir(parents=True, exist_ok=True)
        numbers = await matching_frames(path, expression)
        partial = destination.with_suffix(".partial")
        converted = destination.with_suffix(".pcapng-partial")
        try:
            source = path
            if not await asyncio.to_thread(framecopy.file_kind, path):
                code, _, errors = await _run(commands.editcap_pcapng(path, converted))
                if code != 0:
                    raise EngineError(errors.strip().splitlines()[-1] if errors.strip() else "editcap failed")
                source = converted
            await asyncio.to_thread(framecopy.copy_frames, source, partial, numbers)
            keylog = keylog_for(path)
            if keylog is not None:
                # The copy decrypts with the capture's keys, found beside it like the original's.
                destination.with_suffix(".keys").unlink(missing_ok=True)
                destination.with_suffix(".keys").symlink_to(keylog)
            partial.rename(destination)
        finally:
            partial.unlink(missing_ok=True)
            converted.unlink(missing_ok=True)
    await _prune_filtered()
    return destination


async def _prune_filtered() -> None:
    copies = sorted(_filtered_dir().glob("*.cap"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in copies[FILTERED_KEPT:]:
        await engine().forget(old)
        old.unlink(missing_ok=True)
        old.with_suffix(".keys").unlink(missing_ok=True)
        _copy_locks.pop(old, None)


async def forget(path: Path) -> None:
    """Remove the filtered copies and remembered results of a capture that is being deleted."""
    for copy in _filtered_dir().glob(f"{path.name}.*"):
        await engine().forget(copy)
        copy.unlink(missing_ok=True)
        _copy_locks.pop(copy, None)
    for key in [key for key in _results if isinstance(key, tuple) and key[0] == path]:
        del _results[key]


async def _first_epoch(path: Path) -> Decimal:
    rows = await engine().sessions(path).call("frames", {"limit": 1, "column0": "frame.time_epoch:0"})
    return Decimal(rows[0]["c"][0]) if rows else Decimal(0)


async def _tap(path: Path, tap: str, expression: str | None) -> tuple[dict[str, Any], Decimal]:
    """Return one tap's result, and what to add to its times to make them relative to frame 1."""
    if expression is None:
        result = await engine().sessions(path).call("tap", {"tap0": tap})
        return result["taps"][0], Decimal(0)
    if await count(path, expression) == 0:
        return {}, Decimal(0)
    copy = await _filtered_copy(path, expression)
    # One tap per request: a failing tap of a multi-tap request leaves the others registered.
    result = await engine().sessions(copy).call("tap", {"tap0": tap})
    # Times in the copy count from its own first frame, Wireshark's from the capture's.
    offset = await _first_epoch(copy) - await _first_epoch(path)
    return result["taps"][0], offset


def _seconds(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


async def conversations(path: Path, kind: str, filter_text: str = "") -> list[Conversation]:
    """Return the conversations of one kind (Ethernet, IPv4, IPv6, TCP, UDP), in Wireshark's order."""
    _check_kind(kind)
    expression = await _checked(path, filter_text)
    key = (path, "conv", kind, expression)
    if (known := _recall(key)) is not None:
        return list(known)
    tap, offset = await _tap(path, f"conv:{kind}", expression)
    rows = []
    for raw in tap.get("convs", []):
        start, stop = _seconds(raw.get("start")), _seconds(raw.get("stop"))
        # sharkd's tx is from A (the first packet's source) to B, as tshark's "->" column.
        rows.append(
            Conversation(
                address_a=raw.get("saddr", ""),
                port_a=raw.get("sport", ""),
                address_b=raw.get("daddr", ""),
                port_b=raw.get("dport", ""),
                packets_ab=int(raw.get("txf", 0)),
                bytes_ab=int(raw.get("txb", 0)),
                packets_ba=int(raw.get("rxf", 0)),
                bytes_ba=int(raw.get("rxb", 0)),
                packets=int(raw.get("txf", 0)) + int(raw.get("rxf", 0)),
                bytes=int(raw.get("txb", 0)) + int(raw.get("rxb", 0)),
                rel_start=start + offset,
                duration=stop - start,
                filter=raw.get("filter", ""),
            )
        )
    return list(_remember(key, rows))


async def endpoints(path: Path, kind: str, filter_text: str = "") -> list[Endpoint]:
    """Return the endpoints of one kind (Ethernet, IPv4, IPv6, TCP, UDP), in Wireshark's order."""
    _check_kind(kind)
    expression = await _checked(path, filter_text)
    key = (path, "endpt", kind, expression)
    if (known := _recall(key)) is not None:
        return list(known)
    tap, _ = await _tap(path, f"endpt:{kind}", expression)
    rows = [
        Endpoint(
            address=raw.get("host", ""),
            port=raw.get("port", ""),
            packets=int(raw.get("txf", 0)) + int(raw.get("rxf", 0)),
            bytes=int(raw.get("txb", 0)) + int(raw.get("rxb", 0)),
            tx_packets=int(raw.get("txf", 0)),
            tx_bytes=int(raw.get("txb", 0)),
            rx_packets=int(raw.get("rxf", 0)),
            rx_bytes=int(raw.get("rxb", 0)),
            filter=raw.get("filter", ""),
        )
        for raw in tap.get("hosts", [])
    ]
    return list(_remember(key, rows))


PHS_TITLE = "Protocol Hierarchy Statistics"


def parse_protocol_hierarchy(output: str) -> list[tuple[int, str, int, int]]:
    """Parse tshark's io,phs table into (depth, protocol, frames, bytes) lines, in its order."""
    lines = []
    for line in output.splitlines():
        match = PHS_LINE.match(line)
        if match:
            indent, protocol, frames, size = match.groups()
            lines.append((len(indent) // 2, protocol, int(frames), int(size)))
    return lines


async def protocol_hierarchy(path: Path, filter_text: str = "") -> list[ProtocolNode]:
    """Return the protocol tree of the frames matching the filter, with shares of the total."""
    expression = await _checked(path, filter_text)
    key = (path, "phs", expression)
    if (known := _recall(key)) is not None:
        return list(known)
    # The totals, as Wireshark's "Frame" row: frames and bytes the filter displays.
    params: dict[str, Any] = {"interval": COUNT_INTERVAL_MS}
    if expression:
        params["filter"] = expression
    totals = await engine().sessions(path).call("intervals", params, filter_text=expression)
    total_frames, total_bytes = int(totals.get("frames", 0)), int(totals.get("bytes", 0))
    code, output, errors = await _run(commands.tshark_protocol_hierarchy(path, expression or ""))
    # tshark exits non-zero for a file cut short or damaged after some packets, once it has
    # printed the table of what it read: the packets the list shows too.
    if code != 0 and PHS_TITLE not in output:
        message = [line for line in errors.splitlines() if line.startswith("tshark:")]
        raise EngineError(
            message[-1].removeprefix("tshark: ").replace(f'"{path}"', "the capture file")
            if message
            else "tshark failed"
        )
    roots: list[ProtocolNode] = []
    parents: list[ProtocolNode] = []
    for depth, protocol, frames, size in parse_protocol_hierarchy(output):
        node = ProtocolNode(
            protocol=protocol,
            packets=frames,
            bytes=size,
            percent_packets=100.0 * frames / total_frames if total_frames else 0.0,
            percent_bytes=100.0 * size / total_bytes if total_bytes else 0.0,
        )
        del parents[depth:]
        (parents[-1].children if parents else roots).append(node)
        parents.append(node)
    return list(_remember(key, roots))
