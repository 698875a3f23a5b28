"""Memory: many large captures opened one after another, within the engine's memory budget.

    .venv/bin/python -m bench.memory [--captures 10] [--packets N] [--budget-mb 4000]

Runs the deployment for several server processes: the engine service (`manage.py run_engine`,
which holds every sharkd session) and one daphne process, on SQLite, with
ENGINE_MEMORY_BUDGET_MB=--budget-mb. A user uploads --captures copies of the benchmark capture
(a million packets by default), each a file of its own, then opens them one after another as
a viewer does (the load websocket until the capture is loaded, the first page, a packet's
details). Resident memory of the engine service's process tree (sharkd included) and of the
server is sampled throughout. Then nobody looks for --idle-seconds (ENGINE_IDLE_SECONDS of the
run) and the memory is read again: idle captures must cost no engine memory.

Writes bench/results/memory.json and memory.md. Exit status: 0 when the capture sessions'
memory stayed within the budget and idle sessions were all closed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import websockets

from bench.__main__ import default_source_dir
from bench.capture import build_capture
from bench.errors import BenchError
from bench.load import client_for, daphnes, engine_service, first_page, free_port, manage, say, upload
from bench.procs import descendants, kill_all_sync, memory_kib, tree_rss_kib
from bench.report import machine_info

BENCH_DIR = Path(__file__).resolve().parent
SAMPLE_EVERY_S = 0.25
LOAD_TIMEOUT_S = 600.0
# The evictor looks every 5 s; a session idle for ENGINE_IDLE_SECONDS is closed at its next look.
EVICTOR_PERIOD_S = 5


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--captures", type=int, default=10, help="captures opened one after another (10)")
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets of each capture (1,000,000)")
    parser.add_argument("--budget-mb", type=int, default=4000, help="ENGINE_MEMORY_BUDGET_MB (4000)")
    parser.add_argument("--idle-seconds", type=int, default=20, help="ENGINE_IDLE_SECONDS (20)")
    parser.add_argument("--source-dir", type=Path, default=None, help="real captures to build from")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data", help="capture cache")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    if min(args.captures, args.packets, args.budget_mb, args.idle_seconds) <= 0:
        parser.error("every number must be positive")
    args.source_dir = (args.source_dir or default_source_dir()).resolve()
    return args


class Sampler:
    """Samples resident memory: the capture sessions (what the budget bounds), the engine
    service's whole tree (the service and its filter checker too), and the server's tree."""

    def __init__(self, engine_pid: int, server_pid: int, captures_dir: Path) -> None:
        self.engine_pid = engine_pid
        self.server_pid = server_pid
        self.captures_dir = str(captures_dir.resolve())
        self.peaks = {"sessions": 0.0, "engine": 0.0, "server": 0.0, "window": 0.0}

    def engine_mb(self) -> float:
        return tree_rss_kib(self.engine_pid) / 1024

    def capture_sessions(self) -> list[int]:
        """Return the engine's sharkd processes that hold a capture file open."""
        return [
            pid
            for pid in descendants(self.engine_pid)
            if _name(pid) == "sharkd" and any(f.startswith(self.captures_dir) for f in _open_files(pid))
        ]

    def sessions_mb(self) -> float:
        return sum(memory_kib(pid)[0] for pid in self.capture_sessions()) / 1024

    async def run(self) -> None:
        while True:
            sessions = self.sessions_mb()
            for name, value in (
                ("sessions", sessions),
                ("window", sessions),
                ("engine", self.engine_mb()),
                ("server", tree_rss_kib(self.server_pid) / 1024),
            ):
                self.peaks[name] = max(self.peaks[name], value)
            await asyncio.sleep(SAMPLE_EVERY_S)

    def new_window(self) -> None:
        self.peaks["window"] = 0.0


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _open_files(pid: int) -> list[str]:
    try:
        return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return []


async def wait_loaded(port: int, token: str, capture_id: int) -> None:
    """Open the capture's load websocket, as its page does, until the engine has loaded it."""
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/captures/{capture_id}/",
        origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
        additional_headers={"Authorization": f"Token {token}"},
        max_size=None,
        open_timeout=60,
    ) as connection:
        async with asyncio.timeout(LOAD_TIMEOUT_S):
            while True:
                message = json.loads(await connection.recv())
                if message["type"] == "load.done":
                    return
                if message["type"] == "load.failed":
                    raise BenchError(f"capture {capture_id} failed to load: {message['error']}")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    say(f"building/reusing a {args.packets:,}-packet capture from {args.source_dir}")
    capture = build_capture(args.source_dir, args.packets, args.data_dir)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_before": os.getloadavg()[0],
        "capture": {"packets": capture.packets, "file_size": capture.file_size},
        "setup": {"captures": args.captures, "budget_mb": args.budget_mb, "idle_seconds": args.idle_seconds},
        "opened": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="capture-memory-", dir="/tmp"))
    engine_url = f"tcp://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
        "CAPTURES_DIR": str(tmp / "captures"),
        "MAX_UPLOAD_MB": "4096",
        "ENGINE_URL": engine_url,
        "ENGINE_MEMORY_BUDGET_MB": str(args.budget_mb),
        "ENGINE_IDLE_SECONDS": str(args.idle_seconds),
        "PYTHONUNBUFFERED": "1",
    }
    try:
        manage(env, "migrate", "--noinput")
        manage(
            env,
            "shell",
            "-v",
            "0",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_user('engineer')",
        )
        token = manage(env, "create_api_token", "engineer").strip()
        async with engine_service(env, tmp) as engine, daphnes(env, 1, tmp) as servers:
            [(port, server_pid)] = servers
            sampler = Sampler(engine[0], server_pid, tmp / "captures")
            results["engine_start_mb"] = sampler.engine_mb()
            sampling = asyncio.create_task(sampler.run())
            try:
                await open_one_after_another(args, capture.path, port, token, sampler, results)
                say(f"nobody looks for {args.idle_seconds} s")
                await asyncio.sleep(args.idle_seconds + 2 * EVICTOR_PERIOD_S)
                results["idle"] = {
                    "engine_mb": sampler.engine_mb(),
                    "sessions_mb": sampler.sessions_mb(),
                    "sessions": len(sampler.capture_sessions()),
                }
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
            results["peaks_mb"] = {k: v for k, v in sampler.peaks.items() if k != "window"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


async def open_one_after_another(
    args: argparse.Namespace, path: Path, port: int, token: str, sampler: Sampler, results: dict[str, Any]
) -> None:
    async with client_for(port, token) as client:
        for number in range(args.captures):
            say(f"capture {number + 1} of {args.captures}: upload")
            copy = path.with_name(f"{path.stem}-{number}{path.suffix}")
            stored = await upload(client, path if number == 0 else _linked(path, copy))
            sampler.new_window()
            started = time.monotonic()
            await wait_loaded(port, token, stored["id"])
            page = await first_page(client, stored["id"])
            detail = await client.get(f"/api/captures/{stored['id']}/packets/{page['total'] // 2}/")
            if detail.status_code != 200:
                raise BenchError(f"details answered {detail.status_code}: {detail.text[:300]}")
            opened = {
                "capture": number + 1,
                "open_s": time.monotonic() - started,
                "sessions_mb": sampler.sessions_mb(),
                "peak_mb": sampler.peaks["window"],
                "sessions": len(sampler.capture_sessions()),
                "engine_mb": sampler.engine_mb(),
            }
            results["opened"].append(opened)
            say(f"  opened in {opened['open_s']:.1f} s; sessions {opened['sessions_mb']:.0f} MB")
            copy.unlink(missing_ok=True)


def _linked(path: Path, copy: Path) -> Path:
    """A second name of the same file: uploaded under it, it is stored as a capture of its own."""
    copy.unlink(missing_ok=True)
    os.link(path, copy)
    return copy


def markdown(results: dict[str, Any]) -> str:
    setup, capture = results["setup"], results["capture"]
    budget = setup["budget_mb"]
    lines = [
        "# Capture Explorer memory benchmark",
        "",
        f"{results['date']} · {setup['captures']} captures of {capture['packets']:,} packets "
        f"({capture['file_size'] / 2**20:,.0f} MB each) · engine service + 1 daphne · "
        f"ENGINE_MEMORY_BUDGET_MB={budget} · {results['machine']['cpu_count']} CPUs · "
        f"{results['machine']['tshark_version']} · "
        f"load average {results['load_average_before']:.2f} before the run.",
        "",
        "Each capture is uploaded, then opened as a viewer opens it (load websocket, first page, a "
        "packet's details), one after another. The budget bounds the resident memory of the "
        "sharkd sessions that hold a capture.",
        "",
        "| capture | open | sessions' memory after | peak while opening | capture sessions "
        "| engine service tree |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["opened"]:
        lines.append(
            f"| {row['capture']} | {row['open_s']:.1f} s | {row['sessions_mb']:,.0f} MB | "
            f"{row['peak_mb']:,.0f} MB | {row['sessions']} | {row['engine_mb']:,.0f} MB |"
        )
    idle, peaks = results["idle"], results["peaks_mb"]
    within = peaks["sessions"] <= budget
    lines += [
        "",
        f"- Capture sessions' peak: **{peaks['sessions']:,.0f} MB** for a budget of {budget:,} MB: "
        f"{'within' if within else 'OVER'} it.",
        f"- The engine service's whole tree peaked at {peaks['engine']:,.0f} MB: the sessions, the "
        f"service itself and its filter-checking sharkd ({results['engine_start_mb']:,.0f} MB at start, "
        "before the checker).",
        f"- Server (daphne) peak: {peaks['server']:,.0f} MB, its children included: the tshark pass "
        "that summarizes each upload for the search box runs there when no worker does it.",
        f"- After {setup['idle_seconds']} s with no viewer: {idle['sessions']} capture session(s) holding "
        f"{idle['sessions_mb']:,.0f} MB; the engine service's tree {idle['engine_mb']:,.0f} MB.",
        "",
    ]
    return "\n".join(lines)


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
    (args.results_dir / "memory.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = markdown(results)
    (args.results_dir / "memory.md").write_text(text)
    print(text)
    within = results["peaks_mb"]["sessions"] <= args.budget_mb
    return 0 if within and results["idle"]["sessions"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
