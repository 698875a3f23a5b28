"""Decoding a capture as its bytes arrive: one tshark process reading pcap/pcapng on its stdin."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

from . import commands
from .packets import PacketRow
from .preview import parse_row


class Decoder:
    """A tshark process: write capture bytes in, read rows out; it runs beside the event loop."""

    def __init__(self, display_filter: str = "") -> None:
        self.display_filter = display_filter
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *commands.tshark_live_decoder(self.display_filter),
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
