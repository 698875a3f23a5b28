"""One tshark pass over a capture printing chosen fields of the frames a display filter shows.

The TCP and VoIP analyses read tshark's own analysis fields (`tcp.analysis.*`, `sip.*`, ...)
for every frame of interest in one two-pass run (`tshark -2 -T fields`, as the GUI's two
passes), and aggregate them in Python as the lines arrive: a million packets' lines are never
held at once. The lines are read and handed to the aggregation in a worker thread, so the event
loop keeps serving while a pass on a large capture takes its tens of seconds.

A two-pass tshark keeps every frame's state: up to 1.5 GB resident for the benchmark's million
packets (bench/results/analysis.md). So at most PASSES_AT_ONCE run in one server process; a
request that finds no room within ENGINE_BUSY_WAIT_SECONDS is told the engine is busy. Every
pass runs under ENGINE_MEMORY_MB of address space and ENGINE_REQUEST_TIMEOUT.

Results are remembered with the statistics' results (a stored capture never changes), and
callers asking for the same result while it is being computed wait for that one computation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from django.conf import settings

from . import commands
from .errors import EngineError
from .sessions import EngineBusy
from .stats import _recall, _remember

log = logging.getLogger(__name__)

T = TypeVar("T")

# tshark passes running at once in one server process (the machine has a few cores, and each
# pass on a large capture holds up to a GB or two).
PASSES_AT_ONCE = 2
AGGREGATOR = commands.FIELD_AGGREGATOR

_room: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
_running: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Task[Any]] = {}


class EnoughRows(Exception):
    """Raised by a consumer that has read all it may: the pass stops there."""


@dataclass
class PassOutcome:
    """How a pass ended: the lines read, and tshark's complaint when it stopped early."""

    rows: int
    problem: str | None = None
    stopped: bool = False


def values(cell: str) -> list[str]:
    """Return each occurrence of a field in one cell (none for an empty cell)."""
    return cell.split(AGGREGATOR) if cell else []


def last(cell: str) -> str:
    """Return the last occurrence of a field: the innermost header of a tunnelled packet."""
    return cell.rpartition(AGGREGATOR)[2]


def _semaphore() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _room:
        _room[loop] = asyncio.Semaphore(PASSES_AT_ONCE)
    return _room[loop]


def _complaint(errors: str, path: Path) -> str | None:
    lines = [line for line in errors.splitlines() if line.strip() and "as user" not in line]
    if not lines:
        return None
    text = lines[-1].removeprefix("tshark: ").strip()
    return text.replace(f'"{path}"', "the capture file").replace(str(path), "the capture file")


def _read(stream: IO[str], consume: Callable[[list[str]], None]) -> tuple[int, bool]:
    """Hand each line's cells to consume; return the lines read and whether consume stopped."""
    rows = 0
    for line in stream:
        try:
            consume(line.rstrip("\n").split("\t"))
        except EnoughRows:
            return rows, True
        except (ValueError, IndexError) as error:
            log.exception("unreadable tshark line %r", line[:500])
            raise EngineError(f"tshark printed a line the analysis cannot read (line {rows + 1})") from error
        rows += 1
    return rows, False


async def run(
    path: Path,
    fields: list[str],
    display_filter: str,
    consume: Callable[[list[str]], None],
    preferences: list[str] | None = None,
    statistics: list[str] | None = None,
) -> PassOutcome:
    """Run one tshark pass, giving consume the fields of each frame shown (a list of cells).

    The lines of `statistics` (-z) follow the frames' lines, each handed over as one cell.
    """
    room = _semaphore()
    try:
        await asyncio.wait_for(room.acquire(), settings.ENGINE_BUSY_WAIT_SECONDS)
    except TimeoutError:
        raise EngineBusy("the engine is busy with other analyses: try again in a moment") from None
    try:
        command = commands.tshark_fields(path, fields, display_filter, preferences, statistics)
        return await _run(path, command, consume)
    finally:
        room.release()


async def _run(path: Path, command: list[str], consume: Callable[[list[str]], None]) -> PassOutcome:
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
            text=True,
            errors="replace",
            bufsize=1024 * 1024,
        )
        assert process.stdout is not None
        reading = asyncio.ensure_future(asyncio.to_thread(_read, process.stdout, consume))
        try:
            async with asyncio.timeout(settings.ENGINE_REQUEST_TIMEOUT):
                rows, stopped = await asyncio.shield(reading)
        except TimeoutError:
            raise EngineError(
                f"the analysis took longer than {settings.ENGINE_REQUEST_TIMEOUT} s and was stopped"
            ) from None
        finally:
            # Stopped early, given up, or done: tshark must not run on alone.
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            code = await asyncio.to_thread(process.wait)
            # The reading thread ends at the end of tshark's output; only then is it closed.
            with contextlib.suppress(BaseException):
                await reading
            process.stdout.close()
        errors.seek(0)
        complaint = _complaint(errors.read(64 * 1024).decode(errors="replace"), path)
    if stopped:
        return PassOutcome(rows, stopped=True)
    if code != 0:
        # tshark exits non-zero for a capture cut short after printing what it read, as the
        # packet list shows it; with nothing read, the complaint is the answer.
        if rows == 0:
            raise EngineError(complaint or f"tshark exited with status {code}")
        return PassOutcome(rows, problem=complaint or f"tshark exited with status {code}")
    return PassOutcome(rows)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Read a finished task's error so that one nobody waited for is not reported as lost."""
    if not task.cancelled():
        task.exception()


async def shared(key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
    """Return compute()'s result; callers asking with the same key meanwhile wait for the same run.

    The computation runs as a task of its own: a caller that gives up (a page closed) does not
    stop it for the others, and its result is still remembered for the next one who asks.
    """
    loop = asyncio.get_running_loop()
    running = (loop, key)
    task = _running.get(running)
    if task is None:
        task = loop.create_task(compute())  # type: ignore[arg-type]
        _running[running] = task
        task.add_done_callback(lambda _: _running.pop(running, None))
        task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


async def remembered(key: tuple[Any, ...], compute: Callable[[], Awaitable[T]]) -> T:
    """Return the remembered result for key (its first item the capture's path), computing it once."""
    if (known := _recall(key)) is not None:
        return known

    async def computed() -> T:
        return _remember(key, await compute())

    return await shared(key, computed)
