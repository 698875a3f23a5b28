"""The threads that run a request's sync code: kept from one request to the next, never shared."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from asgiref.sync import sync_to_async

from explorer.middleware import RequestThreads


def app_recording_threads(threads: list[int], left: list[asyncio.Future[Any]] | None = None) -> Any:
    """Return an ASGI app that notes the thread its sync code runs on (and may leave it busy)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        threads.append(await sync_to_async(threading.get_ident)())
        if left is not None:
            # Sync work still running when the request ends, as when a client goes away mid-query.
            left.append(asyncio.ensure_future(sync_to_async(threading.Event().wait)(0.5)))
            await asyncio.sleep(0.05)  # the work has started on the request's thread

    return app


async def request(app: Any) -> None:
    await app({"type": "http"}, None, None)


async def test_it_runs_one_request_after_another_on_the_same_thread() -> None:
    threads: list[int] = []
    app = RequestThreads(app_recording_threads(threads))
    await request(app)
    await request(app)
    assert threads[0] == threads[1]
    assert threads[0] != threading.get_ident()


async def test_it_gives_requests_in_flight_together_threads_of_their_own() -> None:
    threads: list[int] = []
    app = RequestThreads(app_recording_threads(threads))
    await asyncio.gather(*(request(app) for _ in range(5)))
    assert len(set(threads)) == 5
    assert len(app.kept) == 5


async def test_it_does_not_keep_a_thread_still_busy_when_its_request_ends() -> None:
    threads: list[int] = []
    left: list[asyncio.Future[Any]] = []
    app = RequestThreads(app_recording_threads(threads, left))
    await request(app)
    assert app.kept == []
    await asyncio.gather(*left)
