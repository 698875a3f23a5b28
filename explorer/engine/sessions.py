"""sharkd sessions per capture: shared by all viewers, started on use, evicted when idle.

A sharkd session answers one request at a time, and a new display filter makes it re-dissect
every frame (seconds on a large capture). So that such a request does not freeze paging and
packet details for everyone else, a capture watched by several viewers at once keeps a second
session loaded, and fast requests go to whichever session is not re-dissecting. A capture with
one viewer costs one session (that viewer is waiting for their own filter anyway); if fast work
still finds every session busy with slow work, another session is started and the request
goes to whichever is free first. Extra sessions are evicted soon after they fall idle.

Across all captures at most ENGINE_MAX_PROCESSES sessions hold a capture (the one that only
checks filter syntax is not counted), and together they stay within ENGINE_MEMORY_BUDGET_MB of
resident memory, a capture still loading counting as its estimate. A capture that needs a
session when there is no room gets the least recently used idle sessions' place; when none is
idle, its request waits up to ENGINE_BUSY_WAIT_SECONDS and is then told that the engine is
busy. Extra sessions are only started where there is room.

A request that crashes its session is retried once on a fresh one; a request that gets no
answer within ENGINE_REQUEST_TIMEOUT is not (it would most likely hang again): its session is
killed, the request fails with a clear error, and the next request starts a fresh session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings

from .errors import EngineCrashed, EngineError
from .sharkd import EngineOutOfMemory, EngineTimeout, SharkdProcess

log = logging.getLogger(__name__)

# Pages of packet rows remembered per capture (a page of 200 rows is about 60 KB).
PAGES_KEPT = 256

# What a sharkd session holds, to estimate a capture before it has loaded: measured on this
# project's million-packet benchmark capture (651 MB of file, 1.5 GB resident once loaded;
# 150 MB for a small one).
SESSION_BASE_MB = 150
SESSION_MB_PER_FILE_MB = 2.2

# A whole-capture interval so that `intervals` answers with one total; sharkd caches the
# filter's result for `frames` too, so counting and paging dissect only once.
COUNT_INTERVAL_MS = 2_000_000_000

# Processes being closed in the background (the loop keeps only weak references to tasks).
_closing: set[asyncio.Task[None]] = set()


class EngineBusy(EngineCrashed):
    """Every session the engine may run is working, and none fell idle in time."""


class SessionState(NamedTuple):
    """How many sessions have a capture loaded, and how many are loading or alive."""

    loaded: int
    running: int


class PageMemory:
    """Answers remembered per capture: pages of rows, and packet counts per display filter."""

    def __init__(self) -> None:
        self.counts: dict[str | None, int] = {}
        self.pages: OrderedDict[Hashable, Any] = OrderedDict()

    def remember_page(self, key: Hashable, rows: Any) -> None:
        """Keep a page of rows, forgetting the least recently used beyond PAGES_KEPT."""
        self.pages[key] = rows
        self.pages.move_to_end(key)
        while len(self.pages) > PAGES_KEPT:
            self.pages.popitem(last=False)


# Whether a capture may start one more session: given the asking capture's sessions and
# whether it has none that could serve it (then an idle session of another capture is closed
# to make room). Without one, there is no limit across captures.
RoomCheck = Callable[["CaptureSessions", bool], bool]


class CaptureSessions(PageMemory):
    """The sharkd processes serving one capture file."""

    def __init__(self, path: Path | None, max_processes: int, room: RoomCheck | None = None) -> None:
        super().__init__()
        self.path = path
        self.max_processes = max_processes
        self.room = room
        self.processes: list[SharkdProcess] = []
        self.changed = asyncio.Condition()
        self.load_error: EngineError | None = None
        self.viewers = 0
        self.counting: dict[str | None, asyncio.Future[int]] = {}
        # Requests choosing a session or waiting for one to load: while there are any, the
        # engine keeps this object, even with no process yet (see Engine.evict_idle).
        self.waiting = 0

    def warm(self) -> None:
        """Start a session in the background if none runs and there is room for it."""
        if not self.processes and self._has_room(needed=False):
            self._spawn()

    def viewer_joined(self) -> None:
        """Count a viewer; with more than one, keep a standby session loaded for fast work.

        Nobody waits for a standby: it loads at a lower priority than the sessions serving.
        """
        self.viewers += 1
        while self.viewers > 1 and len(self.processes) < min(2, self.max_processes):
            if not self._has_room(needed=False):
                break
            self._spawn(background=bool(self.processes))

    def _has_room(self, needed: bool) -> bool:
        return self.room is None or self.room(self, needed)

    def running(self) -> int:
        """Return how many processes are loading or alive."""
        return sum(p.alive or not p.loaded.is_set() for p in self.processes)

    def idle(self) -> list[SharkdProcess]:
        """Return the loaded processes that have no request outstanding or about to be sent."""
        return [
            p for p in self.processes if p.loaded.is_set() and p.alive and not p.pending and not p.reserved
        ]

    def close_soon(self, process: SharkdProcess) -> None:
        """Stop using the process and close it in the background."""
        self._forget(process)
        process.kill()
        task = asyncio.create_task(process.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    def viewer_left(self) -> None:
        self.viewers = max(0, self.viewers - 1)

    def memory_mb(self) -> float:
        """Return the resident memory of these sessions; a loading one counts as its estimate."""
        expected = expected_mb(self.path)
        total = 0.0
        for process in self.processes:
            resident = resident_mb(process.pid)
            total += resident if process.loaded.is_set() else max(resident, expected)
        return total

    def state(self) -> SessionState:
        loaded = sum(p.loaded.is_set() and p.alive for p in self.processes)
        return SessionState(loaded, len(self.processes))

    def _spawn(self, background: bool = False) -> SharkdProcess:
        process = SharkdProcess(self.path, background)
        self.processes.append(process)

        async def start() -> None:
            try:
                await process.start()
            except EngineError as error:
                log.warning("sharkd failed to load %s: %s", self.path, error)
                self.load_error = error
            finally:
                if not process.alive:
                    self._forget(process)
                async with self.changed:
                    self.changed.notify_all()

        asyncio.create_task(start())
        return process

    def _forget(self, process: SharkdProcess) -> None:
        if process in self.processes:
            self.processes.remove(process)

    def _forget_dead(self) -> None:
        for process in list(self.processes):
            if process.loaded.is_set() and not process.alive:
                self._forget(process)

    def _start_needed(self) -> bool:
        """Start a session for a capture that has none, if the limit across captures allows."""
        if self._has_room(needed=True):
            self._spawn()
            return True
        return False

    def _busy(self) -> EngineBusy:
        return EngineBusy(
            f"the engine is busy: all {settings.ENGINE_MAX_PROCESSES} of its sessions are working "
            "on other captures; try again in a moment"
        )

    async def _acquire(self, filter_text: str | None, slow: bool) -> SharkdProcess:
        """Pick a process for a request, starting one when none can serve soon; the caller unreserves it."""
        process = await self._choose(filter_text, slow)
        process.reserved += 1
        return process

    async def _choose(self, filter_text: str | None, slow: bool) -> SharkdProcess:
        self.waiting += 1
        try:
            return await self._choose_waiting(filter_text, slow)
        finally:
            self.waiting -= 1

    def _standby_loading(self, ready: list[SharkdProcess]) -> bool:
        """Tell whether several viewers share the only loaded session while another one loads."""
        loading = any(not p.loaded.is_set() for p in self.processes)
        return len(ready) == 1 and loading and self.viewers > 1

    async def _choose_waiting(self, filter_text: str | None, slow: bool) -> SharkdProcess:
        deadline = time.monotonic() + settings.ENGINE_BUSY_WAIT_SECONDS
        async with self.changed:
            while True:
                self._forget_dead()
                if self.load_error is not None and not self.processes:
                    # Report a failed load once; the next request tries again.
                    error, self.load_error = self.load_error, None
                    raise error
                if not self.processes and not self._start_needed() and time.monotonic() > deadline:
                    raise self._busy()
                ready = [p for p in self.processes if p.loaded.is_set() and p.alive]
                if filter_text is not None:
                    # Where the filter ran before, its matches are cached: waiting there, even
                    # behind another filter, costs its requester no more than re-dissecting the
                    # whole capture elsewhere would, and keeps the other session free for the
                    # pages and details of everyone else.
                    having = [p for p in ready if filter_text in p.filters_done]
                    if having:
                        return min(having, key=lambda p: (p.slow_pending, p.pending))
                new_filter = filter_text is not None
                # A whole pass on the only loaded session would hold every viewer's pages and
                # details for its length: it waits for the standby instead (a capture a team
                # has just opened, or a standby restarted).
                waits = (slow or new_filter) and self._standby_loading(ready) and time.monotonic() < deadline
                if not waits:
                    chosen = self._ready_for(ready, new_filter)
                    if chosen is not None:
                        return chosen
                # Also wake up now and then: a process that dies on its own notifies nobody.
                try:
                    await asyncio.wait_for(self.changed.wait(), 0.5)
                except TimeoutError:
                    pass

    def _ready_for(self, ready: list[SharkdProcess], new_filter: bool) -> SharkdProcess | None:
        """Return the loaded process to send a request to; None: wait (for one to load)."""
        # Fast work may queue behind fast work, but not behind a re-dissection of the whole capture.
        fast_busy = [p for p in ready if p.slow_pending == 0]
        if new_filter and fast_busy:
            # A filter no session has run takes one for a whole pass: take the one whose cached
            # filters the others' pages need least, even if it is answering a page right now
            # (milliseconds, against the seconds that pass would hold those pages).
            return min(fast_busy, key=lambda p: (len(p.filters_done), p.pending))
        idle = [p for p in ready if p.pending == 0]
        if idle:
            return idle[0]
        if fast_busy:
            return min(fast_busy, key=lambda p: p.pending)
        loading = [p for p in self.processes if not p.loaded.is_set()]
        if not loading and ready and len(self.processes) < self.max_processes:
            if not self._has_room(needed=False):
                return min(ready, key=lambda p: p.slow_pending)
            self._spawn()
        elif not loading and ready:
            return min(ready, key=lambda p: p.slow_pending)
        return None

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        filter_text: str | None = None,
        slow: bool = False,
    ) -> Any:
        """Send a request to a suitable process; on a crash retry once on a fresh one.

        `slow`: the request walks every frame, so fast work should not queue behind it.
        """
        timeout = settings.ENGINE_REQUEST_TIMEOUT
        slow = slow or method in ("tap", "follow", "iograph")
        for attempt in (1, 2):
            process = await self._acquire(filter_text, slow)
            # Slow for this session: a filter it has not run re-dissects every frame, here
            # even if another session has run it.
            whole_pass = slow or (filter_text is not None and filter_text not in process.filters_done)
            try:
                result = await asyncio.wait_for(process.request(method, params, slow=whole_pass), timeout)
            except TimeoutError as error:
                # The session is stuck (a dissector looping, a stopped process): replace it,
                # and do not send the same request to the next one.
                log.warning("sharkd for %s did not answer %s within %d s", self.path, method, timeout)
                self.close_soon(process)
                raise EngineTimeout(
                    f"the engine did not answer within {timeout} s; it was restarted for the next request"
                ) from error
            except EngineCrashed as error:
                process.kill()
                self._forget(process)
                log.warning("sharkd for %s failed on %s (attempt %d): %r", self.path, method, attempt, error)
                if attempt == 2 or isinstance(error, EngineOutOfMemory):
                    raise
                continue
            finally:
                process.reserved -= 1
                async with self.changed:
                    self.changed.notify_all()
            if filter_text is not None:
                process.filters_done.add(filter_text)
            return result
        raise AssertionError("unreachable")

    async def count(self, expression: str | None) -> int:
        """Return how many packets match a (checked) display filter; all of them for None.

        A stored file never changes: a count is computed once, by one request however many
        viewers ask for it at once. `intervals` walks every frame even where sharkd has the
        filter's result cached, so it is slow work.
        """
        if expression in self.counts:
            return self.counts[expression]
        counting = self.counting.get(expression)
        if counting is None:
            counting = self.counting[expression] = asyncio.ensure_future(self._count(expression))
            counting.add_done_callback(lambda _: self.counting.pop(expression, None))
        # A viewer who goes away leaves the count to the others.
        return await asyncio.shield(counting)

    async def _count(self, expression: str | None) -> int:
        if expression is None:
            await self.wait_loaded()
            result = await self.call("status")
        else:
            params = {"interval": COUNT_INTERVAL_MS, "filter": expression}
            result = await self.call("intervals", params, filter_text=expression, slow=True)
        self.counts[expression] = int(result["frames"])
        return self.counts[expression]

    async def wait_loaded(self, progress: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Start a session if none runs and wait until one has loaded the capture."""
        self.waiting += 1
        try:
            await self._wait_loaded(progress)
        finally:
            self.waiting -= 1

    async def _wait_loaded(self, progress: Callable[[int], Awaitable[None]] | None) -> None:
        deadline = time.monotonic() + settings.ENGINE_BUSY_WAIT_SECONDS
        while True:
            self._forget_dead()
            if any(p.loaded.is_set() and p.alive for p in self.processes):
                return
            if not self.processes:
                if self.load_error is not None:
                    # The only process failed to load: report it once; the next request tries again.
                    error, self.load_error = self.load_error, None
                    raise error
                if not self._start_needed():
                    if time.monotonic() > deadline:
                        raise self._busy()
                    await asyncio.sleep(0.2)
                    continue
            if progress is not None:
                await progress(max(p.bytes_read() for p in self.processes))
            await asyncio.sleep(0.1)

    def idle_for(self) -> float:
        if any(p.pending or p.reserved for p in self.processes):
            return 0.0
        if not self.processes:
            return float("inf")
        return time.monotonic() - max(p.last_used for p in self.processes)

    async def evict_idle(self, keep_seconds: float, extra_seconds: float) -> None:
        """Close extra processes idle for extra_seconds, and all idle for keep_seconds."""
        now = time.monotonic()
        for index, process in enumerate(list(self.processes)):
            if process.pending or process.reserved or not process.loaded.is_set():
                continue
            idle = now - process.last_used
            standby = index > 0 and self.viewers > 1
            if idle > keep_seconds or (index > 0 and not standby and idle > extra_seconds):
                self._forget(process)
                await process.close()

    async def close(self) -> None:
        for process in list(self.processes):
            self._forget(process)
            await process.close()


class Engine:
    """All sharkd sessions of this server process, keyed by capture file."""

    def __init__(self) -> None:
        self.captures: dict[Path | None, CaptureSessions] = {}
        # Sessions of a capture kept by a caller across its eviction while another object
        # took its place: their processes still count and are still closed when idle.
        self.detached: set[CaptureSessions] = set()
        self._evictor: asyncio.Task[None] | None = None

    def sessions(self, path: Path | None) -> CaptureSessions:
        if self._evictor is None or self._evictor.done():
            self._evictor = asyncio.create_task(self._evict_forever())
        sessions = self.captures.get(path)
        if sessions is None:
            limit = 1 if path is None else settings.ENGINE_PROCESSES_PER_CAPTURE
            sessions = self.captures[path] = CaptureSessions(path, limit, self._room)
            if path is not None:
                # Whoever opens a capture will type a filter: start the checking session
                # now rather than make the first check wait for sharkd's start-up.
                self.sessions(None).warm()
        return sessions

    def _room(self, asking: CaptureSessions, needed: bool) -> bool:
        """Whether the capture may start a session; if it needs one, close the least recently used idle."""
        if asking.path is None:
            return True
        if self.captures.get(asking.path) is not asking:
            # A caller kept it across the eviction of its capture (a websocket, a loop of
            # requests): what it starts is counted and evicted like any other session.
            if self.captures.setdefault(asking.path, asking) is not asking:
                self.detached.add(asking)
        holding = [s for s in (*self.captures.values(), *self.detached) if s.path is not None]
        while not self._fits(holding, asking):
            if not needed:
                return False
            idle = [(p.last_used, s, p) for s in holding for p in s.idle()]
            if not idle:
                return False
            _, owner, process = min(idle, key=lambda item: item[0])
            log.info(
                "closing the idle session of %s to open %s (%d sessions, budget %d MB)",
                owner.path,
                asking.path,
                settings.ENGINE_MAX_PROCESSES,
                settings.ENGINE_MEMORY_BUDGET_MB,
            )
            owner.close_soon(process)
        return True

    def _fits(self, holding: list[CaptureSessions], asking: CaptureSessions) -> bool:
        """Whether one more session of `asking` stays within the count and the memory budget."""
        limit, budget = settings.ENGINE_MAX_PROCESSES, settings.ENGINE_MEMORY_BUDGET_MB
        if limit > 0 and sum(s.running() for s in holding) >= limit:
            return False
        if budget <= 0:
            return True
        used = sum(s.memory_mb() for s in holding)
        # With nothing else held, a capture larger than the budget still gets its one session
        # (ENGINE_MEMORY_MB bounds it); a second one would only add to it.
        if used == 0:
            return True
        return used + expected_mb(asking.path) <= budget

    async def _evict_forever(self) -> None:
        while True:
            await asyncio.sleep(5)
            await self.evict_idle()

    async def evict_idle(self) -> None:
        """Close idle sessions; forget captures left with none."""
        for path, sessions in list(self.captures.items()):
            if path is None:
                continue  # the filter-checking session holds no capture and stays
            await sessions.evict_idle(settings.ENGINE_IDLE_SECONDS, settings.ENGINE_EXTRA_IDLE_SECONDS)
            # Not while a request waits for room to start a session there: it would start it
            # in an object the engine no longer maps, kept apart in `detached`.
            if not sessions.processes and not sessions.waiting and self.captures.get(path) is sessions:
                del self.captures[path]
        for sessions in list(self.detached):
            await sessions.evict_idle(settings.ENGINE_IDLE_SECONDS, settings.ENGINE_EXTRA_IDLE_SECONDS)
            if not sessions.processes and not sessions.waiting:
                self.detached.discard(sessions)

    async def states(self, paths: list[Path]) -> list[SessionState]:
        """Return the state of each capture's sessions (none for a capture not opened)."""
        return [
            self.captures[path].state() if path in self.captures else SessionState(0, 0) for path in paths
        ]

    async def forget(self, path: Path) -> None:
        """Close the sessions of a capture that is being deleted."""
        sessions = self.captures.pop(path, None)
        if sessions is not None:
            await sessions.close()

    async def close(self) -> None:
        for path in list(self.captures):
            await self.captures.pop(path).close()
        while self.detached:
            await self.detached.pop().close()


def expected_mb(path: Path | None) -> float:
    """Estimate what a session holds once it has loaded the capture."""
    try:
        size = path.stat().st_size if path is not None else 0
    except OSError:
        size = 0
    return SESSION_BASE_MB + SESSION_MB_PER_FILE_MB * size / 2**20


def resident_mb(pid: int | None) -> float:
    """Return a process's resident memory (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * _PAGE_SIZE / 2**20


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

if TYPE_CHECKING:
    from .remote import RemoteEngine

_engines: dict[asyncio.AbstractEventLoop, Engine] = {}
_remote_engines: dict[asyncio.AbstractEventLoop, RemoteEngine] = {}


def _of_loop(engines: dict[asyncio.AbstractEventLoop, Any], make: Callable[[], Any]) -> Any:
    loop = asyncio.get_running_loop()
    current = engines.get(loop)
    if current is None:
        for old_loop in [old for old in engines if old.is_closed()]:
            del engines[old_loop]
        current = engines[loop] = make()
    return current


def local_engine() -> Engine:
    """Return the sharkd sessions of this process and event loop."""
    engine: Engine = _of_loop(_engines, Engine)
    return engine


def engine() -> Engine | RemoteEngine:
    """Return the engine of the running event loop: this process's own, or the engine service."""
    if not settings.ENGINE_URL:
        return local_engine()
    from .remote import RemoteEngine

    remote: RemoteEngine = _of_loop(_remote_engines, lambda: RemoteEngine(settings.ENGINE_URL))
    return remote
