"""Load: many viewers on one shared capture, then many uploads at once, against the real server.

    .venv/bin/python -m bench.load [--packets N] [--viewers 50] [--seconds 60] [--uploads 20]
                                   [--think 0.1,0.5] [--name load]

The server runs as deployed: daphne (--processes of them, viewers dealt round-robin, and with
more than one the engine service that holds every sharkd session for them) on a
throwaway PostgreSQL and Redis (tests/services.py starts them; --sqlite for SQLite and no Redis).
Every viewer is a user of one team that may read the capture; each keeps the capture's two
websockets open as a browser tab does, and for --seconds pages through the packet list, opens a
packet of each page and now and then applies one of the filters the team already ran, pausing
--think seconds (a range) between two actions. Part way through, one viewer runs a filter no
one ran before, a full pass over the capture. Then --uploads users each upload a capture of
about --upload-mb at the same moment; every file must be stored byte for byte and summarized
for the search box. The results also say how many cores each kind of process kept busy.

The servers take every other setting from the environment, as deployed ones do: for example
`ENGINE_PROCESSES_PER_CAPTURE=1 python -m bench.load` measures without the standby session.

Writes bench/results/NAME.json and NAME.md (--name, load by default). Exit status: 0 when every
measurement was made and no request failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import websockets

from bench.__main__ import default_source_dir
from bench.capture import build_capture
from bench.errors import BenchError
from bench.procs import cpu_seconds_by_kind, kill_all_sync, spawned, tree_rss_kib
from bench.report import machine_info

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PAGE = 100
# Filters the team has already run before the measured minute: applying one again reads the
# engine's cached result. NEW_FILTER is run once, by one viewer, while the others go on.
TEAM_FILTERS = ("tcp", "dns", "http.request")
NEW_FILTER = "tcp.analysis.retransmission || tcp.analysis.duplicate_ack"
FILTER_EVERY = 5  # a viewer changes its filter every this many pages
THINK_S = (0.1, 0.5)  # a viewer's pause between two actions, unless --think says otherwise
READY_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 900.0
INDEX_TIMEOUT_S = 900.0
SAMPLE_EVERY_S = 0.5
RETRY_STATUSES = {202, 409, 423, 425, 503, 504}
TIMELINE_STEP_S = 10
SEARCH_WORD = "tcp"  # a protocol of every upload: found once its summary is stored


def say(message: str) -> None:
    print(f"bench.load: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=1_000_000, help="shared capture size (1,000,000)")
    parser.add_argument("--viewers", type=int, default=50, help="concurrent viewers (50)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the viewers work (60)")
    parser.add_argument("--uploads", type=int, default=20, help="concurrent uploads (20)")
    parser.add_argument("--upload-mb", type=float, default=10.0, help="size of each upload (10)")
    parser.add_argument("--processes", type=int, default=1, help="daphne processes (1)")
    parser.add_argument(
        "--sqlite", action="store_true", help="SQLite and no Redis instead of PostgreSQL + Redis"
    )
    parser.add_argument("--source-dir", type=Path, default=None, help="real captures to build from")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data", help="capture cache")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, captures)")
    parser.add_argument(
        "--think",
        type=think_range,
        default=THINK_S,
        help="a viewer's pause between two actions, MIN,MAX seconds (0.1,0.5)",
    )
    parser.add_argument("--name", default="load", help="results file name, without extension (load)")
    args = parser.parse_args(argv)
    if min(args.packets, args.viewers, args.processes) <= 0 or args.uploads < 0 or args.seconds <= 0:
        parser.error("--packets, --viewers, --processes and --seconds must be positive")
    if args.processes > 1 and args.sqlite:
        parser.error("several processes share their state through Redis: leave out --sqlite")
    args.source_dir = (args.source_dir or default_source_dir()).resolve()
    if not args.source_dir.is_dir():
        parser.error(f"source directory {args.source_dir} not found; pass --source-dir")
    return args


# ---- measurements -----------------------------------------------------------------------------


@dataclass
class Recorder:
    """Latencies by kind, each with the time it ended, and every failed request."""

    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    def add(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append((time.monotonic(), seconds))

    def fail(self, what: str) -> None:
        self.errors.append(what)

    def summary(self, kind: str, window: tuple[float, float] | None = None) -> dict[str, Any]:
        samples = [
            seconds
            for ended, seconds in self.latencies.get(kind, [])
            if window is None or window[0] <= ended <= window[1]
        ]
        return percentiles(samples)


def percentiles(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {
        "count": len(ordered),
        "p50_s": statistics.median(ordered),
        "p95_s": cuts[94],
        "max_s": ordered[-1],
    }


class MemorySampler:
    """Samples the resident memory of the server process trees: daphne with its sharkd and tshark
    children, and the engine service with its sharkd when there is one."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_kib = 0
        self.task: asyncio.Task[None] | None = None

    def now_mb(self) -> float:
        rss = sum(tree_rss_kib(pid) for pid in self.pids)
        self.peak_kib = max(self.peak_kib, rss)
        return rss / 1024

    async def run(self) -> None:
        while True:
            self.now_mb()
            await asyncio.sleep(SAMPLE_EVERY_S)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# ---- the servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def backing_services(sqlite: bool, tmp: Path) -> Any:
    """Yield DATABASE_URL and REDIS_URL: throwaway PostgreSQL and Redis, or SQLite alone."""
    if sqlite:
        yield {"DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3"}
        return
    from tests.services import PostgresServer, RedisServer, postgres_bin_dir

    bin_dir, redis_binary = postgres_bin_dir(), shutil.which("redis-server")
    if bin_dir is None or redis_binary is None:
        raise BenchError("PostgreSQL or redis-server is not installed (./start --setup-only --with-services)")
    postgres, redis = PostgresServer(bin_dir), RedisServer(redis_binary)
    try:
        postgres.start()
        redis.start()
        yield {"DATABASE_URL": postgres.create_database("load"), "REDIS_URL": redis.url(0)}
    finally:
        redis.stop()
        postgres.stop()


def manage(env: dict[str, str], *args: str) -> str:
    """Run manage.py; return its standard output, or raise BenchError with its error."""
    done = subprocess.run(
        [str(REPO / ".venv/bin/python"), "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {args[0]} failed: {done.stderr[-800:]}")
    return done.stdout


def create_team(env: dict[str, str], users: int) -> list[str]:
    """Create `users` users in one team; return an API token of each."""
    code = f"""
import json
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group, User
from explorer.tokens import create_token
team = Group.objects.create(name="viewers")
tokens = []
for number in range({users}):
    user = User.objects.create_user(f"viewer{{number}}")
    user.groups.add(team)
    tokens.append(async_to_sync(create_token)(user, "load benchmark"))
print(json.dumps(tokens))
"""
    return list(json.loads(manage(env, "shell", "-v", "0", "-c", code).strip().splitlines()[-1]))


def share_with_team(env: dict[str, str], capture_id: int) -> None:
    code = (
        "from django.contrib.auth.models import Group\n"
        "from explorer.models import Capture\n"
        "team = Group.objects.get(name='viewers')\n"
        f"Capture.objects.filter(pk={capture_id}).update(visibility='team', team=team)\n"
    )
    manage(env, "shell", "-v", "0", "-c", code)


@contextlib.asynccontextmanager
async def engine_service(env: dict[str, str], tmp: Path) -> AsyncIterator[list[int]]:
    """With ENGINE_URL in env, run `manage.py run_engine` there; yield its pid (none without)."""
    if not env.get("ENGINE_URL"):
        yield []
        return
    port = int(env["ENGINE_URL"].rsplit(":", 1)[1])
    with open(tmp / "engine.log", "wb") as log:
        async with spawned(
            str(REPO / ".venv/bin/python"),
            "manage.py",
            "run_engine",
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        ) as process:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise BenchError("the engine service did not start") from None
                    await asyncio.sleep(0.2)
            yield [process.pid]


@contextlib.asynccontextmanager
async def daphnes(env: dict[str, str], count: int, tmp: Path) -> AsyncIterator[list[tuple[int, int]]]:
    """Start `count` daphne processes; yield (port, pid) of each once all answer."""
    async with contextlib.AsyncExitStack() as stack:
        started: list[tuple[int, int]] = []
        for number in range(count):
            port = free_port()
            log = stack.enter_context(open(tmp / f"daphne-{number}.log", "wb"))  # noqa: SIM115
            process = await stack.enter_async_context(
                spawned(
                    str(REPO / ".venv/bin/daphne"),
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "explorer_site.asgi:application",
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )
            started.append((port, process.pid))
        async with httpx.AsyncClient(timeout=5) as client:
            for port, _ in started:
                deadline = time.monotonic() + READY_TIMEOUT_S
                while True:
                    try:
                        await client.get(f"http://127.0.0.1:{port}/api/captures/")
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise BenchError(f"daphne on port {port} did not answer") from None
                        await asyncio.sleep(0.2)
        yield started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_for(port: int, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Token {token}"},
        timeout=httpx.Timeout(LOAD_TIMEOUT_S),
    )


async def upload(client: httpx.AsyncClient, path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        answer = await client.post("/api/captures/", files={"file": (path.name, handle)})
    if answer.status_code != 201:
        raise BenchError(f"upload of {path.name} answered {answer.status_code}: {answer.text[:300]}")
    return dict(answer.json()["captures"][0])


async def first_page(client: httpx.AsyncClient, capture_id: int, filter_text: str = "") -> dict[str, Any]:
    """Ask for the first page until the engine has loaded the capture (and run the filter)."""
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while True:
        params = {"offset": 0, "limit": PAGE, "filter": filter_text}
        answer = await client.get(f"/api/captures/{capture_id}/packets", params=params)
        if answer.status_code == 200:
            return dict(answer.json())
        if answer.status_code not in RETRY_STATUSES or time.monotonic() > deadline:
            raise BenchError(f"first page answered {answer.status_code}: {answer.text[:300]}")
        await asyncio.sleep(0.2)


# ---- the viewers ------------------------------------------------------------------------------


async def hold_socket(url: str, origin: str, token: str, recorder: Recorder, stop: asyncio.Event) -> None:
    """Keep a websocket open as a browser tab does, reading what the server pushes."""
    try:
        async with websockets.connect(
            url,
            origin=origin,  # type: ignore[arg-type]
            additional_headers={"Authorization": f"Token {token}"},
            max_size=None,
            open_timeout=60,
        ) as connection:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        await connection.recv()
    except (websockets.WebSocketException, OSError) as error:
        recorder.fail(f"websocket {url}: {type(error).__name__}: {error}")


async def timed_get(
    client: httpx.AsyncClient, recorder: Recorder, kind: str, url: str, **params: Any
) -> dict[str, Any] | None:
    recorder.requests += 1
    started = time.perf_counter()
    try:
        answer = await client.get(url, params=params)
    except httpx.HTTPError as error:
        recorder.fail(f"{kind} {url}: {type(error).__name__}: {error}")
        return None
    seconds = time.perf_counter() - started
    if answer.status_code != 200:
        recorder.fail(f"{kind} {url} {params}: {answer.status_code} {answer.text[:200]}")
        return None
    recorder.add(kind, seconds)
    return dict(answer.json())


async def view(
    number: int,
    client: httpx.AsyncClient,
    capture_id: int,
    total: int,
    counts: dict[str, int],
    recorder: Recorder,
    until: float,
    think: tuple[float, float],
) -> None:
    """One viewer: page, open a packet of the page, and change filters now and then, until `until`."""
    chooser = random.Random(number)
    packets = f"/api/captures/{capture_id}/packets"
    filter_text, displayed = "", total
    step = 0
    while time.monotonic() < until:
        if step % FILTER_EVERY == FILTER_EVERY - 1:
            filter_text = chooser.choice(["", *TEAM_FILTERS])
            displayed = counts[filter_text]
            await timed_get(client, recorder, "filter", packets, offset=0, limit=PAGE, filter=filter_text)
        else:
            offset = chooser.randrange(max(displayed - PAGE, 0) + 1)
            page = await timed_get(
                client, recorder, "page", packets, offset=offset, limit=PAGE, filter=filter_text
            )
            if page and page["packets"]:
                selected = chooser.choice(page["packets"])["number"]
                await timed_get(client, recorder, "details", f"{packets}/{selected}/")
        step += 1
        await asyncio.sleep(chooser.uniform(*think))


async def new_filter(client: httpx.AsyncClient, capture_id: int, recorder: Recorder) -> dict[str, Any]:
    """Run a filter no one has run yet, as one more viewer would; time it."""
    started = time.monotonic()
    page = await timed_get(
        client,
        recorder,
        "new filter",
        f"/api/captures/{capture_id}/packets",
        limit=PAGE,
        filter=NEW_FILTER,
    )
    ended = time.monotonic()
    return {
        "filter": NEW_FILTER,
        "seconds": ended - started,
        "displayed": page["displayed"] if page else None,
        "window": (started, ended),
    }


async def measure_viewers(
    args: argparse.Namespace,
    servers: list[tuple[int, int]],
    tokens: list[str],
    env: dict[str, str],
    capture: Path,
    sampler: MemorySampler,
) -> dict[str, Any]:
    ports = [port for port, _ in servers]
    result: dict[str, Any] = {}
    async with client_for(ports[0], tokens[0]) as owner:
        say(f"uploading {capture.name} ({capture.stat().st_size / 1e6:.0f} MB)")
        started = time.monotonic()
        stored = await upload(owner, capture)
        result["upload_s"] = time.monotonic() - started
        capture_id = int(stored["id"])
    share_with_team(env, capture_id)
    counts: dict[str, int] = {}
    for number, port in enumerate(ports):
        async with client_for(port, tokens[number]) as client:
            started = time.monotonic()
            page = await first_page(client, capture_id)
            result.setdefault("load_s", []).append(time.monotonic() - started)
            counts[""] = int(page["displayed"])
            say(f"loaded on port {port} in {result['load_s'][-1]:.1f} s: {counts['']:,} packets")
            # The team's filters, run once before the measured minute.
            for filter_text in TEAM_FILTERS:
                started = time.monotonic()
                counts[filter_text] = int((await first_page(client, capture_id, filter_text))["displayed"])
                result.setdefault("team_filters_s", {})[f"{filter_text} (port {port})"] = (
                    time.monotonic() - started
                )
    result["displayed"] = counts
    result["memory_loaded_mb"] = sampler.now_mb()

    recorder = Recorder()
    stop = asyncio.Event()
    say(f"{args.viewers} viewers for {args.seconds:.0f} s")
    sockets = []
    for number in range(args.viewers):
        port = ports[number % len(ports)]
        origin = f"http://127.0.0.1:{port}"
        for path in (f"/ws/captures/{capture_id}/", f"/ws/captures/{capture_id}/live/"):
            sockets.append(
                asyncio.create_task(
                    hold_socket(f"ws://127.0.0.1:{port}{path}", origin, tokens[number], recorder, stop)
                )
            )
    # Each viewer's HTTP client is made with its tabs, before anyone clicks: making one takes
    # about 30 ms of this process's event loop (an SSL context), which counted against the
    # requests in flight meanwhile (the first requests "took" 2-3 s).
    clients = [client_for(ports[number % len(ports)], tokens[number]) for number in range(args.viewers)]
    newcomer = client_for(ports[0], tokens[0])
    await asyncio.sleep(2)  # the tabs open before anyone clicks
    until = time.monotonic() + args.seconds
    viewers = [
        asyncio.create_task(
            view(
                number,
                clients[number],
                capture_id,
                counts[""],
                counts,
                recorder,
                until,
                args.think,
            )
        )
        for number in range(args.viewers)
    ]
    cpu_before = cpu_seconds_by_kind(os.getpid())
    await asyncio.sleep(args.seconds / 4)
    result["memory_viewing_mb"] = sampler.now_mb()
    say(f"one viewer runs a new filter: {NEW_FILTER}")
    fresh = await new_filter(newcomer, capture_id, recorder)
    window = fresh.pop("window")
    say(f"new filter took {fresh['seconds']:.1f} s")
    await asyncio.gather(*viewers)
    cpu_after, elapsed = cpu_seconds_by_kind(os.getpid()), time.monotonic() - (until - args.seconds)
    # Cores busy on average over the viewers' time, by process kind.
    result["cpu_cores"] = {
        kind: (cpu_after[kind] - cpu_before.get(kind, 0.0)) / elapsed
        for kind in sorted(cpu_after, key=lambda k: cpu_before.get(k, 0.0) - cpu_after[k])
        if cpu_after[kind] - cpu_before.get(kind, 0.0) > 0.005 * elapsed
    }
    stop.set()
    await asyncio.gather(*sockets, *(client.aclose() for client in [*clients, newcomer]))
    result["memory_after_mb"] = sampler.now_mb()
    result["new_filter"] = fresh
    result["requests"] = recorder.requests
    result["page"] = recorder.summary("page")
    result["details"] = recorder.summary("details")
    result["filter"] = recorder.summary("filter")
    result["during_new_filter"] = {
        "page": recorder.summary("page", window),
        "details": recorder.summary("details", window),
    }
    result["new_filter"]["starts_at_s"] = window[0] - (until - args.seconds)
    result["timeline"] = timeline(recorder, until - args.seconds, args.seconds)
    result["errors"] = len(recorder.errors)
    result["error_samples"] = recorder.errors[:10]
    return result


def timeline(recorder: Recorder, start: float, seconds: float) -> list[dict[str, Any]]:
    """Page and details latency in TIMELINE_STEP_S slices of the viewers' time, in order."""
    slices = []
    for begin in range(0, max(int(seconds), 1), TIMELINE_STEP_S):
        window = (start + begin, start + begin + TIMELINE_STEP_S)
        samples = [
            latency
            for kind in ("page", "details")
            for ended, latency in recorder.latencies.get(kind, [])
            if window[0] <= ended < window[1]
        ]
        slices.append({"from_s": begin, **percentiles(samples)})
    return slices


# ---- the uploads ------------------------------------------------------------------------------


def slice_capture(source: Path, megabytes: float, out: Path) -> int:
    """Copy the first packets of a pcap file up to about `megabytes`; return how many."""
    with source.open("rb") as reader, out.open("wb") as writer:
        header = reader.read(24)
        magic = header[:4]
        order: Literal["little", "big"]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            order = "little"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            order = "big"
        else:
            raise BenchError(f"{source} is not a pcap file")
        writer.write(header)
        written, packets = 24, 0
        while written < megabytes * 1e6:
            record = reader.read(16)
            if len(record) < 16:
                break
            length = int.from_bytes(record[8:12], order)
            writer.write(record + reader.read(length))
            written += 16 + length
            packets += 1
    return packets


def upload_files(source: Path, count: int, megabytes: float, folder: Path) -> tuple[list[Path], int]:
    """`count` different captures of about `megabytes` each (timestamps shifted by editcap)."""
    base = folder / "slice.pcap"
    packets = slice_capture(source, megabytes, base)
    files = []
    for number in range(count):
        path = folder / f"upload-{number:02d}.pcap"
        subprocess.run(
            ["editcap", "-t", str(number + 1), str(base), str(path)], check=True, capture_output=True
        )
        files.append(path)
    return files, packets


async def upload_one(
    port: int, token: str, path: Path, recorder: Recorder, ids: dict[Path, tuple[int, str]]
) -> None:
    async with client_for(port, token) as client:
        started = time.perf_counter()
        try:
            stored = await upload(client, path)
        except (BenchError, httpx.HTTPError) as error:
            recorder.fail(f"upload {path.name}: {error}")
            return
        recorder.add("upload", time.perf_counter() - started)
        ids[path] = (int(stored["id"]), token)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if stored["sha256"] != digest or stored["size"] != path.stat().st_size:
            recorder.fail(
                f"upload {path.name}: stored {stored['sha256']} ({stored['size']} B), sent {digest}"
            )


async def measure_uploads(
    args: argparse.Namespace,
    ports: list[int],
    tokens: list[str],
    capture: Path,
    tmp: Path,
    captures_dir: Path,
) -> dict[str, Any]:
    folder = tmp / "uploads"
    folder.mkdir()
    files, packets = upload_files(capture, args.uploads, args.upload_mb, folder)
    say(f"{args.uploads} uploads of {files[0].stat().st_size / 1e6:.1f} MB ({packets:,} packets) at once")
    recorder = Recorder()
    ids: dict[Path, tuple[int, str]] = {}
    stored_before = len(list(captures_dir.iterdir()))
    started = time.monotonic()
    await asyncio.gather(
        *(
            upload_one(ports[n % len(ports)], tokens[n % len(tokens)], path, recorder, ids)
            for n, path in enumerate(files)
        )
    )
    result: dict[str, Any] = {
        "count": args.uploads,
        "file_mb": files[0].stat().st_size / 1e6,
        "packets_each": packets,
        "all_s": time.monotonic() - started,
        "upload": recorder.summary("upload"),
        "stored": len(ids),
        "files_added": len(list(captures_dir.iterdir())) - stored_before,
    }
    # Each capture must come back through the API with every packet, and be found by the
    # search box once its summary is stored.
    found: set[Path] = set()
    deadline = time.monotonic() + INDEX_TIMEOUT_S
    while len(found) < len(ids) and time.monotonic() < deadline:
        for path, (capture_id, token) in ids.items():
            if path in found:
                continue
            async with client_for(ports[0], token) as client:
                answer = await client.get("/api/captures/", params={"q": SEARCH_WORD, "owner": "mine"})
            if answer.status_code != 200:
                recorder.fail(f"search: {answer.status_code} {answer.text[:200]}")
            elif capture_id in [capture["id"] for capture in answer.json()]:
                found.add(path)
        await asyncio.sleep(1)
    result["indexed"] = len(found)
    result["indexed_s"] = time.monotonic() - started
    for path, (capture_id, token) in ids.items():
        async with client_for(ports[-1], token) as client:
            answer = await client.get(f"/api/captures/{capture_id}/")
        if answer.status_code != 200 or answer.json().get("packets") != packets:
            recorder.fail(f"{path.name}: {answer.status_code} {answer.text[:200]}")
    lost = args.uploads - min(len(ids), len(found), result["files_added"])
    result["lost"] = lost
    result["errors"] = len(recorder.errors)
    result["error_samples"] = recorder.errors[:10]
    return result


# ---- the run ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    say(f"building/reusing a {args.packets:,}-packet capture from {args.source_dir}")
    capture = build_capture(args.source_dir, args.packets, args.data_dir)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        # Other work on the machine skews every figure: the 1-minute load average before the run.
        "load_average_before": os.getloadavg()[0],
        "capture": {"packets": capture.packets, "file_size": capture.file_size},
        "setup": {
            "viewers": args.viewers,
            "seconds": args.seconds,
            "processes": args.processes,
            "backends": "SQLite" if args.sqlite else "PostgreSQL + Redis",
            "team_filters": list(TEAM_FILTERS),
            "think_s": list(args.think),
        },
    }
    tmp = Path(tempfile.mkdtemp(prefix="capture-load-", dir="/tmp"))
    try:
        with backing_services(args.sqlite, tmp) as backing:
            env = {
                # As deployed, unless the environment says otherwise: DEBUG=1 also records
                # every query the servers make.
                "DEBUG": "0",
                "SECRET_KEY": secrets.token_urlsafe(50),
                **os.environ,
                **backing,
                "CAPTURES_DIR": str(tmp / "captures"),
                "MAX_UPLOAD_MB": "4096",
                "PYTHONUNBUFFERED": "1",
            }
            if not args.sqlite:
                # As the reference deployment (docker-compose.yml) keeps them.
                env.setdefault("CONN_MAX_AGE", "60")
            results["setup"]["conn_max_age"] = env.get("CONN_MAX_AGE", "0")
            results["setup"]["debug"] = env["DEBUG"]
            manage(env, "migrate", "--noinput")
            tokens = create_team(env, max(args.viewers, args.uploads))
            if args.processes > 1:
                # As deployed: every server process reaches the one engine service.
                env["ENGINE_URL"] = f"tcp://127.0.0.1:{free_port()}"
            async with engine_service(env, tmp) as engine, daphnes(env, args.processes, tmp) as servers:
                sampler = MemorySampler([pid for _, pid in servers] + engine)
                sampler.start()
                try:
                    results["viewers"] = await measure_viewers(
                        args, servers, tokens, env, capture.path, sampler
                    )
                    if args.uploads:
                        ports = [port for port, _ in servers]
                        results["uploads"] = await measure_uploads(
                            args, ports, tokens, capture.path, tmp, tmp / "captures"
                        )
                    results["memory_peak_mb"] = sampler.peak_kib / 1024
                finally:
                    await sampler.stop()
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def think_range(text: str) -> tuple[float, float]:
    """Parse --think: MIN,MAX seconds, 0 <= MIN <= MAX."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("give the pause as MIN,MAX seconds, e.g. 1,3") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError("the pause needs 0 <= MIN <= MAX")
    return low, high


def think_text(think: Any) -> str:
    low, high = think
    return f"{low:g}-{high:g} s"


def time_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def latency_row(label: str, summary: dict[str, Any]) -> str:
    return (
        f"| {label} | {summary.get('count', 0):,} | {time_text(summary.get('p50_s'))} | "
        f"{time_text(summary.get('p95_s'))} | {time_text(summary.get('max_s'))} |"
    )


def markdown(results: dict[str, Any]) -> str:
    setup, viewers = results["setup"], results["viewers"]
    machine = results["machine"]
    lines = [
        "# Capture Explorer load benchmark",
        "",
        f"{results['date']} · {results['capture']['packets']:,} packets · "
        f"{results['capture']['file_size'] / 1e6:.0f} MB · {machine['cpu_count']} CPUs · "
        f"{setup['processes']} daphne process(es)"
        f"{' and the engine service' if setup['processes'] > 1 else ''} on {setup['backends']} "
        f"(CONN_MAX_AGE={setup.get('conn_max_age', '0')}, DEBUG={setup.get('debug', '1')}) · "
        f"{machine['tshark_version']} · "
        f"load average {results['load_average_before']:.2f} before the run.",
        "",
        f"{setup['viewers']} viewers, each a user of one team, for {setup['seconds']:.0f} s: "
        "page (100 rows at a random offset), open a packet of the page, and "
        f"every {FILTER_EVERY}th action apply one of "
        f"{', '.join(f'`{f}`' for f in setup['team_filters'])} or none (run once before), "
        f"pausing {think_text(setup.get('think_s', THINK_S))} between two actions. "
        f"Part way through, one viewer runs `{viewers['new_filter']['filter']}` for the first time.",
        "",
        "| request | count | p50 | p95 | max |",
        "|---|---|---|---|---|",
        latency_row("Page of 100", viewers["page"]),
        latency_row("Packet details", viewers["details"]),
        latency_row("Apply a team filter (first page)", viewers["filter"]),
        latency_row("Page of 100, during the new filter", viewers["during_new_filter"]["page"]),
        latency_row("Packet details, during the new filter", viewers["during_new_filter"]["details"]),
        "",
        f"- New filter: {time_text(viewers['new_filter']['seconds'])} "
        f"({viewers['new_filter']['displayed']} packets displayed), "
        f"from {viewers['new_filter']['starts_at_s']:.0f} s into the viewers' time.",
        f"- Requests: {viewers['requests']:,}; errors: **{viewers['errors']}**.",
        f"- Upload of the shared capture: {time_text(viewers['upload_s'])}; first page once loaded: "
        + ", ".join(time_text(s) for s in viewers["load_s"])
        + ".",
        f"- Server memory (RSS of the daphne process trees and of the engine service, sharkd included): "
        f"{viewers['memory_loaded_mb']:.0f} MB loaded, "
        f"{viewers['memory_viewing_mb']:.0f} MB with the viewers, "
        f"{results['memory_peak_mb']:.0f} MB peak.",
        "- CPU over the viewers' time, in cores busy on average (of "
        f"{machine['cpu_count']}): "
        + ", ".join(f"{kind} {cores:.2f}" for kind, cores in viewers.get("cpu_cores", {}).items())
        + ".",
    ]
    lines += [
        "",
        "Page and details together, by slice of the viewers' time (ended within it):",
        "",
        "| from | count | p50 | p95 | max |",
        "|---|---|---|---|---|",
        *(latency_row(f"{piece['from_s']} s", piece) for piece in viewers["timeline"]),
    ]
    uploads = results.get("uploads")
    if uploads:
        lines += [
            "",
            f"## {uploads['count']} uploads at once",
            "",
            f"{uploads['count']} users each upload a different capture of {uploads['file_mb']:.1f} MB "
            f"({uploads['packets_each']:,} packets) at the same moment.",
            "",
            "| request | count | p50 | p95 | max |",
            "|---|---|---|---|---|",
            latency_row("Upload", uploads["upload"]),
            "",
            f"- All answered in {time_text(uploads['all_s'])}; stored byte for byte: {uploads['stored']} "
            f"(files added: {uploads['files_added']}); found by the search box (summarized): "
            f"{uploads['indexed']} after {time_text(uploads['indexed_s'])}.",
            f"- Lost: **{uploads['lost']}**; errors: **{uploads['errors']}**.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        results = asyncio.run(measure(args))
    except BenchError as error:
        say(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        kill_all_sync()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{args.name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = markdown(results)
    (args.results_dir / f"{args.name}.md").write_text(text)
    print(text)
    failed = (
        results["viewers"]["errors"]
        or (results.get("uploads") or {}).get("errors")
        or (results.get("uploads") or {}).get("lost")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
