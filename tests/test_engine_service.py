"""A server whose sharkd sessions live in `manage.py run_engine` (ENGINE_URL), shared by several servers."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from explorer.engine import wire

from .conftest import (
    OWNER,
    EngineService,
    Server,
    commands_of,
    sample_capture,
    tshark_numbers,
    tshark_rows,
    upload,
)

pytestmark = pytest.mark.engine

SOURCE = "http_espn.pcapng"
COLUMNS = ["number", "time", "source", "destination", "protocol", "length", "info"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EngineService, Server]]:
    workdir = tmp_path_factory.mktemp("engine-service")
    captures = str(workdir / "captures")
    engine = EngineService(workdir, CAPTURES_DIR=captures)
    engine.start()
    server = Server(workdir, CAPTURES_DIR=captures, ENGINE_URL=engine.url)
    server.start()
    yield engine, server
    server.stop()
    engine.stop()


@pytest.fixture(scope="module")
def client(deployment: tuple[EngineService, Server]) -> Iterator[httpx.Client]:
    with deployment[1].client(OWNER) as client:
        yield client


@pytest.fixture(scope="module")
def capture_id(client: httpx.Client) -> int:
    stored = upload(client, sample_capture(SOURCE))
    assert stored.status_code == 201, stored.text
    return int(stored.json()["id"])


def all_rows(client: httpx.Client, capture_id: int) -> list[list[str]]:
    shown: list[list[str]] = []
    while True:
        page = client.get(f"/api/captures/{capture_id}/packets", params={"offset": len(shown), "limit": 300})
        assert page.status_code == 200, page.text
        rows = page.json()["packets"]
        if not rows:
            return shown
        shown += [[str(row[column]) for column in COLUMNS] for row in rows]


def test_pages_filters_and_details_come_from_sessions_of_the_service_alone(
    deployment: tuple[EngineService, Server], client: httpx.Client, capture_id: int
) -> None:
    engine, server = deployment
    path = sample_capture(SOURCE)
    assert all_rows(client, capture_id) == tshark_rows(path)

    query = {"filter": "http.request", "limit": 500}
    filtered = client.get(f"/api/captures/{capture_id}/packets", params=query)
    assert filtered.status_code == 200, filtered.text
    numbers = [row["number"] for row in filtered.json()["packets"]]
    assert numbers == tshark_numbers(path, "http.request") and numbers

    detail = client.get(f"/api/captures/{capture_id}/packets/{numbers[0]}/")
    assert detail.status_code == 200, detail.text
    assert detail.json()["tree"][0]["label"].startswith(f"Frame {numbers[0]}:")

    described = client.get(f"/api/captures/{capture_id}/").json()
    assert described["status"] == "ready" and described["engine_sessions"] >= 1
    assert "sharkd" in commands_of(engine.children())
    assert "sharkd" not in commands_of(server.children())


def test_a_bad_filter_gets_the_parsers_message(client: httpx.Client, capture_id: int) -> None:
    refused = client.get(f"/api/captures/{capture_id}/packets", params={"filter": "tcp.port =="})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "Unexpected end of filter expression."


async def test_the_load_websocket_reports_through_the_service(
    deployment: tuple[EngineService, Server], capture_id: int
) -> None:
    _, server = deployment
    url = f"ws://127.0.0.1:{server.port}/ws/captures/{capture_id}/"
    async with connect(url, origin=server.url, additional_headers=server.owner_headers()) as ws:
        async with asyncio.timeout(30):
            while (message := json.loads(await ws.recv()))["type"] != "load.done":
                assert message["type"] != "load.failed", message
    assert message["total"] == len(tshark_rows(sample_capture(SOURCE)))


def engine_client(engine: EngineService) -> socket.socket:
    port = int(engine.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def exchange(connection: socket.socket, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    """Send messages, one per line; return as many answers."""
    connection.sendall(b"".join(wire.encode(message) for message in messages))
    reader = connection.makefile("rb")
    return [json.loads(reader.readline() or b"{}") for _ in messages]


def test_the_service_refuses_a_client_without_the_deployments_key(
    deployment: tuple[EngineService, Server],
) -> None:
    with engine_client(deployment[0]) as connection:
        (answer,) = exchange(connection, {"hello": "0" * 64})
        assert answer["error"]["message"] == "wrong engine key"
        assert connection.recv(1) == b""  # and hangs up


def test_the_service_opens_only_files_of_the_capture_folder(
    deployment: tuple[EngineService, Server], capture_id: int
) -> None:
    engine, _ = deployment
    folder = engine.env["CAPTURES_DIR"]
    with engine_client(engine) as connection:
        welcome, *answers = exchange(
            connection,
            {"hello": wire.service_key()},
            {"id": 1, "op": "call", "path": "/etc/passwd", "method": "status"},
            {"id": 2, "op": "call", "path": f"{folder}/../engine.log", "method": "status"},
            {"id": 3, "op": "call", "path": "captures/x.pcap", "method": "status"},
        )
    assert welcome["result"] == "welcome"
    for answer in answers:
        assert answer["error"]["message"] == "the engine only opens files of the capture folder"


def test_a_service_restart_fails_requests_clearly_then_they_work_again(
    deployment: tuple[EngineService, Server], client: httpx.Client, capture_id: int
) -> None:
    engine, server = deployment
    sessions = engine.children()
    engine.stop(signal.SIGKILL)
    try:
        page = client.get(f"/api/captures/{capture_id}/packets", params={"offset": 500, "limit": 5})
        assert page.status_code == 503, page.text
        assert page.json()["error"] == "the engine service is not reachable; try again in a moment"
        # The server is up and lists the capture, which no session holds now.
        listed = client.get("/api/captures/")
        assert listed.status_code == 200 and listed.json()[0]["status"] == "stored"
        # Its sharkd processes read their end of the pipe and leave with it.
        deadline = time.monotonic() + 10
        while commands_of(sessions) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert commands_of(sessions) == []
    finally:
        engine.start()
    page = client.get(f"/api/captures/{capture_id}/packets", params={"offset": 500, "limit": 5})
    assert page.status_code == 200, page.text
    expected = tshark_rows(sample_capture(SOURCE))[500:505]
    assert [[str(row[column]) for column in COLUMNS] for row in page.json()["packets"]] == expected
    assert "sharkd" not in commands_of(server.children())
