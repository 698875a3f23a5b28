"""Live captures on the server's loopback interface: started, watched, stopped and stored from the pages."""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from .conftest import PASSWORD, Server, all_packets, free_port, tshark_rows
from .test_live_stream import single_pass_rows

pytestmark = pytest.mark.engine

STAFF = "live-staff"
CAPTURER = "live-capturer"  # not staff, granted the permission
OUTSIDER = "live-outsider"  # neither
COLUMNS = ["number", "time", "source", "destination", "protocol", "length", "info"]


@pytest.fixture(scope="module")
def people(server: Server) -> dict[str, str]:
    """Create the users of this module once; return their API tokens."""
    server.create_user(STAFF, staff=True)
    server.create_user(CAPTURER)
    server.create_user(OUTSIDER)
    granted = server.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import Permission, User\n"
        f"User.objects.get(username={CAPTURER!r}).user_permissions.add("
        "Permission.objects.get(codename='start_live_capture'))\n",
    )
    assert granted.returncode == 0, granted.stderr
    return {name: server.token(name) for name in (STAFF, CAPTURER, OUTSIDER)}


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A plain HTTP server on loopback, whose traffic the live captures record."""
    root = tmp_path_factory.mktemp("www")
    for index in range(50):
        (root / f"page{index}.txt").write_text(f"page {index}\n" * 20)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "-b", "127.0.0.1", str(port), "-d", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/page0.txt", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(10)


def signed_in(server: Server, username: str) -> httpx.Client:
    """Return a client signed in as username, holding a CSRF cookie."""
    client = httpx.Client(base_url=server.url, timeout=60)
    client.get("/accounts/login/")
    answer = client.post(
        "/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": server.url + "/accounts/login/"},
    )
    assert answer.status_code == 302
    client.get("/live/")
    return client


def post_form(client: httpx.Client, path: str, **data: str) -> httpx.Response:
    return client.post(
        path,
        data={**data, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": str(client.base_url) + "/live/"},
    )


def start(client: httpx.Client, **form: str) -> httpx.Response:
    return post_form(client, "/live/start/", **form)


def live_id_of(answer: httpx.Response) -> int:
    assert answer.status_code == 302, answer.text
    match = re.fullmatch(r"/live/(\d+)/", answer.headers["location"])
    assert match, answer.headers["location"]
    return int(match[1])


def page_error(client: httpx.Client) -> str:
    page = client.get("/live/").text
    errors = re.findall(r'<li class="message message-error">(.*?)</li>', page, re.S)
    return html.unescape(errors[-1]) if errors else ""


def stored_file(server: Server, sha256: str) -> Path:
    for path in server.captures_dir.iterdir():
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            return path
    raise AssertionError("stored file not found")


async def test_it_shows_loopback_traffic_live_and_stores_it(
    server: Server, people: dict[str, str], web_server: int
) -> None:
    client = signed_in(server, STAFF)
    live_id = live_id_of(start(client, interface="lo", filter=f"tcp port {web_server}"))
    messages: list[tuple[float, dict[str, Any]]] = []
    sent: dict[str, float] = {}
    url = f"ws://127.0.0.1:{server.port}/ws/live/{live_id}/"
    headers = {"Authorization": f"Token {people[STAFF]}"}
    async with connect(url, origin=server.url, additional_headers=headers) as ws:

        async def receive() -> None:
            async with asyncio.timeout(120):
                while True:
                    message = json.loads(await ws.recv())
                    messages.append((time.monotonic(), message))
                    if message["type"] == "live.ended":
                        return

        receiving = asyncio.create_task(receive())
        await asyncio.sleep(1)  # dumpcap opens the interface
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_server}") as web:
            for index in range(30):
                sent[f"/page{index}.txt"] = time.monotonic()
                assert (await web.get(f"/page{index}.txt")).status_code == 200
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        assert await asyncio.to_thread(post_form, client, f"/live/{live_id}/stop/")
        await receiving

    rows: dict[int, list[str]] = {}
    arrived: dict[str, float] = {}
    for when, message in messages:
        if message["type"] in ("live.snapshot", "live.rows"):
            for row in message["rows"]:
                rows[row["number"]] = [str(row[column]) for column in COLUMNS]
                request = re.match(r"GET (\S+) HTTP", row["info"])
                if request:
                    arrived.setdefault(request[1], when)
    # Every request showed up in the view within a second of being sent.
    assert set(arrived) == set(sent)
    latencies = [arrived[path] - sent[path] for path in sent]
    assert max(latencies) < 1.0, latencies
    ended = messages[-1][1]
    assert ended["state"] == "stored", ended
    capture_id = int(ended["capture_url"].strip("/").split("/")[-1])
    with server.client(STAFF) as api:
        capture = api.get(f"/api/captures/{capture_id}/").json()
        expected = tshark_rows(stored_file(server, capture["sha256"]))
        # Every packet dumpcap recorded was shown, with tshark's columns.
        assert ended["status"]["packets"] == capture["packets"] == len(expected) >= 30 * 6
        assert ended["dumpcap_packets"] == capture["packets"]
        assert sorted(rows) == [int(row[0]) for row in expected]
        # Number, time, addresses and length are those of tshark's two-pass list; protocol and
        # info those of its one pass (as in Wireshark while it captures): the rows of a
        # reassembled message are only known to be such once the rest of it has arrived.
        assert [rows[number][:4] + rows[number][5:6] for number in sorted(rows)] == [
            row[:4] + row[5:6] for row in expected
        ]
        assert [rows[number] for number in sorted(rows)] == single_pass_rows(
            stored_file(server, capture["sha256"])
        )
        differing = [number for number in sorted(rows) if rows[number] != expected[number - 1]]
        assert len(differing) < len(rows) // 4
        stored = all_packets(api, capture_id)
        assert [[str(row[column]) for column in COLUMNS] for row in stored] == expected
    # The stored capture is listed like an upload.
    assert f"/captures/{capture_id}/" in client.get("/").text
    client.close()


def test_it_stops_at_a_packet_limit(server: Server, people: dict[str, str], web_server: int) -> None:
    client = signed_in(server, CAPTURER)
    live_id = live_id_of(start(client, interface="lo", filter=f"tcp port {web_server}", packets="5"))
    time.sleep(1)
    for index in range(5):
        httpx.get(f"http://127.0.0.1:{web_server}/page{index}.txt")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = client.get(f"/live/{live_id}/").text
        if "Open the stored capture" in page and 'id="live-capture-link" href="/captures/' in page:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the capture was not stored at its packet limit")
    capture_id = int(re.search(r'id="live-capture-link" href="/captures/(\d+)/"', page)[1])  # type: ignore[index]
    with server.client(CAPTURER) as api:
        assert api.get(f"/api/captures/{capture_id}/").json()["packets"] == 5
    client.close()


def test_it_refuses_an_unknown_interface(server: Server, people: dict[str, str]) -> None:
    client = signed_in(server, STAFF)
    answer = start(client, interface="no-such-interface0")
    assert answer.status_code == 302 and answer.headers["location"] == "/live/"
    assert page_error(client) == "Capture not started: no interface named 'no-such-interface0' on this server"
    client.close()


def test_it_refuses_a_capture_filter_with_a_syntax_error(server: Server, people: dict[str, str]) -> None:
    client = signed_in(server, STAFF)
    answer = start(client, interface="lo", filter="tcp port")
    assert answer.headers["location"] == "/live/"
    message = page_error(client)
    assert message.startswith("Capture not started: capture filter 'tcp port': ")
    assert "syntax error" in message
    client.close()


def test_it_refuses_a_limit_that_is_not_a_number(server: Server, people: dict[str, str]) -> None:
    client = signed_in(server, STAFF)
    start(client, interface="lo", seconds="soon")
    assert (
        page_error(client)
        == "Capture not started: the duration limit must be a whole number from 1 to 1000000000"
    )
    client.close()


def test_it_lets_only_allowed_people_capture_or_watch(server: Server, people: dict[str, str]) -> None:
    staff = signed_in(server, STAFF)
    live_id = live_id_of(start(staff, interface="lo", filter="udp port 9"))
    try:
        outsider = signed_in(server, OUTSIDER)
        assert "live-not-allowed" in outsider.get("/live/").text
        assert start(outsider, interface="lo").status_code == 403
        assert outsider.get(f"/live/{live_id}/").status_code == 404
        assert post_form(outsider, f"/live/{live_id}/stop/").status_code == 404
        anonymous = httpx.Client(base_url=server.url)
        for path in ("/live/", f"/live/{live_id}/"):
            answer = anonymous.get(path)
            assert answer.status_code == 302 and answer.headers["location"].startswith("/accounts/login/")
        capturer = signed_in(server, CAPTURER)
        assert capturer.get(f"/live/{live_id}/").status_code == 404  # someone else's
        with pytest.raises(Exception, match="4404|rejected|403"):
            asyncio.run(open_socket(server, live_id, people[OUTSIDER]))
    finally:
        post_form(staff, f"/live/{live_id}/stop/")


async def open_socket(server: Server, live_id: int, token: str) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/live/{live_id}/"
    async with connect(url, origin=server.url, additional_headers={"Authorization": f"Token {token}"}) as ws:
        await asyncio.wait_for(ws.recv(), 10)


async def test_it_tells_a_viewer_when_no_process_records_the_capture(
    server: Server, people: dict[str, str]
) -> None:
    made = server.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User\n"
        "from explorer.models import LiveCapture\n"
        f"owner = User.objects.get(username={STAFF!r})\n"
        "live = LiveCapture.objects.create(owner=owner, name='orphan', source='interface', "
        "interface='lo', control_channel='livecapture.gone!nobody')\n"
        "print(live.pk)\n",
    )
    assert made.returncode == 0, made.stderr
    live_id = int(made.stdout.split()[-1])
    url = f"ws://127.0.0.1:{server.port}/ws/live/{live_id}/"
    headers = {"Authorization": f"Token {people[STAFF]}"}
    async with connect(url, origin=server.url, additional_headers=headers) as ws:
        async with asyncio.timeout(30):
            while (message := json.loads(await ws.recv()))["type"] != "live.silent":
                pass
    assert message["message"].startswith("no server process is recording this capture any more")


async def test_a_ring_buffer_keeps_the_last_files(
    server: Server, people: dict[str, str], web_server: int
) -> None:
    client = signed_in(server, STAFF)
    answer = start(
        client, interface="lo", filter=f"tcp port {web_server}", ring_files="2", ring_kilobytes="16"
    )
    live_id = live_id_of(answer)
    url = f"ws://127.0.0.1:{server.port}/ws/live/{live_id}/"
    headers = {"Authorization": f"Token {people[STAFF]}"}
    lengths: dict[int, str] = {}
    async with connect(url, origin=server.url, additional_headers=headers) as ws:

        async def receive() -> dict[str, Any]:
            async with asyncio.timeout(120):
                while True:
                    message = json.loads(await ws.recv())
                    for row in (
                        message.get("rows", []) if message["type"] in ("live.rows", "live.snapshot") else []
                    ):
                        lengths[row["number"]] = str(row["length"])
                    if message["type"] == "live.ended":
                        return dict(message)

        receiving = asyncio.create_task(receive())
        await asyncio.sleep(1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_server}") as web:
            for index in range(80):
                await web.get(f"/page{index % 50}.txt")
        await asyncio.sleep(1.5)
        await asyncio.to_thread(post_form, client, f"/live/{live_id}/stop/")
        ended = await receiving
    assert ended["state"] == "stored", ended
    assert ended["message"] == "stopped; the ring buffer kept the last 2 files"
    recorded = ended["status"]["packets"]
    assert sorted(lengths) == list(range(1, recorded + 1))
    capture_id = int(ended["capture_url"].strip("/").split("/")[-1])
    with server.client(STAFF) as api:
        capture = api.get(f"/api/captures/{capture_id}/").json()
        kept = capture["packets"]
        assert 0 < kept < recorded // 2
        assert capture["size"] < 3 * 16 * 1024
        stored = all_packets(api, capture_id)
    # The stored packets are the last ones recorded, in order.
    assert [str(row["length"]) for row in stored] == [
        lengths[n] for n in range(recorded - kept + 1, recorded + 1)
    ]
    assert not [
        path for path in (server.captures_dir / ".staging").iterdir() if path.name.startswith("live-")
    ]
    client.close()


def test_it_refuses_half_a_ring_buffer(server: Server, people: dict[str, str]) -> None:
    client = signed_in(server, STAFF)
    start(client, interface="lo", ring_files="3")
    assert page_error(client) == (
        "Capture not started: a ring buffer needs a number of files (2 or more) and a file size"
    )
    client.close()
