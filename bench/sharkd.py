"""Raw engine baselines: sharkd driven directly over JSON-RPC, plus tshark references."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.operations import raw_operations, tshark_export
from bench.procs import memory_kib, spawned
from bench.timing import median_of, page_offsets, spread, timed

PAGE = 100
MAX_LINE = 2048  # sharkd 4.0 reads requests with a 2 KiB buffer and splits longer lines
FILTERS = ("http.request", "tcp.analysis.retransmission")


class Sharkd:
    """One `sharkd -` session: pipelined JSON-RPC requests, answers matched by id."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._ids = itertools.count(1)
        self._answers: dict[int, dict[str, Any]] = {}

    async def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Write one request line; return its id without waiting for the answer."""
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params:
            message["params"] = params
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_LINE:
            raise BenchError(f"sharkd request longer than {MAX_LINE} bytes: {method}")
        self._stdin.write(line)
        await self._stdin.drain()
        return request_id

    async def answer(self, request_id: int) -> Any:
        """Read answers until request_id's arrives; return its result or raise its error."""
        while request_id not in self._answers:
            line = await self._stdout.readline()
            if not line:
                raise BenchError("sharkd exited unexpectedly")
            message = json.loads(line)
            self._answers[int(message["id"])] = message
        message = self._answers.pop(request_id)
        if "error" in message:
            raise BenchError(f"sharkd error: {message['error']}")
        return message["result"]

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.answer(await self.send(method, params))

    async def load(self, path: Path) -> dict[str, Any]:
        """Load path; the pipelined `status` answer marks the end of the load.

        sharkd never answers `load` for truncated files, but always answers the `status`
        queued behind it once the load is over.
        """
        await self.send("load", {"file": str(path)})
        return dict(await self.call("status"))

    async def frames(self, skip: int = 0, limit: int = PAGE, filter_: str | None = None) -> list[Any]:
        params: dict[str, Any] = {"limit": limit}
        if skip:  # sharkd rejects skip=0
            params["skip"] = skip
        if filter_:
            params["filter"] = filter_
        return list(await self.call("frames", params))

    async def frame(self, number: int) -> dict[str, Any]:
        return dict(await self.call("frame", {"frame": number, "proto": True, "bytes": True}))

    async def filter_first_page(self, filter_: str) -> int:
        """What the server does for a filter: count matches (intervals), then page 1."""
        counted = await self.call("intervals", {"interval": 2_000_000_000, "filter": filter_})
        await self.frames(0, PAGE, filter_)
        return int(counted["frames"])


def _memory_mb(pid: int) -> dict[str, float]:
    rss, hwm = memory_kib(pid)
    return {"rss_mb": rss / 1024, "peak_mb": hwm / 1024}


async def _measure_filter(shark: Sharkd, filter_: str) -> dict[str, Any]:
    """New filter, same filter again, then its second page."""
    new_s, matched = await timed(shark.filter_first_page(filter_))
    again_s, _ = await timed(shark.filter_first_page(filter_))
    page2_s, _ = await timed(shark.frames(PAGE, PAGE, filter_))
    return {"new_s": new_s, "again_s": again_s, "page2_s": page2_s, "matched": matched}


async def measure_sharkd(path: Path) -> dict[str, Any]:
    """Baselines of one sharkd session on path."""
    async with spawned(
        "sharkd",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,  # "Hello in child." and the root warning
    ) as proc:
        shark = Sharkd(proc)
        load_s, status = await timed(shark.load(path))
        total = int(status["frames"])
        result: dict[str, Any] = {"load_s": load_s, "frames": total}
        result["memory_after_load"] = _memory_mb(proc.pid)
        pages: dict[str, Any] = {}
        for name, offset in page_offsets(total, PAGE).items():
            # Awaited within the iteration, so the closure sees this iteration's offset.
            pages[name] = await median_of(lambda _i: shark.frames(offset, PAGE))  # noqa: B023
        result["pages"] = pages
        numbers = spread(total)
        result["details"] = await median_of(lambda i: shark.frame(numbers[i % len(numbers)]))
        result["filters"] = {f: await _measure_filter(shark, f) for f in FILTERS}
        result["memory_end"] = _memory_mb(proc.pid)
        return result


async def raw_operations_loaded(path: Path) -> dict[str, Any]:
    """The analysis operations in a freshly loaded raw sharkd session (not timed: its load)."""
    async with spawned(
        "sharkd",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    ) as proc:
        shark = Sharkd(proc)
        await shark.load(path)
        return await raw_operations(shark)


async def _run_timed(*cmd: str, count_lines: bool = False) -> tuple[float, int]:
    """Seconds to run cmd to completion, and the lines it printed when count_lines.

    Without count_lines stdout goes to /dev/null, as in `tshark -r FILE > /dev/null`.
    """
    started = time.perf_counter()
    stdout = asyncio.subprocess.PIPE if count_lines else asyncio.subprocess.DEVNULL
    lines = 0
    async with spawned(*cmd, stdout=stdout, stderr=asyncio.subprocess.DEVNULL) as proc:
        if proc.stdout is not None:
            async for _ in proc.stdout:
                lines += 1
        await proc.wait()
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return time.perf_counter() - started, lines


async def measure_tshark(path: Path) -> dict[str, Any]:
    """Reference times: plain summary pass, and a two-pass filtered field dump."""
    summary_s, _ = await _run_timed("tshark", "-r", str(path))
    filter_s, matched = await _run_timed(
        "tshark",
        "-2",
        "-r",
        str(path),
        "-Y",
        FILTERS[0],
        "-T",
        "fields",
        "-e",
        "frame.number",
        count_lines=True,
    )
    return {
        "summary_s": summary_s,
        "filter": FILTERS[0],
        "filter_s": filter_s,
        "filter_matched": matched,
        "export": await tshark_export(path),
    }
