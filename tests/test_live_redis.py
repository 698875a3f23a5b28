"""Live captures across two server processes sharing PostgreSQL, Redis and the capture folder."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from .conftest import PASSWORD, Server, sample_capture
from .services import PostgresServer, RedisServer
from .test_live_stream import single_pass_rows
from .test_multiprocess import running_pair

pytestmark = [pytest.mark.services, pytest.mark.engine]

COLUMNS = ["number", "time", "source", "destination", "protocol", "length", "info"]


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[tuple[Server, Server]]:
    """Two daphne processes sharing the database, the Redis database and the capture folder."""
    yield from running_pair(tmp_path_factory, postgres_server, redis_server, "livepair")


def wait_for_live(server: Server, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(server.url + "/api/live/", headers=server.owner_headers(), timeout=30)
        for live in answer.json()["live_captures"]:
            if live["name"] == name and live["state"] == state:
                return dict(live)
        time.sleep(0.1)
    raise AssertionError(f"no live capture {name} {state}")


async def test_a_viewer_of_one_process_sees_a_stream_received_by_the_other(
    pair: tuple[Server, Server],
) -> None:
    first, second = pair
    original = sample_capture("http_espn.pcapng")
    data = original.read_bytes()

    async def slowly() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 20_000):
            yield data[start : start + 20_000]
            await asyncio.sleep(0.05)

    headers = first.owner_headers()
    async with httpx.AsyncClient(base_url=second.url, headers=headers, timeout=120) as client:
        sending = asyncio.create_task(client.put("/api/live/across", content=slowly()))
        live = await asyncio.to_thread(wait_for_live, first, "across", "running")
        messages: list[dict[str, Any]] = []
        url = f"ws://127.0.0.1:{first.port}/ws/live/{live['id']}/"
        async with connect(url, origin=first.url, additional_headers=headers) as ws:
            async with asyncio.timeout(120):
                while not messages or messages[-1]["type"] != "live.ended":
                    messages.append(json.loads(await ws.recv()))
        answer = await sending
    assert answer.status_code == 200, answer.text
    rows: dict[int, list[str]] = {}
    for message in messages:
        if message["type"] in ("live.snapshot", "live.rows"):
            for row in message["rows"]:
                rows[row["number"]] = [str(row[column]) for column in COLUMNS]
    assert len([m for m in messages if m["type"] == "live.rows"]) > 3
    assert [rows[number] for number in sorted(rows)] == single_pass_rows(original)
    assert messages[-1]["state"] == "stored"


async def test_a_stop_on_one_process_ends_a_stream_received_by_the_other(pair: tuple[Server, Server]) -> None:
    first, second = pair
    data = sample_capture("bro.org.pcap").read_bytes()
    sent = 200_000
    release = asyncio.Event()

    async def half_then_wait() -> AsyncIterator[bytes]:
        yield data[:sent]
        await release.wait()

    headers = first.owner_headers()
    async with httpx.AsyncClient(base_url=second.url, headers=headers, timeout=120) as client:
        sending = asyncio.create_task(client.put("/api/live/stopped-across", content=half_then_wait()))
        live = await asyncio.to_thread(wait_for_live, first, "stopped-across", "running")
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=first.url, timeout=60) as browser:
            await browser.get("/accounts/login/")
            await browser.post(
                "/accounts/login/",
                data={
                    "username": "owner",
                    "password": PASSWORD,
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                },
                headers={"Referer": first.url + "/accounts/login/"},
            )
            await browser.get(f"/live/{live['id']}/")
            stop = await browser.post(
                f"/live/{live['id']}/stop/",
                data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                headers={"Referer": first.url + f"/live/{live['id']}/"},
            )
            assert stop.status_code == 302
        # The client reads the answer once it has sent its body (or the server closed the connection).
        release.set()
        answer = await asyncio.wait_for(sending, 60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "stored" and body["message"] == "stopped"
    capture = httpx.get(f"{first.url}/api/captures/{body['capture']}/", headers=headers).json()
    assert 0 < capture["size"] <= sent
    assert capture["sha256"] == hashlib.sha256(data[: capture["size"]]).hexdigest()
