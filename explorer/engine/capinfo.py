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
# capinfos names the file it read: the staging path, which is nobody's business but the server's.
QUOTED_PATH = re.compile(r'"[^"]*"\s*')
# Times are kept as signed 64-bit nanoseconds (the years 1678 to 2261); a damaged pcapng time
# stamp can lie thousands of years away.
MAX_SECONDS = Decimal(2**63 - 1) / 1_000_000_000
# Wiretap's reasons, as the person who uploaded the file would say them.
REASONS = {
    "appears to have been cut short": "truncated",
    "appears to be damaged or corrupt": "damaged",
    "contains record data that capinfos doesn't support": "in a form the engine does not support",
}


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


def _reason(errors: str) -> tuple[str, str]:
    """Return why capinfos could not read a file, and wiretap's details in parentheses."""
    lines = [line.strip().removeprefix("capinfos: ") for line in errors.splitlines() if line.strip()]
    lines = [line for line in lines if not TRUNCATED.search(line) and not line.startswith("(will continue")]
    if not lines:
        return "unreadable file", ""
    reason = next((said for text, said in REASONS.items() if text in lines[0]), "")
    if not reason:
        reason = QUOTED_PATH.sub("", lines[0].replace('The file "', '"')).rstrip(".") or "unreadable file"
    details = [line for line in lines[1:] if line.startswith("(") and line.endswith(")")]
    return reason, f" {QUOTED_PATH.sub('', details[0])}" if details else ""


async def read(path: Path) -> CaptureInfo:
    """Return the capture's properties, or raise NotACapture with a message for people."""
    process = await asyncio.create_subprocess_exec(
        *commands.capinfos(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    stdout, stderr = await process.communicate()
    errors = stderr.decode(errors="replace").replace("\u2019", "'")
    if "isn't a capture file" in errors:
        raise NotACapture("not a capture file")
    info = parse(stdout.decode(errors="replace"))
    if process.returncode != 0 or not info.file_type:
        reason, detail = _reason(errors)
        truncated = TRUNCATED.search(errors)
        count = int(truncated.group(1)) if truncated else 0
        if reason == "truncated":
            if count == 0:
                raise NotACapture("file is truncated before its first packet: no packet readable")
            info.warning = f"file is truncated after packet {count}: {_packets(count)} readable"
        elif count == 0:
            where = " before its first packet" if truncated else ""
            raise NotACapture(f"not a readable capture file: {reason}{where}{detail}")
        else:
            info.warning = f"file is {reason} after packet {count}{detail}: {_packets(count)} readable"
        info.packets = count
    if info.file_type in NOT_CAPTURE_TYPES:
        raise NotACapture(f"not a capture file (it reads as a {info.file_type} file)")
    times = [info.first_time, info.last_time, info.duration]
    if any(time is not None and abs(time) > MAX_SECONDS for time in times):
        info.first_time = info.last_time = info.duration = None
        far = "time stamps lie outside the years 1678 to 2261: the first and last times are left out"
        info.warning = f"{info.warning}; {far}" if info.warning else far
    return info
