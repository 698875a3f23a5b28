"""Decoding a capture as its bytes arrive: one tshark process reading pcap/pcapng on its stdin."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

from . import commands
from .commands import _binary
from .packets import PacketRow
from .preview import coloring_rules


def decode_command(display_filter: str = "") -> list[str]:
    """Return the command printing the packet list's columns of every packet read on stdin, one per line."""
    fields: list[str] = []
    for field in commands.PREVIEW_FIELDS:
        fields += ["-e", field]
    selection = ["-Y", display_filter] if display_filter else []
    return [
        _binary("tshark"),
        "-l",
        "-r",
        "-",
        *selection,
        "--color",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        *fields,
    ]


def parse_row(line: str) -> PacketRow | None:
    """Return the row of one line of decode_command's output, or None for anything else."""
    cells = line.rstrip("\n").split("\t")
    if len(cells) < 8 or not cells[0].isdigit():
        return None
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


class Decoder:
    """A tshark process: write capture bytes in, read rows out; it runs beside the event loop."""

    def __init__(self, display_filter: str = "") -> None:
        self.display_filter = display_filter
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *decode_command(self.display_filter),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            limit=1024 * 1024,
        )

    async def write(self, data: bytes) -> None:
        assert self.process is not None and self.process.stdin is not None
        if self.process.stdin.is_closing():
            return
        self.process.stdin.write(data)
        with contextlib.suppress(ConnectionError):
            await self.process.stdin.drain()

    async def close_input(self) -> None:
        """Tell tshark the capture ended: it prints the last rows and exits."""
        if (
            self.process is not None
            and self.process.stdin is not None
            and not self.process.stdin.is_closing()
        ):
            self.process.stdin.close()
            with contextlib.suppress(ConnectionError):
                await self.process.stdin.wait_closed()

    async def rows(self) -> AsyncIterator[PacketRow]:
        """Yield rows as tshark prints them, until it exits."""
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            row = parse_row(line.decode(errors="replace"))
            if row is not None:
                yield row

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
