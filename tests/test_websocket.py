"""The load websocket: progress, provisional first rows, then the total once sharkd has the file."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from explorer.engine.sharkd import SharkdProcess

from .conftest import Server, sample_capture, tshark_rows, upload

pytestmark = pytest.mark.engine

# progress*, rows?, progress*, done: sharkd keeps loading (and reporting) after the first rows.
ORDER = re.compile(r"(P)*(R)?(P)*(D)")
LETTERS = {"load.progress": "P", "load.rows": "R", "load.done": "D", "load.failed": "F"}


def ws_url(server: Server, capture_id: int | str) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/captures/{capture_id}/"


def stored_files(server: Server) -> set[Path]:
    if not server.captures_dir.exists():  # created by the first upload
        return set()
    return {path for path in server.captures_dir.iterdir() if path.is_file()}


def fresh_capture(api: httpx.Client, name: str) -> dict[str, Any]:
    response = upload(api, sample_capture(name))
    assert response.status_code == 201, response.text
    capture: dict[str, Any] = response.json()["captures"][0]
    return capture


async def receive_until_finished(
    ws: ClientConnection, timeout: float = 120, messages: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Collect messages (into `messages` when given) until load.done or load.failed."""
    messages = [] if messages is None else messages
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            messages.append(message)
            if message["type"] in ("load.done", "load.failed"):
                return messages


async def load_messages(server: Server, capture_id: int) -> list[dict[str, Any]]:
    async with connect(
        ws_url(server, capture_id), origin=server.url, additional_headers=server.owner_headers()
    ) as ws:
        return await receive_until_finished(ws)


def check_order(messages: list[dict[str, Any]]) -> str:
    sequence = "".join(LETTERS[message["type"]] for message in messages)
    assert ORDER.fullmatch(sequence), sequence
    return sequence


@pytest.mark.parametrize("name", ["http_google.pcapng", "tcp-handshake-nano.pcap", "smb3_multichannel.pcap"])
async def test_load_done_carries_tsharks_packet_count(api: httpx.Client, server: Server, name: str) -> None:
    capture = fresh_capture(api, name)
    assert capture["status"] == "stored"
    messages = await load_messages(server, capture["id"])
    check_order(messages)
    assert messages[-1] == {"type": "load.done", "total": len(tshark_rows(sample_capture(name)))}
    assert messages[-1]["total"] == capture["packets"]
    assert api.get(f"/api/captures/{capture['id']}/").json()["status"] == "ready"


async def test_progress_and_first_rows_describe_the_file(api: httpx.Client, server: Server) -> None:
    name = "smb3_multichannel.pcap"
    capture = fresh_capture(api, name)
    messages = await load_messages(server, capture["id"])
    check_order(messages)

    progress = [m for m in messages if m["type"] == "load.progress"]
    # The first progress report is sent as soon as sharkd starts, before it can have loaded.
    assert progress, [m["type"] for m in messages]
    for report in progress:
        assert set(report) == {"type", "bytes_read", "file_size"}
        assert report["file_size"] == capture["size"] == sample_capture(name).stat().st_size
        assert 0 <= report["bytes_read"] <= report["file_size"]
    reads = [report["bytes_read"] for report in progress]
    assert reads == sorted(reads)

    rows = [m for m in messages if m["type"] == "load.rows"]
    assert len(rows) <= 1
    if rows:
        (first,) = rows
        assert first["provisional"] is True
        assert first["total"] == capture["packets"]
        packets = first["packets"]
        assert packets, first
        assert [row["number"] for row in packets] == list(range(1, len(packets) + 1))
        expected = tshark_rows(sample_capture(name))[: len(packets)]
        assert [[str(row["number"]), row["time"], str(row["length"])] for row in packets] == [
            [want[0], want[1], want[5]] for want in expected
        ]


async def test_a_loaded_capture_is_done_at_once(api: httpx.Client, server: Server) -> None:
    capture = fresh_capture(api, "dns-tcp.pcap")
    first = await load_messages(server, capture["id"])
    assert first[-1] == {"type": "load.done", "total": 20}

    started = time.monotonic()
    again = await load_messages(server, capture["id"])
    elapsed = time.monotonic() - started
    assert again == [{"type": "load.done", "total": 20}]
    assert elapsed < 2, elapsed


async def test_two_clients_following_one_load_both_get_done(api: httpx.Client, server: Server) -> None:
    capture = fresh_capture(api, "http_espn.pcapng")
    one, two = await asyncio.gather(
        load_messages(server, capture["id"]), load_messages(server, capture["id"])
    )
    for messages in (one, two):
        check_order(messages)
        assert messages[-1] == {"type": "load.done", "total": capture["packets"]}


async def test_an_unknown_capture_is_refused(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            ws_url(server, 987654321), origin=server.url, additional_headers=server.owner_headers()
        ) as ws:
            await ws.recv()
    assert refused.value.response.status_code == 403


async def test_a_foreign_origin_is_refused(api: httpx.Client, server: Server) -> None:
    capture = fresh_capture(api, "arp_resolution.pcapng")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            ws_url(server, capture["id"]),
            origin="http://evil.example",
            additional_headers=server.owner_headers(),
        ) as ws:
            await ws.recv()
    assert refused.value.response.status_code == 403


async def test_a_capture_whose_file_vanished_reports_load_failed(api: httpx.Client, server: Server) -> None:
    before = stored_files(server)
    capture = fresh_capture(api, "icmp_echo.pcapng")
    (stored,) = stored_files(server) - before
    stored.unlink()  # sharkd will fail to load it: "Unable to open the file"
    messages: list[dict[str, Any]] = []
    try:
        try:
            async with connect(
                ws_url(server, capture["id"]), origin=server.url, additional_headers=server.owner_headers()
            ) as ws:
                await receive_until_finished(ws, timeout=15, messages=messages)
        except TimeoutError:
            pass
        try:
            page = httpx.get(
                f"{server.url}/api/captures/{capture['id']}/packets",
                timeout=15,
                headers=server.owner_headers(),
            )
            answer = f"{page.status_code} {page.text}"
        except httpx.TimeoutException:
            page, answer = None, "no answer within 15 s"
    finally:
        api.delete(f"/api/captures/{capture['id']}/")
    types = [message["type"] for message in messages]
    hang = (
        "APP BUG: when sharkd fails to load a capture, CaptureSessions._spawn().start() kills the "
        "process but tests `process.alive` before the kill is reaped, so the dead process stays in "
        "`processes` and wait_loaded() polls forever (unless a poll happens to fall between "
        "loaded.set() and the reaping). "
    )
    assert types and types[-1] == "load.failed", (
        hang + f"The websocket sent {len(types)} messages in 15 s and no load.failed: last {types[-3:]}"
    )
    assert isinstance(messages[-1]["error"], str) and messages[-1]["error"]
    assert page is not None and page.status_code == 400, hang + f"GET packets: {answer}"
    assert page.json()["error"]


async def test_progress_counts_the_captures_bytes_not_sharkds_start_up_reads() -> None:
    path = sample_capture("dns-udp.pcap")  # 856 bytes
    process = SharkdProcess(path)
    await process.start()
    try:
        assert process.alive and process.status["frames"] == 5
        read = process.bytes_read()
    finally:
        await process.close()
    assert read <= path.stat().st_size + 64 * 1024, (
        f"APP BUG: SharkdProcess.bytes_read() says sharkd read {read} bytes of an 856-byte capture. "
        "It reports /proc/<pid>/io rchar, which counts every read() of the process, including the "
        "~8.7 MB sharkd reads at start-up (/usr/share/wireshark/manuf twice, enterprises.tsv, "
        "services...). load.progress is capped at the file size, so for any capture under ~9 MB "
        "the bar shows 100% at once, and larger ones are overstated by ~9 MB"
    )
