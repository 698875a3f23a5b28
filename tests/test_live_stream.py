"""Remote live captures: a pcap streamed to /api/live/<name>, watched live, stored when it ends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from .conftest import (
    COLUMN_FIELDS,
    OWNER,
    TEST_UPLOAD_LIMIT_MB,
    Server,
    all_packets,
    sample_capture,
    tshark_rows,
)

pytestmark = pytest.mark.engine

COLUMNS = ["number", "time", "source", "destination", "protocol", "length", "info"]


def single_pass_rows(path: Path) -> list[list[str]]:
    """Return tshark's one-pass packet list: what a decoder reading the stream as it comes can print."""
    args = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=/t"]
    for field in COLUMN_FIELDS:
        args += ["-e", field]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, errors="replace").stdout
    return [line.split("\t", 6) for line in out.splitlines() if line]


def as_cells(row: dict[str, Any]) -> list[str]:
    return [str(row[column]) for column in COLUMNS]


def live_captures(server: Server) -> list[dict[str, Any]]:
    answer = httpx.get(server.url + "/api/live/", headers=server.owner_headers(), timeout=30)
    assert answer.status_code == 200, answer.text
    captures: list[dict[str, Any]] = answer.json()["live_captures"]
    return captures


def wait_for_live(server: Server, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for live in live_captures(server):
            if live["name"] == name and live["state"] == state:
                return live
        time.sleep(0.1)
    raise AssertionError(f"no live capture {name} {state}: {live_captures(server)}")


async def chunks_of(data: bytes, size: int, pause: float) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(pause)


async def watch(server: Server, live_id: int, messages: list[dict[str, Any]]) -> None:
    """Collect a viewer's messages until the live capture ends."""
    url = f"ws://127.0.0.1:{server.port}/ws/live/{live_id}/"
    async with connect(url, origin=server.url, additional_headers=server.owner_headers()) as ws:
        async with asyncio.timeout(120):
            while True:
                message = json.loads(await ws.recv())
                messages.append(message)
                if message["type"] == "live.ended":
                    return


def rows_seen(messages: list[dict[str, Any]]) -> dict[int, list[str]]:
    rows: dict[int, list[str]] = {}
    for message in messages:
        if message["type"] in ("live.snapshot", "live.rows") and message["filter"] == "":
            for row in message["rows"]:
                rows[row["number"]] = as_cells(row)
    return rows


async def test_it_shows_a_stream_live_and_stores_every_packet(server: Server, api: httpx.Client) -> None:
    original = sample_capture("http_espn.pcapng")
    data = original.read_bytes()
    async with httpx.AsyncClient(base_url=server.url, headers=server.owner_headers(), timeout=120) as client:
        sending = asyncio.create_task(
            client.put("/api/live/espn-stream", content=chunks_of(data, 20_000, 0.05))
        )
        live = await asyncio.to_thread(wait_for_live, server, "espn-stream", "running")
        messages: list[dict[str, Any]] = []
        await watch(server, live["id"], messages)
        answer = await sending
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "stored"
    capture = api.get(f"/api/captures/{body['capture']}/").json()
    # The stream was whole: the stored file is the sent file, byte for byte.
    assert capture["sha256"] == hashlib.sha256(data).hexdigest()
    assert capture["packets"] == 956
    # The viewer saw rows arrive while the stream ran, not all at the end.
    batches = [m for m in messages if m["type"] == "live.rows"]
    assert len(batches) > 3
    seen = rows_seen(messages)
    assert sorted(seen) == list(range(1, 957))
    expected = single_pass_rows(original)
    assert [seen[number] for number in sorted(seen)] == expected
    ended = messages[-1]
    assert ended["state"] == "stored" and ended["capture_url"] == f"/captures/{body['capture']}/"
    # The stored capture is an ordinary one: its packet list is tshark's two-pass list.
    stored = all_packets(api, body["capture"])
    assert [as_cells(row) for row in stored] == tshark_rows(original)


def raw_put(server: Server, name: str, chunks: list[bytes], token: str) -> socket.socket:
    """Send a chunked PUT of these chunks without ending it; return the open socket."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"PUT /api/live/{name} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Token {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sock.sendall(head.encode())
    for chunk in chunks:
        sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    return sock


def test_it_keeps_the_whole_packets_of_a_stream_cut_mid_packet(
    server: Server, api: httpx.Client, tmp_path: Path
) -> None:
    data = sample_capture("bro.org.pcap").read_bytes()
    cut = 100_003  # inside a packet
    sock = raw_put(
        server, "cut-stream", [data[:50_000], data[50_000:cut]], server.owner_headers()["Authorization"][6:]
    )
    wait_for_live(server, "cut-stream", "running")
    time.sleep(0.5)
    sock.close()
    live = wait_for_live(server, "cut-stream", "stored")
    assert live["message"] == "the sender disconnected"
    prefix = tmp_path / "prefix.pcap"
    prefix.write_bytes(data[:cut])
    whole = single_pass_rows(prefix)  # tshark reads the whole packets and stops at the cut one
    capture = api.get(f"/api/captures/{live['capture']}/").json()
    assert capture["packets"] == len(whole) > 100
    kept = data[: capture["size"]]
    assert capture["size"] < cut and capture["sha256"] == hashlib.sha256(kept).hexdigest()
    assert len(all_packets(api, live["capture"])) == len(whole)


def test_it_refuses_a_stream_that_is_not_a_capture(server: Server) -> None:
    before = len(live_captures(server))
    answer = httpx.put(
        server.url + "/api/live/not-pcap",
        content=b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n" * 10,
        headers=server.owner_headers(),
        timeout=30,
    )
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("not a pcap or pcapng stream")
    assert len(live_captures(server)) == before


def test_it_asks_for_a_token(server: Server) -> None:
    data = sample_capture("http_google.pcapng").read_bytes()
    answer = httpx.put(server.url + "/api/live/anonymous", content=data, timeout=30)
    assert answer.status_code == 401
    assert "API token" in answer.json()["error"]
    wrong = httpx.put(
        server.url + "/api/live/anonymous", content=data, headers={"Authorization": "Token nope"}, timeout=30
    )
    assert wrong.status_code == 401


def test_it_refuses_a_bad_stream_name_or_method(server: Server) -> None:
    headers = server.owner_headers()
    assert httpx.put(server.url + "/api/live/a b", content=b"", headers=headers).status_code == 404
    assert httpx.get(server.url + "/api/live/name", headers=headers).status_code == 405


def single_pass_numbers(path: Path, display_filter: str) -> list[int]:
    args = ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", "frame.number"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout
    return [int(line) for line in out.split()]


async def test_a_viewer_sees_only_what_its_display_filter_matches(server: Server) -> None:
    original = sample_capture("http_espn.pcapng")
    data = original.read_bytes()
    half = len(data) // 2
    url_of = f"ws://127.0.0.1:{server.port}/ws/live/{{}}/"
    async with httpx.AsyncClient(base_url=server.url, headers=server.owner_headers(), timeout=120) as client:
        go_on = asyncio.Event()

        async def in_two_halves() -> AsyncIterator[bytes]:
            async for chunk in chunks_of(data[:half], 20_000, 0.02):
                yield chunk
            await go_on.wait()
            async for chunk in chunks_of(data[half:], 20_000, 0.02):
                yield chunk

        sending = asyncio.create_task(client.put("/api/live/filtered", content=in_two_halves()))
        live = await asyncio.to_thread(wait_for_live, server, "filtered", "running")
        headers = server.owner_headers()
        async with connect(url_of.format(live["id"]), origin=server.url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"filter": "http.request &&"}))
            async with asyncio.timeout(30):
                while (refused := json.loads(await ws.recv()))["type"] != "live.filter_refused":
                    pass
            assert refused["filter"] == "http.request &&" and refused["message"]
            # Asked half-way: the packets before the filter was applied are matched too.
            await asyncio.sleep(1)
            await ws.send(json.dumps({"filter": "http.request"}))
            messages: list[dict[str, Any]] = []
            async with asyncio.timeout(120):
                while not messages or messages[-1]["type"] != "live.snapshot":
                    messages.append(json.loads(await ws.recv()))
                go_on.set()
                while messages[-1]["type"] != "live.ended":
                    messages.append(json.loads(await ws.recv()))
        answer = await sending
    assert answer.status_code == 200, answer.text
    numbers = sorted(
        {
            row["number"]
            for message in messages
            if message["type"] in ("live.snapshot", "live.rows") and message["filter"] == "http.request"
            for row in message["rows"]
        }
    )
    assert numbers == single_pass_numbers(original, "http.request")
    assert len(numbers) > 50


async def test_a_viewer_is_told_when_one_display_filter_too_many_is_refused(server: Server) -> None:
    data = sample_capture("http_espn.pcapng").read_bytes()
    half = len(data) // 2
    async with httpx.AsyncClient(base_url=server.url, headers=server.owner_headers(), timeout=120) as client:
        go_on = asyncio.Event()

        async def held_half_way() -> AsyncIterator[bytes]:
            yield data[:half]
            await go_on.wait()
            yield data[half:]

        sending = asyncio.create_task(client.put("/api/live/many-filters", content=held_half_way()))
        live = await asyncio.to_thread(wait_for_live, server, "many-filters", "running")
        url = f"ws://127.0.0.1:{server.port}/ws/live/{live['id']}/"
        try:
            async with connect(url, origin=server.url, additional_headers=server.owner_headers()) as ws:
                async with asyncio.timeout(120):
                    # Every display filter runs a decoder of its own: eight besides the whole list.
                    for number in range(1, 9):
                        await ws.send(json.dumps({"filter": f"frame.number > {number}"}))
                        while (answer := json.loads(await ws.recv()))["type"] != "live.snapshot":
                            assert answer["type"] != "live.filter_refused", answer
                    await ws.send(json.dumps({"filter": "frame.number > 9"}))
                    while (answer := json.loads(await ws.recv()))["type"] != "live.filter_refused":
                        assert answer["type"] != "live.snapshot", answer
        finally:
            go_on.set()
        assert answer["filter"] == "frame.number > 9"
        assert answer["message"] == "at most 8 different display filters per live capture"
        stored = await sending
    assert stored.status_code == 200, stored.text


def test_it_keeps_the_packets_before_a_damaged_record(server: Server, api: httpx.Client) -> None:
    data = sample_capture("dns-udp.pcap").read_bytes()
    whole = data[:24]
    offset = 24
    for _ in range(2):  # the header and two whole packets
        length = int.from_bytes(data[offset + 8 : offset + 12], "little")
        offset += 16 + length
    whole = data[:offset]
    damaged = whole + b"\x00" * 8 + b"\xff\xff\xff\x7f" * 2 + b"junk" * 10
    answer = httpx.put(
        server.url + "/api/live/damaged", content=damaged, headers=server.owner_headers(), timeout=60
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "stored"
    assert body["message"].startswith("damaged pcap stream: a packet of")
    capture = api.get(f"/api/captures/{body['capture']}/").json()
    assert capture["packets"] == 2
    assert capture["sha256"] == hashlib.sha256(whole).hexdigest()


async def test_it_stores_a_stream_when_it_reaches_the_size_limit(server: Server, api: httpx.Client) -> None:
    data = sample_capture("bro.org.pcap").read_bytes()
    records = data[24:]
    limit = TEST_UPLOAD_LIMIT_MB * 1024 * 1024

    async def endless() -> AsyncIterator[bytes]:
        yield data[:24]
        while True:
            yield records
            await asyncio.sleep(0.01)

    async with httpx.AsyncClient(base_url=server.url, headers=server.owner_headers(), timeout=120) as client:
        try:
            answer = await client.put("/api/live/too-big", content=endless())
        except httpx.TransportError:
            # The server answered and closed while the body was still being sent.
            answer = None
    live = await asyncio.to_thread(wait_for_live, server, "too-big", "stored")
    assert live["message"] == f"reached the size limit of {TEST_UPLOAD_LIMIT_MB} MB"
    if answer is not None:
        assert answer.status_code == 200, answer.text
    capture = api.get(f"/api/captures/{live['capture']}/").json()
    # Cut after the packet that passes the limit, however much arrived at once.
    assert limit < capture["size"] <= limit + 16 + 65535
    assert capture["sha256"] == hashlib.sha256((data[:24] + records * 100)[: capture["size"]]).hexdigest()


class TopLevelLabels(HTMLParser):
    """Collect the labels of a rendered packet tree's top-level nodes (its protocols)."""

    def __init__(self) -> None:
        super().__init__()
        self.lists = 0  # how many <ul> of the tree hold the current position
        self.in_label = False
        self.labels: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "ul" and "tree" in classes or tag == "ul" and self.lists:
            self.lists += 1
        elif tag == "span" and "tree-label" in classes and self.lists == 1:
            self.in_label = True
            self.labels.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "ul" and self.lists:
            self.lists -= 1
        elif tag == "span":
            self.in_label = False

    def handle_data(self, data: str) -> None:
        if self.in_label:
            self.labels[-1] += data


def top_level_labels(html: str) -> list[str]:
    parser = TopLevelLabels()
    parser.feed(html)
    return parser.labels


def tshark_protocols(path: Path, number: int) -> list[str]:
    """Return the top-level lines of tshark's tree of one packet (its PDML protocols, shown)."""
    args = ["tshark", "-2", "-r", str(path), "-Y", f"frame.number=={number}", "-T", "pdml"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, errors="replace").stdout
    packet = ET.fromstring(out).find("packet")
    assert packet is not None
    return [proto.get("showname", "") for proto in packet.findall("proto") if proto.get("name") != "geninfo"]


async def test_it_shows_the_details_of_a_packet_while_recording(server: Server) -> None:
    original = sample_capture("http_espn.pcapng")
    data = original.read_bytes()
    half = len(data) // 2
    number = single_pass_numbers(original, "http.request")[0]
    outsider = f"details-outsider-{uuid.uuid4().hex[:8]}"
    server.create_user(outsider)
    owner_cookies = server.session_cookies(OWNER)
    outsider_cookies = server.session_cookies(outsider)
    htmx = {"HX-Request": "true"}
    async with httpx.AsyncClient(base_url=server.url, headers=server.owner_headers(), timeout=120) as client:
        go_on = asyncio.Event()

        async def in_two_halves() -> AsyncIterator[bytes]:
            async for chunk in chunks_of(data[:half], 20_000, 0.02):
                yield chunk
            await go_on.wait()
            yield data[half:]

        sending = asyncio.create_task(client.put("/api/live/with-details", content=in_two_halves()))
        try:
            live = await asyncio.to_thread(wait_for_live, server, "with-details", "running")
            url = f"/live/{live['id']}/packets/{{}}/"
            detail_url = url.format(number)
            async with httpx.AsyncClient(base_url=server.url, cookies=owner_cookies, timeout=120) as owner:
                async with asyncio.timeout(60):
                    while "is not recorded yet" in (answer := await owner.get(detail_url, headers=htmx)).text:
                        await asyncio.sleep(0.2)
                assert answer.status_code == 200, answer.text
                live_labels = top_level_labels(answer.text)
                assert live_labels == tshark_protocols(original, number)
                assert "Hypertext Transfer Protocol" in live_labels
                assert 'class="hex-line"' in answer.text

                # The second half is held back: its last packet is not recorded yet.
                last = await owner.get(url.format(956), headers=htmx)
                assert last.status_code == 200
                assert "packet 956 is not recorded yet: there are" in last.text
                assert "There is no packet 0." in (await owner.get(url.format(0), headers=htmx)).text

                # Numbers start over in each file of a ring buffer: no details until it is stored.
                ring_file = server.captures_dir / ".staging" / f"live-{live['id']}-{uuid.uuid4().hex}.1.part"
                ring_file.write_bytes(b"")
                try:
                    ringed = await owner.get(url.format(number), headers=htmx)
                finally:
                    ring_file.unlink()
                assert "details are shown once the capture is stored" in ringed.text

                async with httpx.AsyncClient(base_url=server.url, cookies=outsider_cookies) as other:
                    assert (await other.get(detail_url, headers=htmx)).status_code == 404

                go_on.set()
                answer = await sending
                assert answer.status_code == 200, answer.text
                stored_id = answer.json()["capture"]
                # Once stored, the same address shows the stored capture's details of the packet.
                stored = await owner.get(url.format(number), headers=htmx)
                assert top_level_labels(stored.text) == live_labels
                assert f"/captures/{stored_id}/follow/" in stored.text
                page = await owner.get(url.format(number))
                assert page.status_code == 302
                assert page.headers["location"] == f"/captures/{stored_id}/?packet={number}"
        finally:
            go_on.set()
            await sending
