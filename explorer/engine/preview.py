"""The first packets of a capture, read by tshark while sharkd is still loading the file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from functools import cache
from pathlib import Path

from django.conf import settings

from . import commands
from .packets import PacketRow

COLORFILTERS = [Path.home() / ".config/wireshark/colorfilters", Path("/usr/share/wireshark/colorfilters")]


@cache
def coloring_rules() -> dict[str, tuple[str, str]]:
    """Return Wireshark's coloring rules as rule name -> (bg, fg) hex colours, as sharkd gives them."""
    for path in COLORFILTERS:
        if path.exists():
            return _parse_colorfilters(path.read_text(errors="replace"))
    return {}


def _parse_colorfilters(text: str) -> dict[str, tuple[str, str]]:
    rules: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        # @name@filter@[bg r,g,b][fg r,g,b] with 16-bit components
        if not line.startswith("@"):
            continue
        try:
            _, name, _filter, colours = line.split("@", 3)
            bg_text, fg_text = colours.strip("[]").split("][")
        except ValueError:
            continue
        rules[name] = (_hex(bg_text), _hex(fg_text))
    return rules


def _hex(components: str) -> str:
    return "".join(f"{int(value) >> 8:02x}" for value in components.split(","))


async def first_rows(path: Path, count: int | None = None) -> list[PacketRow]:
    """Return the capture's first rows as tshark prints them in a single pass."""
    process = await asyncio.create_subprocess_exec(
        *commands.tshark_preview(path, count or settings.PREVIEW_ROWS),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return []
    except asyncio.CancelledError:
        # sharkd loaded first, or the viewer left: the rows are not wanted any more.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    rows = [parse_row(line) for line in stdout.decode(errors="replace").splitlines()]
    return [row for row in rows if row is not None]


def parse_row(line: str) -> PacketRow | None:
    """Return the row of one line printed by the packet list's tshark columns, or None for another line."""
    cells = line.rstrip("\n").split("\t")
    if len(cells) < 8 or not cells[0].isdigit():
        return None
    # The coloring rule is the last field: an Info holding a tab spans several cells before it.
    bg, fg = coloring_rules().get(cells[-1], (None, None))
    return PacketRow(
        number=int(cells[0]),
        time=cells[1],
        source=cells[2],
        destination=cells[3],
        protocol=cells[4],
        length=int(cells[5]) if cells[5].isdigit() else 0,
        info="\t".join(cells[6:-1]),
        bg=bg,
        fg=fg,
    )
