"""Read a capture file's properties with capinfos, and tell a capture from anything else."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from . import commands
from .errors import NotACapture

# Formats wiretap opens that are files rather than packet captures: it reads a PNG, an ELF
# binary, JSON text or even a few bytes of text ("mp4") as a one-"packet" file.
NOT_CAPTURE_TYPES = {"mime", "json", "mp4", "rubymarshal", "ruby_marshal", "log3gpp", "mplayer"}

TRUNCATED = re.compile(r"An error occurred after reading (\d+) packets")


@dataclass
class CaptureInfo:
    file_type: str
    encapsulation: str
    time_precision: str
    precision_digits: int
    packets: int
    data_size: int
    first_time: Decimal | None
    last_time: Decimal | None
    duration: Decimal | None
    data_byte_rate: float | None
    data_bit_rate: float | None
    average_packet_size: float | None
    average_packet_rate: float | None
    comments: list[str] = field(default_factory=list)
    interfaces: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)
    warning: str = ""

    @property
    def link_types(self) -> list[str]:
        types = [i.get("Encapsulation", "") for i in self.interfaces if i.get("Encapsulation")]
        return list(dict.fromkeys(types)) or [self.encapsulation]


def _number(text: str | None) -> Decimal | None:
    if not text:
        return None
    try:
        return Decimal(text.split()[0])
    except (InvalidOperation, IndexError):
        return None


def _float(text: str | None) -> float | None:
    value = _number(text)
    return float(value) if value is not None else None


def _packets(count: int) -> str:
    return f"{count} packet{'s' if count != 1 else ''}"


def parse(output: str) -> CaptureInfo:
    """Parse capinfos' "Label: value" report, including its interface blocks."""
    values: dict[str, str] = {}
    comments: list[str] = []
    interfaces: list[dict[str, str]] = []
    for line in output.splitlines():
        if line.startswith("Interface #"):
            interfaces.append({})
        elif interfaces and line.startswith(" ") and "=" in line:
            key, _, value = line.strip().partition(" = ")
            interfaces[-1][key.strip()] = value.strip()
        elif ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "Capture comment":
                comments.append(value)
            else:
                values[key] = value
    precision = values.get("File timestamp precision", "")
    digits = re.search(r"\((\d+)\)", precision)
    return CaptureInfo(
        file_type=values.get("File type", ""),
        encapsulation=values.get("File encapsulation", ""),
        time_precision=precision,
        precision_digits=int(digits.group(1)) if digits else 6,
        packets=int(values.get("Number of packets", "0").split()[0] or 0),
        data_size=int((values.get("Data size") or "0").split()[0]),
        first_time=_number(values.get("First packet time")),
        last_time=_number(values.get("Last packet time")),
        duration=_number(values.get("Capture duration")),
        data_byte_rate=_float(values.get("Data byte rate")),
        data_bit_rate=_float(values.get("Data bit rate")),
        average_packet_size=_float(values.get("Average packet size")),
        average_packet_rate=_float(values.get("Average packet rate")),
        comments=comments,
        interfaces=interfaces,
        extra={
            key: values[key]
            for key in (
                "Packet size limit",
                "Strict time order",
                "Capture hardware",
                "Capture oper-sys",
                "Capture application",
            )
            if key in values
        },
    )


async def read(path: Path) -> CaptureInfo:
    """Return the capture's properties, or raise NotACapture with a message for people."""
    process = await asyncio.create_subprocess_exec(
        *commands.capinfos(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    stdout, stderr = await process.communicate()
    errors = stderr.decode(errors="replace")
    if "isn't a capture file" in errors or "isn't a capture file" in errors.replace("\u2019", "'"):
        raise NotACapture("not a capture file")
    info = parse(stdout.decode(errors="replace"))
    if process.returncode != 0 or not info.file_type:
        truncated = TRUNCATED.search(errors)
        if truncated is None:
            message = errors.strip().splitlines()[0] if errors.strip() else "unreadable file"
            raise NotACapture(f"not a readable capture file: {message.removeprefix('capinfos: ')}")
        count = int(truncated.group(1))
        if count == 0:
            raise NotACapture("file is truncated before its first packet: no packet readable")
        info.packets = count
        info.warning = f"file is truncated after packet {count}: {_packets(count)} readable"
    if info.file_type in NOT_CAPTURE_TYPES:
        raise NotACapture(f"not a capture file (it reads as a {info.file_type} file)")
    return info
