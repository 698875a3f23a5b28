"""The engine service: every sharkd session of a deployment in one process, reached over a socket.

With ENGINE_URL set, server processes start no sharkd of their own: they send each engine
request to `manage.py run_engine`, which keeps the sessions (sessions.Engine). A capture is
then loaded once however many server processes serve its viewers, every viewer gets the
answers of the same sessions, and ENGINE_MAX_PROCESSES and ENGINE_MEMORY_BUDGET_MB bound the whole
deployment rather than each process.

Viewer counts (which keep a standby session loaded) are kept per connection, so a server
process that goes away takes its viewers with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from . import wire
from .errors import EngineError
from .sessions import local_engine

log = logging.getLogger(__name__)


class Connection:
    """One client of the service: a server process, or a worker."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.viewers: Counter[Path | None] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        self.sending = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self.sending:
            self.writer.write(wire.encode(message))
            await self.writer.drain()

    async def serve(self) -> None:
        try:
            if not await self._welcome():
                return
            while line := await self.reader.readline():
                task = asyncio.create_task(self._answer(wire.decode(line)))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as error:
            log.info("engine client left: %r", error)
        finally:
            for task in list(self.tasks):
                task.cancel()
            engine = local_engine()
            for path, count in self.viewers.items():
                for _ in range(count):
                    engine.sessions(path).viewer_left()
            self.writer.close()

    async def _welcome(self) -> bool:
        hello = wire.decode(await self.reader.readline() or b"{}")
        if not hmac.compare_digest(str(hello.get("hello", "")), wire.service_key()):
            log.warning("refused an engine client without this deployment's key")
            await self.send({"id": 0, "error": {"kind": "EngineError", "message": "wrong engine key"}})
            return False
        await self.send({"id": 0, "result": "welcome"})
        return True

    async def _answer(self, message: dict[str, Any]) -> None:
        number = message.get("id")
        try:
            result = await self._do(number, message)
        except EngineError as error:
            await self.send({"id": number, "error": wire.error_message(error)})
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            # A fault of the service itself: the client gets a plain error, the log the details.
            log.exception("engine service failed on %s", message.get("op"))
            failure = EngineError("the engine service failed on this request")
            await self.send({"id": number, "error": wire.error_message(failure)})
        else:
            await self.send({"id": number, "result": result})

    async def _do(self, number: Any, message: dict[str, Any]) -> Any:
        engine = local_engine()
        op = message.get("op")
        if op == "states":
            paths = [wire.path_in(text) for text in message.get("paths", [])]
            return [list(state) for state in await engine.states([p for p in paths if p is not None])]
        path = wire.path_in(message.get("path"))
        if op == "call":
            filter_text = message.get("filter")
            return await engine.sessions(path).call(
                str(message["method"]), message.get("params"), filter_text=filter_text
            )
        if op == "count":
            expression = message.get("filter")
            if expression is not None and not isinstance(expression, str):
                raise EngineError("a count's filter is a string")
            return await engine.sessions(path).count(expression)
        if op == "loaded":

            async def progress(bytes_read: int) -> None:
                await self.send({"id": number, "progress": bytes_read})

            await engine.sessions(path).wait_loaded(progress if message.get("progress") else None)
            return None
        if op == "viewers":
            sessions = engine.sessions(path)
            delta = int(message.get("delta", 0))
            for _ in range(max(0, delta)):
                sessions.viewer_joined()
            for _ in range(min(self.viewers[path], max(0, -delta))):
                sessions.viewer_left()
            self.viewers[path] = max(0, self.viewers[path] + delta)
            return None
        if op == "forget":
            if path is not None:
                await engine.forget(path)
            return None
        raise EngineError(f"the engine service has no operation {op!r}")


async def serve(url: str) -> None:
    """Serve the engine at ENGINE_URL until SIGTERM or SIGINT; then close every session."""
    where = wire.address(url)
    if isinstance(where, str):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where)
        server = await asyncio.start_unix_server(_client, where, limit=wire.LINE_LIMIT)
    else:
        server = await asyncio.start_server(_client, *where, limit=wire.LINE_LIMIT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    log.info("engine service listening on %s", url)
    async with server:
        await stop.wait()
    await local_engine().close()


async def _client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await Connection(reader, writer).serve()
