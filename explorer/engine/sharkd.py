"""One sharkd process speaking JSON-RPC on stdin/stdout: the only code that talks to sharkd."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from . import commands, jsoncodec
from .errors import EngineCrashed, EngineError, RequestTooLong
from .keylog import keylog_for

log = logging.getLogger(__name__)

# sharkd 4.0 reads a request line into a 2 KiB buffer; a longer line is split and
# answered with "Invalid JSON" errors, so such requests are refused before sending.
MAX_REQUEST_BYTES = 2000

# Responses carrying a whole page of rows or a large tree can be long lines.
STREAM_LIMIT = 256 * 1024 * 1024

# The start of an answer line, up to its request id.
ANSWER_ID = re.compile(rb'\{"jsonrpc":"2\.0","id":(\d+),')

# What sharkd, GLib or the dynamic loader print when an allocation fails under the
# ENGINE_MEMORY_MB limit. sharkd then aborts, or goes on without some of its plugins, which
# would dissect differently: such a process is killed at once.
OUT_OF_MEMORY = re.compile(
    r"failed to allocate|failed to map segment|Cannot allocate memory|out of memory", re.I
)


# How much lower than the server's own the priority of a session loading in the background
# (a standby) is: loading a large capture keeps a core busy for tens of seconds, and while the
# cores are short the pages and details of everyone already viewing go first.
BACKGROUND_NICENESS = 10


class EngineOutOfMemory(EngineCrashed):
    """The engine needed more memory than ENGINE_MEMORY_MB allows it."""


class EngineTimeout(EngineCrashed):
    """The engine did not answer within ENGINE_REQUEST_TIMEOUT; its process was killed."""


def _ended(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


# Cleared when the system refuses to raise a session's priority back (see _raise_niceness_back).
_may_raise_priority = True


class SharkdProcess:
    """A sharkd session: one process, one capture, requests answered in order."""

    def __init__(self, capture_path: Path | None, background: bool = False) -> None:
        self.capture_path = capture_path
        # Loaded at a lower priority (BACKGROUND_NICENESS), raised back once loaded.
        self.background = background
        self.process: asyncio.subprocess.Process | None = None
        self.loaded = asyncio.Event()
        self.load_error: EngineError | None = None
        self.filters_done: set[str] = set()
        self.status: dict[str, Any] = {}
        self.killed = False
        self.out_of_memory = False
        self.pending = 0
        # Set by whoever picked this process for a request it has not sent yet, so that
        # the process is not closed as idle in between.
        self.reserved = 0
        self.slow_pending = 0
        self.last_used = time.monotonic()
        self._next_id = 1
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stderr_reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and not self.killed

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> None:
        """Start the process and, when it has a capture, load it (within ENGINE_REQUEST_TIMEOUT)."""
        self.process = await asyncio.create_subprocess_exec(
            *commands.sharkd(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group, so that killing it takes any child along.
            start_new_session=True,
            limit=STREAM_LIMIT,
        )
        self._stderr_reader = asyncio.create_task(self._read_stderr())
        self._reader = asyncio.create_task(self._read_responses())
        if self.capture_path is None:
            self.loaded.set()
            return
        own_niceness = os.getpriority(os.PRIO_PROCESS, 0)
        if self.background:
            self._set_niceness(own_niceness + BACKGROUND_NICENESS)
        timeout = settings.ENGINE_REQUEST_TIMEOUT
        try:
            await asyncio.wait_for(self._load(self.capture_path), timeout)
            if self.background:
                self._raise_niceness_back(own_niceness)
        except TimeoutError as error:
            self.load_error = EngineTimeout(
                f"the engine did not finish loading the capture within {timeout} s"
            )
            self.kill()
            raise self.load_error from error
        except EngineCrashed:
            # The process died before it loaded the capture; its last words may tell why.
            self.kill()
            await self._settle()
            self.load_error = self._death()
            raise self.load_error from None
        except EngineError as error:
            self.load_error = error
            self.kill()
            raise
        finally:
            self.loaded.set()

    def _set_niceness(self, niceness: int) -> None:
        assert self.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, self.pid, niceness)

    def _raise_niceness_back(self, niceness: int) -> None:
        global _may_raise_priority
        if not _may_raise_priority:
            return
        try:
            self._set_niceness(niceness)
        except PermissionError:
            # Raising a priority takes CAP_SYS_NICE: without it a standby keeps the lower one,
            # which still serves while the cores have time to spare.
            log.info("sessions loaded in the background keep a lower priority: no CAP_SYS_NICE")
            _may_raise_priority = False

    async def _load(self, path: Path) -> None:
        keylog = keylog_for(path)
        if keylog is not None:
            await self.request("setconf", {"name": "tls.keylog_file", "value": str(keylog)})
        # sharkd 4.0 never answers `load` for a file cut short in the middle of a packet,
        # though it has loaded what it could; the `status` queued behind it always answers.
        load_id, load = self._send("load", {"file": str(path)})
        try:
            self.status = await self.request("status", slow=True)
            if load.done():
                load.result()
        finally:
            self._waiting.pop(load_id, None)

    def bytes_read(self) -> int:
        """Return how far sharkd has read into the capture file: load progress."""
        if not self.alive or self.pid is None or self.capture_path is None:
            return 0
        # The position of the descriptor open on the capture; the process also reads
        # name-resolution files at start-up, so its total read count would overstate.
        target = str(self.capture_path.resolve())
        try:
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                if os.readlink(f"/proc/{self.pid}/fd/{fd}") == target:
                    with open(f"/proc/{self.pid}/fdinfo/{fd}") as info:
                        for line in info:
                            if line.startswith("pos:"):
                                return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _send(self, method: str, params: dict[str, Any] | None) -> tuple[int, asyncio.Future[Any]]:
        """Write one request line now (so requests reach sharkd in call order); return its future."""
        if not self.alive or self.process is None or self.process.stdin is None:
            raise self._death()
        request_id = self._next_id
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params:
            message["params"] = params
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_REQUEST_BYTES:
            raise RequestTooLong(
                f"request too long for the engine ({len(line)} bytes, limit {MAX_REQUEST_BYTES})"
            )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self.process.stdin.write(line)
        return request_id, future

    async def request(self, method: str, params: dict[str, Any] | None = None, *, slow: bool = False) -> Any:
        """Send one request and return its result, or raise EngineError with sharkd's message."""
        request_id, future = self._send(method, params)
        return await self._answer(request_id, future, slow)

    async def _answer(self, request_id: int, future: asyncio.Future[Any], slow: bool) -> Any:
        assert self.process is not None and self.process.stdin is not None
        self.pending += 1
        self.slow_pending += slow
        self.last_used = time.monotonic()
        try:
            await self.process.stdin.drain()
            return await future
        except (BrokenPipeError, ConnectionResetError) as error:
            raise EngineCrashed("the dissection engine stopped unexpectedly") from error
        finally:
            self._waiting.pop(request_id, None)
            self.pending -= 1
            self.slow_pending -= slow
            self.last_used = time.monotonic()

    async def _read_responses(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        try:
            while True:
                line = await stdout.readline()
                if not line:
                    break
                try:
                    # sharkd copies bytes of damaged packets into its strings as they are,
                    # which need not be UTF-8: the codec reads those as U+FFFD.
                    response = jsoncodec.loads(line)
                except ValueError:
                    # A tap that fails can print outside the JSON framing; skip such lines,
                    # but do not leave waiting a request whose answer this line was.
                    log.warning("sharkd printed a line that is not JSON: %.200r", line)
                    answered = ANSWER_ID.match(line)
                    future = self._waiting.get(int(answered.group(1))) if answered else None
                    if future is not None and not future.done():
                        future.set_exception(EngineError("the engine sent an answer that cannot be read"))
                    continue
                if not isinstance(response, dict):
                    continue
                future = self._waiting.get(response.get("id", 0))
                if future is None or future.done():
                    continue
                if "error" in response:
                    future.set_exception(EngineError(response["error"].get("message", "error")))
                else:
                    future.set_result(response.get("result"))
        except (asyncio.LimitOverrunError, ValueError) as error:
            log.error("sharkd response too large: %s", error)
        finally:
            await self._died()

    async def _read_stderr(self) -> None:
        """Read sharkd's chatter, noting whether it ran out of memory; the pipe must not fill up."""
        assert self.process is not None and self.process.stderr is not None
        stderr = self.process.stderr
        try:
            while line := await stderr.readline():
                text = line.decode(errors="replace").strip()
                if OUT_OF_MEMORY.search(text):
                    log.warning("sharkd for %s ran out of memory: %s", self.capture_path, text)
                    self.out_of_memory = True
                    self.kill()
        except (asyncio.LimitOverrunError, ValueError):
            pass

    async def _settle(self) -> None:
        """Wait briefly for a dying process to end and for its last lines, which may tell why."""
        if self.process is not None:
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                pass
        if self._stderr_reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._stderr_reader), 1)
            except TimeoutError:
                pass

    def _death(self) -> EngineCrashed:
        """Return the error that tells why the process is gone."""
        if self.out_of_memory:
            limit = settings.ENGINE_MEMORY_MB
            allowed = f": it may use {limit} MB per capture" if limit > 0 else ""
            return EngineOutOfMemory(f"the engine ran out of memory{allowed}")
        code = self.process.returncode if self.process else None
        return EngineCrashed(f"the dissection engine stopped unexpectedly ({_ended(code)})")

    async def _died(self) -> None:
        self.kill()
        await self._settle()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(self._death())

    def kill(self) -> None:
        """Kill the process group; safe to call more than once."""
        self.killed = True
        if self.process is None or self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def close(self) -> None:
        """Stop the process and wait for its reader to finish."""
        self.kill()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (TimeoutError, asyncio.CancelledError):
                pass


ProgressCallback = Callable[[int], None]
