"""Live captures decoded by the background worker (BACKGROUND_WORKER=1 with REDIS_URL).

The server only records the packets; a worker decodes them for the viewers. Killed while it
decodes, the next worker takes over from the files, and the viewers see every row once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from . import test_live_capture as live_capture
from .conftest import ROOT, Server, sample_capture
from .services import PostgresServer, RedisServer
from .test_live_capture import web_server  # noqa: F401 - the fixture
from .test_live_stream import as_cells, single_pass_numbers, single_pass_rows, wait_for_live
from .test_worker import worker_command

pytestmark = [pytest.mark.services, pytest.mark.engine]

LEASE_SECONDS = 4
FILTER = "http.request"
STAFF = "worker-staff"


@pytest.fixture(scope="module")
def recorder(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("recorder"),
        DATABASE_URL=postgres_server.create_database("liveworker"),
        REDIS_URL=redis_server.new_database_url(),
        BACKGROUND_WORKER="1",
        LIVE_DECODER_LEASE_SECONDS=str(LEASE_SECONDS),
    )
    server.start()
    server.create_user(STAFF, staff=True)
    yield server
    server.stop()


@pytest.fixture
def worker(recorder: Server) -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker(recorder)
    yield process
    if process.poll() is None:
        kill(process)


def start_worker(server: Server) -> subprocess.Popen[bytes]:
    log = open(server.workdir / "worker.log", "ab")  # noqa: SIM115 - the process holds it
    return subprocess.Popen(
        worker_command(),
        env=server.env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill(worker: subprocess.Popen[bytes]) -> None:
    """Kill the worker and everything it started, as a machine going down would."""
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)


class Viewer:
    """A live view's websocket, keeping every message it received."""

    def __init__(self, ws: ClientConnection, display_filter: str) -> None:
        self.ws = ws
        self.display_filter = display_filter
        self.messages: list[dict[str, Any]] = []
        self.reading = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for text in self.ws:
            self.messages.append(json.loads(text))

    def pushed_numbers(self) -> list[int]:
        """Numbers of the rows pushed to this viewer, in order (snapshots are the latest rows again)."""
        return [
            row["number"]
            for message in self.messages
            if message["type"] == "live.rows" and message["filter"] == self.display_filter
            for row in message["rows"]
        ]

    def rows(self) -> dict[int, list[str]]:
        return {
            row["number"]: as_cells(row)
            for message in self.messages
            if message["type"] in ("live.snapshot", "live.rows") and message["filter"] == self.display_filter
            for row in message["rows"]
        }

    def last_status(self) -> dict[str, Any]:
        statuses = [m["status"] for m in self.messages if m["type"] == "live.status"]
        return statuses[-1] if statuses else {}

    async def wait_for(self, test: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not test():
            assert time.monotonic() < deadline, f"{what}: never, {self.messages[-3:]}"
            await asyncio.sleep(0.05)


async def test_a_worker_decodes_the_stream_and_the_next_one_takes_over_when_it_is_killed(
    recorder: Server,
) -> None:
    original = sample_capture("http_espn.pcapng")
    data = original.read_bytes()
    expected = single_pass_rows(original)
    expected_filtered = single_pass_numbers(original, FILTER)
    half = len(data) // 2
    go_on = asyncio.Event()

    async def in_two_halves() -> AsyncIterator[bytes]:
        for start in range(0, half, 20_000):
            yield data[start : min(start + 20_000, half)]
            await asyncio.sleep(0.02)
        await go_on.wait()
        for start in range(half, len(data), 20_000):
            yield data[start : start + 20_000]
            await asyncio.sleep(0.02)

    headers = recorder.owner_headers()
    first_worker = second_worker = None
    async with httpx.AsyncClient(base_url=recorder.url, headers=headers, timeout=120) as client:
        sending = asyncio.create_task(client.put("/api/live/by-worker", content=in_two_halves()))
        live = await asyncio.to_thread(wait_for_live, recorder, "by-worker", "running")
        url = f"ws://127.0.0.1:{recorder.port}/ws/live/{live['id']}/"
        async with (
            connect(url, origin=recorder.url, additional_headers=headers) as plain_ws,
            connect(url, origin=recorder.url, additional_headers=headers) as filtered_ws,
        ):
            plain = Viewer(plain_ws, "")
            filtered = Viewer(filtered_ws, FILTER)
            await filtered_ws.send(json.dumps({"filter": FILTER}))
            # The server records and tells the status, but decodes nothing itself.
            await plain.wait_for(lambda: plain.last_status().get("packets", 0) > 0, "packets counted")
            await asyncio.sleep(1)
            assert plain.rows() == {} and plain.last_status()["decoded"] == 0

            try:
                first_worker = start_worker(recorder)
                await plain.wait_for(
                    lambda: (status := plain.last_status()).get("decoded", 0) > 0 and status["behind"] == 0,
                    "the first half decoded",
                )
                await filtered.wait_for(lambda: len(filtered.rows()) > 0, "filtered rows")
                # Past a push and a report: the recording knows which rows were pushed.
                await asyncio.sleep(1)
                before_kill = len(plain.pushed_numbers())
                kill(first_worker)

                go_on.set()
                await asyncio.sleep(LEASE_SECONDS)
                assert len(plain.pushed_numbers()) == before_kill, "rows pushed with no worker alive"
                second_worker = start_worker(recorder)
                await plain.wait_for(
                    lambda: any(m["type"] == "live.ended" for m in plain.messages), "the end", timeout=120
                )
                await filtered.wait_for(
                    lambda: any(m["type"] == "live.ended" for m in filtered.messages), "the end"
                )
            finally:
                for worker in (first_worker, second_worker):
                    if worker is not None and worker.poll() is None:
                        kill(worker)
        answer = await sending
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "stored"

    # Every row, once, as tshark prints them reading the stream in one pass.
    pushed = plain.pushed_numbers()
    assert len(pushed) > before_kill > 0
    assert [number for number, count in Counter(pushed).items() if count > 1] == []
    rows = plain.rows()
    assert [rows[number] for number in sorted(rows)] == expected
    assert sorted(filtered.rows()) == expected_filtered
    assert plain.messages[-1]["type"] == "live.ended"
    assert plain.messages[-1]["status"]["decoded"] == len(expected)


async def test_a_capture_stored_while_no_worker_ran_is_stored_whole(recorder: Server) -> None:
    original = sample_capture("dns-udp.pcap")
    headers = recorder.owner_headers()
    async with httpx.AsyncClient(base_url=recorder.url, headers=headers, timeout=60) as client:
        answer = await client.put("/api/live/no-worker", content=original.read_bytes())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "stored"
    capture = httpx.get(f"{recorder.url}/api/captures/{body['capture']}/", headers=headers).json()
    assert capture["size"] == original.stat().st_size


async def test_a_worker_decodes_a_ring_buffer_of_a_server_interface_and_lets_its_files_go(
    recorder: Server,
    worker: subprocess.Popen[bytes],
    web_server: int,  # noqa: F811
) -> None:
    client = live_capture.signed_in(recorder, STAFF)
    answer = live_capture.start(
        client, interface="lo", filter=f"tcp port {web_server}", ring_files="2", ring_kilobytes="16"
    )
    live_id = live_capture.live_id_of(answer)
    url = f"ws://127.0.0.1:{recorder.port}/ws/live/{live_id}/"
    headers = {"Authorization": f"Token {recorder.token(STAFF)}"}
    async with connect(url, origin=recorder.url, additional_headers=headers) as ws:
        viewer = Viewer(ws, "")
        await viewer.wait_for(lambda: viewer.last_status().get("seconds", 0) > 0, "the status")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_server}") as web:
            # Less than a file of the ring, until the worker decodes: files dropped from the
            # ring before a worker takes the capture are not shown live.
            for index in range(5):
                await web.get(f"/page{index}.txt")
            await viewer.wait_for(lambda: viewer.last_status().get("decoded", 0) > 0, "a worker decoding")
            for index in range(5, 80):
                await web.get(f"/page{index % 50}.txt")
        # Behind counts only the packets the recording has received: dumpcap hands them over
        # a few times a second, so the stop may come before several files of them reach the
        # recording. The worker reads those files after the end, before they are let go.
        await viewer.wait_for(lambda: viewer.last_status().get("behind", 1) == 0, "all decoded")
        await asyncio.to_thread(live_capture.post_form, client, f"/live/{live_id}/stop/")
        await viewer.wait_for(lambda: viewer.messages[-1]["type"] == "live.ended", "the end")
    ended = viewer.messages[-1]
    assert ended["state"] == "stored", ended
    assert ended["message"] == "stopped; the ring buffer kept the last 2 files"
    # Every row once, though the files of the first ones were dropped from the ring.
    recorded = ended["status"]["packets"]
    assert sorted(viewer.pushed_numbers()) == list(range(1, recorded + 1))
    assert recorded > 100
    staging = recorder.captures_dir / ".staging"
    assert not [path for path in staging.iterdir() if path.name.startswith("live-")]
    client.close()
