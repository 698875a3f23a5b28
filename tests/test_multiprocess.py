"""Two server processes on one PostgreSQL, Redis, capture folder and engine service, as in production."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import (
    EngineService,
    Server,
    children_of,
    commands_of,
    sample_capture,
    tshark_numbers,
    tshark_rows,
    upload,
)
from .services import PostgresServer, RedisServer

pytestmark = [pytest.mark.services, pytest.mark.engine]

SOURCE = "http_espn.pcapng"
COLUMNS = ["number", "time", "source", "destination", "protocol", "length", "info"]
UPLOADS_PER_HOUR = 6
UPLOADER = "uploader"


def running_pair(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    name: str,
    **env: str,
) -> Iterator[tuple[Server, Server]]:
    """Run two daphne processes sharing a new database, a Redis database, a capture folder and
    the engine service (`Server.engine` of both)."""
    shared_dir = tmp_path_factory.mktemp(f"{name}-shared")
    shared = {
        "DATABASE_URL": postgres_server.create_database(name),
        "REDIS_URL": redis_server.new_database_url(),
        "CAPTURES_DIR": str(shared_dir / "captures"),
        **env,
    }
    engine = EngineService(shared_dir, **shared)
    engine.start()
    first = Server(tmp_path_factory.mktemp(f"{name}-first"), **shared, ENGINE_URL=engine.url)
    second = Server(tmp_path_factory.mktemp(f"{name}-second"), **shared, ENGINE_URL=engine.url)
    first.engine = second.engine = engine
    try:
        first.start()
        try:
            second.start(new_database=False)
            yield first, second
        finally:
            second.stop()
            first.stop()
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[tuple[Server, Server]]:
    """Two daphne processes sharing the database, the Redis database and the capture folder."""
    yield from running_pair(
        tmp_path_factory, postgres_server, redis_server, "pair", RATE_LIMIT_UPLOADS=f"{UPLOADS_PER_HOUR}/3600"
    )


@pytest.fixture(scope="module")
def clients(pair: tuple[Server, Server]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """The owner's API clients of the first and the second server (one token works on both)."""
    first, second = pair
    headers = first.owner_headers()
    with (
        httpx.Client(base_url=first.url, timeout=120, headers=headers) as through_first,
        httpx.Client(base_url=second.url, timeout=120, headers=headers) as through_second,
    ):
        yield through_first, through_second


def as_columns(row: dict[str, Any]) -> list[str]:
    return [str(row[column]) for column in COLUMNS]


def test_both_servers_use_postgresql_and_redis(pair: tuple[Server, Server]) -> None:
    code = (
        "from django.conf import settings\n"
        "from django.db import connection\n"
        "print(connection.vendor)\n"
        "print(settings.CHANNEL_LAYERS['default']['BACKEND'])\n"
        "print(settings.CACHES['default']['BACKEND'])\n"
    )
    for server in pair:
        answer = server.manage("shell", "-v", "0", "-c", code)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.split() == [
            "postgresql",
            "channels_redis.core.RedisChannelLayer",
            "django.core.cache.backends.redis.RedisCache",
        ]


def test_an_upload_through_one_is_listed_paged_and_filtered_through_the_other(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    through_first, through_second = clients
    path = sample_capture(SOURCE)
    stored = upload(through_first, path)
    assert stored.status_code == 201, stored.text
    capture_id = stored.json()["id"]

    listed = through_second.get("/api/captures/")
    assert listed.status_code == 200, listed.text
    assert capture_id in [capture["id"] for capture in listed.json()]

    expected = tshark_rows(path)
    shown: list[list[str]] = []
    for offset in range(0, len(expected), 100):
        page = through_second.get(
            f"/api/captures/{capture_id}/packets", params={"offset": offset, "limit": 100}
        )
        assert page.status_code == 200, page.text
        assert page.json()["total"] == len(expected)
        shown += [as_columns(row) for row in page.json()["packets"]]
    assert shown == expected

    filtered = through_second.get(
        f"/api/captures/{capture_id}/packets", params={"filter": "http.request", "limit": 1000}
    )
    assert filtered.status_code == 200, filtered.text
    numbers = [row["number"] for row in filtered.json()["packets"]]
    assert numbers == tshark_numbers(path, "http.request") and numbers

    detail = through_second.get(f"/api/captures/{capture_id}/packets/{numbers[0]}/")
    assert detail.status_code == 200, detail.text
    assert detail.json()["tree"][0]["label"].startswith(f"Frame {numbers[0]}:")


def sharkd_processes(pid: int) -> int:
    return commands_of(children_of(pid)).count("sharkd")


def test_the_capture_is_loaded_once_for_both_servers(
    pair: tuple[Server, Server], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    first, second = pair
    through_first, through_second = clients
    stored = upload(through_first, sample_capture("dns-udp.pcap"))
    assert stored.status_code == 201, stored.text
    capture_id = stored.json()["id"]
    pages = [
        client.get(f"/api/captures/{capture_id}/packets", params={"filter": "dns.flags.response == 1"})
        for client in (through_first, through_second)
    ]
    assert pages[0].status_code == 200 and pages[0].json() == pages[1].json()
    # Both servers see the one session of the engine service; neither started a sharkd.
    states = [client.get(f"/api/captures/{capture_id}/").json() for client in clients]
    assert [s["status"] for s in states] == ["ready", "ready"]
    assert states[0]["engine_sessions"] == states[1]["engine_sessions"] == 1
    assert first.engine is not None and first.engine.process is not None
    assert sharkd_processes(first.engine.process.pid) >= 2  # the capture's and the filter checker's
    for server in pair:
        assert server.process is not None
        assert sharkd_processes(server.process.pid) == 0


async def next_event(ws: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    """Return the next message of this type, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return dict(message)


async def presence_of(ws: ClientConnection, count: int, timeout: float = 10) -> dict[str, Any]:
    """Return the first presence message listing `count` viewers."""
    while True:
        message = await next_event(ws, "presence", timeout)
        if len(message["viewers"]) == count:
            return message


async def test_a_viewer_of_one_sees_the_viewers_and_annotations_of_the_other(
    pair: tuple[Server, Server], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    first, second = pair
    through_first, _ = clients
    stored = await asyncio.to_thread(upload, through_first, sample_capture("http_google.pcapng"))
    assert stored.status_code == 201, stored.text
    capture_id = stored.json()["id"]
    headers = first.owner_headers()
    path = f"/ws/captures/{capture_id}/live/"
    async with connect(
        f"ws://127.0.0.1:{second.port}{path}", origin=second.url, additional_headers=headers
    ) as on_second:
        await presence_of(on_second, 1)
        async with connect(
            f"ws://127.0.0.1:{first.port}{path}", origin=first.url, additional_headers=headers
        ) as on_first:
            # Presence goes through the channel layer: each sees the viewer of the other process.
            seen_on_second = await presence_of(on_second, 2)
            seen_on_first = await presence_of(on_first, 2)
            assert {v["id"] for v in seen_on_second["viewers"]} == {v["id"] for v in seen_on_first["viewers"]}

            answer = await asyncio.to_thread(
                through_first.post,
                f"/api/captures/{capture_id}/annotations",
                json={"frame": 3, "text": "Written through the first server"},
            )
            assert answer.status_code == 201, answer.text
            pushed = await next_event(on_second, "annotation.created")
            assert pushed["annotation"] == answer.json()

            await asyncio.to_thread(through_first.put, f"/api/captures/{capture_id}/marks/5")
            assert (await next_event(on_second, "marks.changed"))["frames"] == [5]
        await presence_of(on_second, 1)


async def test_viewers_of_both_processes_all_see_each_other_come_and_go(
    pair: tuple[Server, Server], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    # One connection of each process answers a newcomer for all of that process's viewers.
    first, second = pair
    stored = await asyncio.to_thread(upload, clients[0], sample_capture("dns-udp.pcap"))
    assert stored.status_code == 201, stored.text
    path = f"/ws/captures/{stored.json()['id']}/live/"
    headers = first.owner_headers()
    async with contextlib.AsyncExitStack() as stack:
        sockets: list[ClientConnection] = []
        for server in (first, second, first, second, second, first):
            url = f"ws://127.0.0.1:{server.port}{path}"
            sockets.append(
                await stack.enter_async_context(connect(url, origin=server.url, additional_headers=headers))
            )
            lists = await asyncio.gather(*(presence_of(ws, len(sockets)) for ws in sockets))
        everyone = {v["id"] for v in lists[0]["viewers"]}
        assert all({v["id"] for v in message["viewers"]} == everyone for message in lists)
        # Two leave, one of each process.
        for leaving in (sockets[0], sockets[1]):
            await leaving.close()
        remaining = sockets[2:]
        lists = await asyncio.gather(*(presence_of(ws, 4) for ws in remaining))
        ids = [{v["id"] for v in message["viewers"]} for message in lists]
        assert all(found == ids[0] for found in ids) and ids[0] < everyone
        # A newcomer on each process is answered by the connections still there.
        for server in (first, second):
            url = f"ws://127.0.0.1:{server.port}{path}"
            remaining.append(
                await stack.enter_async_context(connect(url, origin=server.url, additional_headers=headers))
            )
        lists = await asyncio.gather(*(presence_of(ws, 6) for ws in remaining))
        assert len({frozenset(v["id"] for v in message["viewers"]) for message in lists}) == 1


async def test_viewers_of_a_live_process_stay_listed_and_those_of_a_dead_one_are_dropped(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    # Each process repeats its viewers every second here; those unheard of for 2.5 s go.
    pair = running_pair(
        tmp_path_factory, postgres_server, redis_server, "presence", PRESENCE_INTERVAL_SECONDS="1"
    )
    first, second = next(pair)
    try:
        with httpx.Client(base_url=first.url, timeout=120, headers=first.owner_headers()) as client:
            stored = await asyncio.to_thread(upload, client, sample_capture("dns-udp.pcap"))
        assert stored.status_code == 201, stored.text
        path = f"/ws/captures/{stored.json()['id']}/live/"
        headers = first.owner_headers()
        async with contextlib.AsyncExitStack() as stack:
            sockets = []
            for server in (first, first, second):
                url = f"ws://127.0.0.1:{server.port}{path}"
                socket = connect(url, origin=server.url, additional_headers=headers)
                sockets.append(await stack.enter_async_context(socket))
            await asyncio.gather(*(presence_of(ws, 3) for ws in sockets))
            # Four intervals, past the expiry: nobody of a process alive is dropped meanwhile.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(4):
                    while True:
                        message = await next_event(sockets[0], "presence", 5)
                        assert len(message["viewers"]) == 3, message
            # The second process dies without a word: its viewer leaves the first's lists.
            assert second.process is not None
            os.killpg(second.process.pid, signal.SIGKILL)
            lists = await asyncio.gather(*(presence_of(ws, 2) for ws in sockets[:2]))
            assert {v["id"] for v in lists[0]["viewers"]} == {v["id"] for v in lists[1]["viewers"]}
    finally:
        pair.close()


def test_the_upload_rate_limit_counts_the_requests_of_both_servers(pair: tuple[Server, Server]) -> None:
    first, second = pair
    first.create_user(UPLOADER)
    token = first.token(UPLOADER)
    headers = {"Authorization": f"Token {token}"}
    path = sample_capture("dns-udp.pcap")
    with (
        httpx.Client(base_url=first.url, timeout=120, headers=headers) as through_first,
        httpx.Client(base_url=second.url, timeout=120, headers=headers) as through_second,
    ):
        # Half of the allowance through each server: neither alone has reached the limit.
        for index in range(UPLOADS_PER_HOUR):
            client = through_first if index % 2 == 0 else through_second
            assert upload(client, path).status_code == 201
        refused = upload(through_second, path)
        assert refused.status_code == 429, refused.text
        assert upload(through_first, path).status_code == 429
    listed = httpx.get(f"{second.url}/api/captures/", params={"owner": UPLOADER}, headers=headers).json()
    assert len(listed) == UPLOADS_PER_HOUR


# The channel layer waits for messages in blocking reads of this long (channels_redis).
BLOCKING_READ_S = 5


async def test_a_viewer_idle_through_several_blocking_reads_still_gets_pushes(
    pair: tuple[Server, Server], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    first, second = pair
    through_first, _ = clients
    stored = await asyncio.to_thread(upload, through_first, sample_capture("dns-udp.pcap"))
    assert stored.status_code == 201, stored.text
    capture_id = stored.json()["id"]
    url = f"ws://127.0.0.1:{second.port}/ws/captures/{capture_id}/live/"
    async with connect(url, origin=second.url, additional_headers=first.owner_headers()) as idle:
        await presence_of(idle, 1)
        await asyncio.sleep(2.5 * BLOCKING_READ_S)
        answer = await asyncio.to_thread(
            through_first.post, f"/api/captures/{capture_id}/annotations", json={"frame": 1, "text": "Later"}
        )
        assert answer.status_code == 201, answer.text
        assert (await next_event(idle, "annotation.created"))["annotation"] == answer.json()


VIEWERS = 50


async def test_fifty_viewers_of_one_capture_all_stay_connected_and_see_each_other(
    pair: tuple[Server, Server], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    # Each new viewer is answered by every other at once, and over Redis all the connections
    # of a process share one channel: its capacity must hold VIEWERS² presence messages.
    first, _ = pair
    through_first, _ = clients
    stored = await asyncio.to_thread(upload, through_first, sample_capture("dns-udp.pcap"))
    assert stored.status_code == 201, stored.text
    url = f"ws://127.0.0.1:{first.port}/ws/captures/{stored.json()['id']}/live/"
    headers = first.owner_headers()
    async with contextlib.AsyncExitStack() as stack:
        sockets = await asyncio.gather(
            *(
                stack.enter_async_context(connect(url, origin=first.url, additional_headers=headers))
                for _ in range(VIEWERS)
            )
        )
        seen = await asyncio.gather(*(presence_lists_until(ws, VIEWERS) for ws in sockets))
        assert all(len({v["id"] for v in lists[-1]["viewers"]}) == VIEWERS for lists in seen)
        # Each tab hears of every other, but pushes its list only now and then: pushed at
        # every one, the lists would number VIEWERS².
        pushed = sum(len(lists) for lists in seen)
        assert pushed < VIEWERS**2 / 4, pushed


async def presence_lists_until(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """Return every presence message up to the first listing `count` viewers."""
    lists = []
    while not lists or len(lists[-1]["viewers"]) < count:
        lists.append(await next_event(ws, "presence", 60))
    return lists
