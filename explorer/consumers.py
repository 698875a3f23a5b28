"""Websocket consumers: load progress and the first rows of a capture while sharkd loads it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any, Literal, TypedDict

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from .access import capture_for_scope
from .engine import packets, preview
from .engine.errors import EngineError
from .engine.remote import RemoteCaptureSessions
from .engine.sessions import CaptureSessions, engine
from .models import Capture

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.2
# How long a capture may take to answer that it is loaded before its first rows are read
# with tshark meanwhile.
PREVIEW_AFTER = 0.5


# What the page is told while a capture loads (static/explorer/capture.js reads them).


class LoadProgress(TypedDict):
    type: Literal["load.progress"]
    bytes_read: int
    file_size: int


class LoadRows(TypedDict):
    """The first rows, read by tshark while sharkd loads the file."""

    type: Literal["load.rows"]
    total: int
    packets: list[dict[str, Any]]
    provisional: bool


class LoadDone(TypedDict):
    type: Literal["load.done"]
    total: int


class LoadFailed(TypedDict):
    type: Literal["load.failed"]
    error: str


class CaptureLoadConsumer(AsyncJsonWebsocketConsumer):
    """Push `load.progress`, `load.rows`, then `load.done` (or `load.failed`) for one capture."""

    capture: Capture
    sessions: CaptureSessions | RemoteCaptureSessions
    task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        try:
            capture_id = int(self.scope["url_route"]["kwargs"]["capture_id"])
            self.capture = await capture_for_scope(self.scope, capture_id)
        except Http404:
            await self.close(code=4404)
            return
        await self.accept()
        self.sessions = engine().sessions(self.capture.path)
        self.sessions.viewer_joined()
        self.task = asyncio.create_task(self.follow_load())

    async def disconnect(self, code: int) -> None:
        if self.task is not None:
            self.task.cancel()
            self.sessions.viewer_left()

    async def follow_load(self) -> None:
        path = self.capture.path
        loaded = asyncio.create_task(self.sessions.wait_loaded(self.progress))
        rows_task: asyncio.Task[list[packets.PacketRow]] | None = None
        try:
            # A capture someone has open answers at once: no tshark for its first rows then.
            # A team opening it together started one tshark per tab, and their start-up
            # held the server's cores for seconds.
            await asyncio.wait({loaded}, timeout=PREVIEW_AFTER)
            if not loaded.done():
                rows_task = asyncio.create_task(preview.first_rows(path))
                done, _ = await asyncio.wait({loaded, rows_task}, return_when=asyncio.FIRST_COMPLETED)
            if rows_task is not None and rows_task in done and not loaded.done():
                rows = [asdict(row) for row in rows_task.result()]
                await self.send_json(
                    LoadRows(type="load.rows", total=self.capture.packets, packets=rows, provisional=True)
                )
            await loaded
            total = await packets.count(path)
            await self.send_json(LoadDone(type="load.done", total=total))
        except EngineError as error:
            await self.send_json(LoadFailed(type="load.failed", error=error.message))
        finally:
            if rows_task is not None:
                rows_task.cancel()

    _last_progress = 0.0

    async def progress(self, bytes_read: int) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        size = self.capture.size
        await self.send_json(
            LoadProgress(type="load.progress", bytes_read=min(bytes_read, size), file_size=size)
        )
