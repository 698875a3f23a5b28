"""The server half: run the real app under daphne and measure it over HTTP and websocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench.errors import BenchError, ServerUnavailable
from bench.operations import server_operations
from bench.procs import spawned, tree_rss_kib
from bench.sharkd import FILTERS, PAGE, raw_operations_loaded
from bench.timing import median_of, page_offsets, spread, timed

READY_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 900.0
SAMPLE_EVERY_S = 0.1
# Statuses meaning "still loading, ask again"; anything else that is not 200 is an error.
RETRY_STATUSES = {202, 409, 423, 425, 429, 503, 504}
# What a half-built server can throw at us; reported as one clear line, not a traceback.
CLIENT_ERRORS = (httpx.HTTPError, websockets.WebSocketException, OSError, ValueError, KeyError, TypeError)


class MemorySampler:
    """Samples the RSS of a process tree in the background and keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    def now_mb(self) -> float:
        rss = tree_rss_kib(self.pid)
        self.peak_kib = max(self.peak_kib, rss)
        return rss / 1024

    async def _run(self) -> None:
        while True:
            self.now_mb()
            await asyncio.sleep(SAMPLE_EVERY_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _expect_ok(resp: httpx.Response, ok: tuple[int, ...] = (200,)) -> Any:
    """Decoded JSON of resp, or ServerUnavailable naming the request and the status."""
    if resp.status_code not in ok:
        raise ServerUnavailable(
            f"{resp.request.method} {resp.request.url} -> {resp.status_code}: {resp.text[:300]}"
        )
    return resp.json()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _check_app(repo: Path) -> None:
    for needed in ("manage.py", "explorer_site/asgi.py", ".venv/bin/daphne"):
        if not (repo / needed).exists():
            raise ServerUnavailable(f"server not ready: {repo / needed} does not exist")


def _server_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",  # tmp is absolute: four slashes in all
        CAPTURES_DIR=str(tmp / "captures"),
        MAX_UPLOAD_MB="4096",
        PYTHONUNBUFFERED="1",
    )
    return env


async def _migrate(repo: Path, env: dict[str, str]) -> None:
    python = str(repo / ".venv/bin/python")
    async with spawned(
        python,
        "manage.py",
        "migrate",
        "--noinput",
        cwd=repo,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    ) as proc:
        output, _ = await proc.communicate()
    if proc.returncode != 0:
        lines = output.decode(errors="replace").strip().splitlines() or ["(no output)"]
        tail = "\n".join(lines[-15:])
        # The last line is usually the exception: put it first, where the summary shows it.
        raise ServerUnavailable(f"manage.py migrate failed ({proc.returncode}): {lines[-1]}\n{tail}")


async def _create_user(repo: Path, env: dict[str, str]) -> str:
    """Create the benchmark's user; return an API token for it (pages and API need one)."""
    python = str(repo / ".venv/bin/python")
    code = "from django.contrib.auth.models import User; User.objects.create_user('bench')"
    for args in (("shell", "-c", code), ("create_api_token", "bench")):
        async with spawned(
            python,
            "manage.py",
            *args,
            cwd=repo,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        ) as proc:
            output, errors = await proc.communicate()
        if proc.returncode != 0:
            raise ServerUnavailable(f"manage.py {args[0]} failed: {errors.decode(errors='replace')[-500:]}")
    return output.decode().strip()


async def _wait_ready(client: httpx.AsyncClient, proc: asyncio.subprocess.Process) -> None:
    """Wait until daphne answers any HTTP request."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise ServerUnavailable(f"daphne exited with {proc.returncode} during start-up")
        with contextlib.suppress(httpx.TransportError):
            await client.get("/", timeout=2.0)
            return
        await asyncio.sleep(0.2)
    raise ServerUnavailable(f"daphne did not answer within {READY_TIMEOUT_S:.0f} s")


async def _upload(client: httpx.AsyncClient, capture: Path) -> int:
    with capture.open("rb") as fh:
        resp = await client.post(
            "/api/captures/", files={"file": (capture.name, fh, "application/vnd.tcpdump.pcap")}
        )
    return int(_expect_ok(resp, (200, 201))["id"])


async def _get_page(
    client: httpx.AsyncClient, capture_id: int, offset: int, filter_: str | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"offset": offset, "limit": PAGE}
    if filter_:
        params["filter"] = filter_
    page = dict(_expect_ok(await client.get(f"/api/captures/{capture_id}/packets", params=params)))
    if not isinstance(page.get("packets"), list):
        raise ServerUnavailable(f"packets response without a packets list: {str(page)[:200]}")
    return page


async def _get_details(client: httpx.AsyncClient, capture_id: int, number: int) -> Any:
    return _expect_ok(await client.get(f"/api/captures/{capture_id}/packets/{number}/"))


async def _ws_load(port: int, capture_id: int, started: float, headers: dict[str, str]) -> dict[str, Any]:
    """Times (from upload-complete) of the load messages the capture's websocket sends."""
    url = f"ws://127.0.0.1:{port}/ws/captures/{capture_id}/"
    seen: dict[str, Any] = {}
    # Send an Origin like a browser would: the app's AllowedHostsOriginValidator rejects
    # websocket handshakes without one.
    origin = f"http://127.0.0.1:{port}"
    async with websockets.connect(
        url,
        origin=origin,  # type: ignore[arg-type]
        max_size=None,
        open_timeout=30,
        additional_headers=headers,
    ) as ws:
        seen["connected_s"] = time.perf_counter() - started
        async for raw in ws:
            now = time.perf_counter() - started
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "load.progress":
                seen.setdefault("first_progress_s", now)
            elif kind == "load.rows":
                seen.setdefault("first_rows_s", now)
                seen.setdefault("first_rows_count", len(message.get("packets", [])))
            elif kind == "load.done":
                seen.setdefault("first_rows_s", now)  # a fast load may skip load.rows
                seen.update(done_s=now, total=message.get("total"))
                return seen
            elif kind == "load.failed":
                raise ServerUnavailable(f"server reported load.failed: {message.get('error')}")
    raise ServerUnavailable("capture websocket closed before load.done")


async def _first_page(client: httpx.AsyncClient, capture_id: int, started: float) -> dict[str, Any]:
    """Time until GET packets (which waits for the engine load) first answers with rows."""
    while True:
        resp = await client.get(f"/api/captures/{capture_id}/packets", params={"offset": 0, "limit": PAGE})
        if resp.status_code not in RETRY_STATUSES:
            page = _expect_ok(resp)
            if page.get("packets"):
                return {
                    "first_page_s": time.perf_counter() - started,
                    "total": page.get("total"),
                    "displayed": page.get("displayed"),
                }
        await asyncio.sleep(0.05)


def _auth(client: httpx.AsyncClient) -> dict[str, str]:
    """The client's API token header, for the websockets it opens beside it."""
    return {"Authorization": client.headers["Authorization"]}


async def _measure_load(client: httpx.AsyncClient, port: int, capture_id: int) -> dict[str, Any]:
    """Watch the websocket and poll the first page at once, both timed from now."""
    started = time.perf_counter()
    ws = asyncio.create_task(_ws_load(port, capture_id, started, _auth(client)))
    first = asyncio.create_task(_first_page(client, capture_id, started))
    try:
        async with asyncio.timeout(LOAD_TIMEOUT_S):
            ws_times, first_times = await asyncio.gather(ws, first)
    except TimeoutError:
        raise ServerUnavailable(f"capture did not finish loading within {LOAD_TIMEOUT_S:.0f} s") from None
    finally:
        for task in (ws, first):
            task.cancel()
    return {**ws_times, **first_times}


async def _measure_filter(client: httpx.AsyncClient, capture_id: int, filter_: str) -> dict[str, Any]:
    new_s, page = await timed(_get_page(client, capture_id, 0, filter_))
    again_s, _ = await timed(_get_page(client, capture_id, 0, filter_))
    page2_s, _ = await timed(_get_page(client, capture_id, PAGE, filter_))
    return {"new_s": new_s, "again_s": again_s, "page2_s": page2_s, "displayed": page.get("displayed")}


async def _measure_concurrency(client: httpx.AsyncClient, capture_id: int, total: int) -> dict[str, Any]:
    """Page and details latency while another new filter is being computed."""
    filter_task = asyncio.create_task(timed(_get_page(client, capture_id, 0, FILTERS[1])))
    await asyncio.sleep(0.05)  # let the server start on the filter first
    numbers = spread(total, 50)
    pages: list[float] = []
    details: list[float] = []
    while not filter_task.done():
        # Walk offsets across the file so no two probes ask for the same page.
        offset = (len(pages) * 7919 * PAGE) % max(total - PAGE, 1)
        pages.append((await timed(_get_page(client, capture_id, offset)))[0])
        number = numbers[len(details) % len(numbers)]
        details.append((await timed(_get_details(client, capture_id, number)))[0])
        await asyncio.sleep(0.02)
    filter_s, page = await filter_task
    probes = pages + details
    return {
        "filter": FILTERS[1],
        "filter_s": filter_s,
        "displayed": page.get("displayed"),
        "probes": len(probes),
        "max_s": max(probes, default=None),
        "page_max_s": max(pages, default=None),
        "details_max_s": max(details, default=None),
    }


async def _engine_sessions(client: httpx.AsyncClient, capture_id: int) -> int:
    return int(_expect_ok(await client.get(f"/api/captures/{capture_id}/"))["engine_sessions"])


async def _wait_sessions(client: httpx.AsyncClient, capture_id: int, count: int) -> None:
    async with asyncio.timeout(LOAD_TIMEOUT_S):
        while await _engine_sessions(client, capture_id) < count:
            await asyncio.sleep(0.1)


async def _wait_sessions_at_most(client: httpx.AsyncClient, capture_id: int, count: int) -> None:
    """Wait until the capture's extra sessions are evicted (ENGINE_EXTRA_IDLE_SECONDS after use)."""
    async with asyncio.timeout(LOAD_TIMEOUT_S):
        while await _engine_sessions(client, capture_id) > count:
            await asyncio.sleep(1)


@contextlib.asynccontextmanager
async def _viewers(port: int, capture_id: int, count: int, headers: dict[str, str]) -> AsyncIterator[None]:
    """Keep `count` websocket viewers connected to the capture, as open browser tabs are."""
    url = f"ws://127.0.0.1:{port}/ws/captures/{capture_id}/"
    origin = f"http://127.0.0.1:{port}"
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(count):
            ws = await stack.enter_async_context(
                websockets.connect(
                    url,
                    origin=origin,  # type: ignore[arg-type]
                    max_size=None,
                    open_timeout=30,
                    additional_headers=headers,
                )
            )
            stack.push_async_callback(_drain, ws)
        yield


async def _drain(ws: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(0.5):
            async for _ in ws:
                pass


async def _measure(proc: asyncio.subprocess.Process, port: int, capture: Path, token: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Token {token}"}
    timeout = httpx.Timeout(LOAD_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=base, timeout=timeout, headers=headers) as client:
        await _wait_ready(client, proc)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        try:
            upload_s, capture_id = await timed(_upload(client, capture))
            result: dict[str, Any] = {"upload_s": upload_s, "capture_id": capture_id}
            result["load"] = await _measure_load(client, port, capture_id)
            result["memory_after_load_mb"] = sampler.now_mb()
            # The search summary's tshark pass starts with the upload and runs on for a while
            # after the load: a one-off job, reported apart from what serving the capture costs.
            result["memory_after_load_summary_mb"] = tree_rss_kib(proc.pid, only="tshark") / 1024
            total = int(result["load"]["displayed"] or result["load"]["total"])
            pages: dict[str, Any] = {}
            for name, offset in page_offsets(total, PAGE).items():
                # Awaited within the iteration, so the closure sees this iteration's offset.
                pages[name] = await median_of(lambda _i: _get_page(client, capture_id, offset))  # noqa: B023
            result["pages"] = pages
            numbers = spread(total)
            result["details"] = await median_of(
                lambda i: _get_details(client, capture_id, numbers[i % len(numbers)])
            )
            result["filters"] = {FILTERS[0]: await _measure_filter(client, capture_id, FILTERS[0])}
            result["single_viewer_sessions"] = await _engine_sessions(client, capture_id)
            # Two people now watch the capture: the server keeps a standby session loaded for
            # them, and one of them runs a new filter while the other pages and opens packets.
            async with _viewers(port, capture_id, 2, _auth(client)):
                result["standby_load_s"], _ = await timed(_wait_sessions(client, capture_id, 2))
                result["memory_two_viewers_mb"] = sampler.now_mb()
                result["concurrency"] = await _measure_concurrency(client, capture_id, total)
            # The viewers have left. Once the standby session is gone, the analysis operations
            # run on each side back to back, so that both meet the machine in the same state:
            # a raw sharkd loaded beside the server, then the server through its API.
            await _wait_sessions_at_most(client, capture_id, 1)
            result["raw_operations"] = await raw_operations_loaded(capture)
            result["operations"] = await server_operations(client, capture_id)
            sampler.now_mb()
            result["memory_peak_mb"] = sampler.peak_kib / 1024
            return result
        finally:
            await sampler.stop()


async def measure_server(repo: Path, capture: Path) -> dict[str, Any]:
    """Start migrate + daphne in a scratch directory, measure, and tear everything down."""
    _check_app(repo)
    tmp = Path(tempfile.mkdtemp(prefix="capture-bench-", dir="/tmp"))
    try:
        env = _server_env(tmp)
        await _migrate(repo, env)
        token = await _create_user(repo, env)
        port = _free_port()
        log = tmp / "daphne.log"
        with log.open("wb") as log_file:
            daphne = str(repo / ".venv/bin/daphne")
            async with spawned(
                daphne,
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "explorer_site.asgi:application",
                cwd=repo,
                env=env,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            ) as proc:
                try:
                    return await _measure(proc, port, capture, token)
                except CLIENT_ERRORS as exc:
                    raise ServerUnavailable(
                        f"{type(exc).__name__}: {exc}\n--- daphne log ---\n{_tail(log)}"
                    ) from None
                except BenchError as exc:
                    raise ServerUnavailable(f"{exc}\n--- daphne log ---\n{_tail(log)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
