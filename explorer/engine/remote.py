"""The engine as seen from a server process when the sessions live in the engine service.

RemoteEngine and RemoteCaptureSessions answer what sessions.Engine and CaptureSessions
answer, each request going over one connection per event loop to `manage.py run_engine`
(explorer/engine/service.py). Pages and counts are remembered here too: a stored capture never
changes, so an answer remembered by one process is the answer of the one session.

If the service is down or restarts, the requests waiting on it fail with EngineCrashed (a
clear message, and a 503 for the API); the next request connects again and tells the
service this process's viewers anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import wire
from .errors import EngineCrashed, EngineError
from .sessions import PageMemory, SessionState

log = logging.getLogger(__name__)

# Captures whose remembered pages and counts this process keeps.
CAPTURES_REMEMBERED = 64

Progress = Callable[[int], Awaitable[None]]


class ServiceConnection:
    """One connection to the engine service, shared by every request of this event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.writer: asyncio.StreamWriter | None = None
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.progress: dict[int, Progress] = {}
        self.numbers = itertools.count(1)
        self.connecting = asyncio.Lock()
        self.viewers: Counter[Path | None] = Counter()

    def _unreachable(self, reason: object) -> EngineCrashed:
        # The service's address is the deployment's business, not the viewer's.
        log.warning("engine service at %s not reachable: %s", self.url, reason)
        return EngineCrashed("the engine service is not reachable; try again in a moment")

    async def _connect(self) -> asyncio.StreamWriter:
        async with self.connecting:
            if self.writer is not None and not self.writer.is_closing():
                return self.writer
            where = wire.address(self.url)
            try:
                if isinstance(where, str):
                    reader, writer = await asyncio.open_unix_connection(where, limit=wire.LINE_LIMIT)
                else:
                    reader, writer = await asyncio.open_connection(*where, limit=wire.LINE_LIMIT)
                writer.write(wire.encode({"hello": wire.service_key()}))
                welcome = wire.decode(await reader.readline() or b"{}")
            except (OSError, ValueError) as error:
                raise self._unreachable(error) from error
            if "error" in welcome:
                writer.close()
                raise wire.error_from(welcome["error"])
            if welcome.get("result") != "welcome":
                writer.close()
                raise self._unreachable("it did not answer")
            self.writer = writer
            asyncio.create_task(self._read(reader, writer))
            # A new connection (the first, or after the service restarted) counts this
            # process's viewers again.
            for path, count in self.viewers.items():
                if count:
                    self._send_soon({"op": "viewers", "path": wire.path_out(path), "delta": count})
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reason: object = "the connection closed"
        try:
            while line := await reader.readline():
                message = wire.decode(line)
                number = message.get("id")
                if "progress" in message:
                    callback = self.progress.get(number)
                    if callback is not None:
                        await callback(int(message["progress"]))
                    continue
                future = self.waiting.pop(number, None)
                if future is None or future.done():
                    continue
                if "error" in message:
                    future.set_exception(wire.error_from(message["error"]))
                else:
                    future.set_result(message.get("result"))
        except (OSError, ValueError) as error:
            reason = error
        finally:
            if self.writer is writer:
                self.writer = None
            writer.close()
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(self._unreachable(reason))
            self.waiting.clear()
            self.progress.clear()

    async def request(self, op: str, on_progress: Progress | None = None, **fields: Any) -> Any:
        writer = await self._connect()
        number = next(self.numbers)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[number] = future
        if on_progress is not None:
            self.progress[number] = on_progress
        try:
            writer.write(wire.encode({"id": number, "op": op, **fields}))
            await writer.drain()
            return await future
        except OSError as error:
            raise self._unreachable(error) from error
        finally:
            self.waiting.pop(number, None)
            self.progress.pop(number, None)

    def _send_soon(self, message: dict[str, Any]) -> None:
        task = asyncio.create_task(self._send_quietly(message))
        _sending.add(task)
        task.add_done_callback(_sending.discard)

    async def _send_quietly(self, message: dict[str, Any]) -> None:
        # Viewer counts are a hint for keeping a standby session: a lost one costs no answer.
        with contextlib.suppress(EngineError):
            await self.request(**message)

    def viewer(self, path: Path | None, delta: int) -> None:
        self.viewers[path] = max(0, self.viewers[path] + delta)
        self._send_soon({"op": "viewers", "path": wire.path_out(path), "delta": delta})


# Fire-and-forget messages being sent (the loop keeps only weak references to tasks).
_sending: set[asyncio.Task[None]] = set()


class RemoteCaptureSessions(PageMemory):
    """The engine service's sessions of one capture."""

    def __init__(self, service: ServiceConnection, path: Path | None) -> None:
        super().__init__()
        self.service = service
        self.path = path

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, filter_text: str | None = None
    ) -> Any:
        return await self.service.request(
            "call", path=wire.path_out(self.path), method=method, params=params, filter=filter_text
        )

    async def count(self, expression: str | None) -> int:
        if expression not in self.counts:
            answer = await self.service.request("count", path=wire.path_out(self.path), filter=expression)
            self.counts[expression] = int(answer)
        return self.counts[expression]

    async def wait_loaded(self, progress: Progress | None = None) -> None:
        await self.service.request(
            "loaded", on_progress=progress, path=wire.path_out(self.path), progress=progress is not None
        )

    def viewer_joined(self) -> None:
        self.service.viewer(self.path, 1)

    def viewer_left(self) -> None:
        self.service.viewer(self.path, -1)


class RemoteEngine:
    """The engine service, as sessions.Engine is the engine of this process."""

    def __init__(self, url: str) -> None:
        self.service = ServiceConnection(url)
        self.captures: OrderedDict[Path | None, RemoteCaptureSessions] = OrderedDict()

    def sessions(self, path: Path | None) -> RemoteCaptureSessions:
        sessions = self.captures.get(path)
        if sessions is None:
            sessions = self.captures[path] = RemoteCaptureSessions(self.service, path)
        self.captures.move_to_end(path)
        while len(self.captures) > CAPTURES_REMEMBERED:
            self.captures.popitem(last=False)
        return sessions

    async def states(self, paths: list[Path]) -> list[SessionState]:
        answer = await self.service.request("states", paths=[str(path) for path in paths])
        return [SessionState(*state) for state in answer]

    async def forget(self, path: Path) -> None:
        self.captures.pop(path, None)
        await self.service.request("forget", path=str(path))

    async def close(self) -> None:
        writer = self.service.writer
        if writer is not None:
            writer.close()
