"""Format capture properties for people: times in UTC, durations, sizes and rates."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal


def utc_time(epoch: Decimal | None, digits: int = 6) -> str:
    """Return an epoch time as "YYYY-MM-DD HH:MM:SS.ffffff" in UTC, keeping the file's precision."""
    if epoch is None:
        return ""
    seconds = math.floor(epoch)
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"{epoch} (epoch)"
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if digits > 0:
        fraction = (epoch - seconds).quantize(Decimal(1).scaleb(-digits))
        text += f"{fraction:.{digits}f}"[1:]
    return text


def elapsed(seconds: Decimal | None) -> str:
    """Return a duration as Wireshark's "Elapsed" does: [d days, ]hh:mm:ss."""
    if seconds is None:
        return ""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days} day{'s' if days != 1 else ''}, {clock}" if days else clock


def short_duration(seconds: Decimal | None) -> str:
    """Return a duration compactly for a table cell: "2.047 s", "3 min 05 s", "2 h 03 min"."""
    if seconds is None:
        return ""
    value = float(seconds)
    if value < 60:
        return f"{value:.3f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def si(value: float | None, unit: str) -> str:
    """Return a rate with an SI prefix as Wireshark shows it: "318 kBps", "2548 kbps"."""
    if value is None:
        return ""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale * 10:
            return f"{value / scale:,.0f} {prefix}{unit}"
    return f"{value:,.0f} {unit}"


def decimal(value: float | None) -> str:
    """Return a measurement with one decimal and thousands separators, "" when unknown."""
    return "" if value is None else f"{value:,.1f}"
