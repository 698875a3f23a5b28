"""The engine's faults and limits, through a real server: a killed or stopped sharkd, a capture too
large for ENGINE_MEMORY_MB, and more captures open than ENGINE_MAX_PROCESSES sessions.

Each case gets a clear answer (503, or 400 for a refusal) within its time limit, and the
next request, and every other capture, is served as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Server, sample_capture, tshark_numbers

pytestmark = pytest.mark.engine

# About a second of re-dissection per new filter on this machine's cores: long enough to be
# interrupted, or to keep a session busy, while another request comes in.
SLOW_FILTER = 'tcp.flags.reset == 1 && !(frame matches "zz+y")'
# Above the shared test limit of 8 MB: the mid-size capture is about 15 MB.
UPLOAD_MB = "64"


@pytest.fixture(scope="module")
def mid_size_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 200,000 packets (the SYN scan a hundred times over) as pcap."""
    path = tmp_path_factory.mktemp("mid") / "synscan-x100.pcap"
    source = sample_capture("synscan.pcapng")
    subprocess.run(["mergecap", "-F", "pcap", "-a", "-w", str(path)] + [str(source)] * 100, check=True)
    return path


def started(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp(name), MAX_UPLOAD_MB=UPLOAD_MB, **env)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def faults_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory, "faults")


async def client_of(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers=server.owner_headers(), timeout=120)


async def uploaded(client: httpx.AsyncClient, path: Path, name: str | None = None) -> dict[str, Any]:
    response = await client.post("/api/captures/", files={"file": (name or path.name, path.read_bytes())})
    assert response.status_code == 201, response.text
    capture: dict[str, Any] = response.json()["captures"][0]
    return capture


async def uploaded_to(
    server: Server, client: httpx.AsyncClient, path: Path, name: str | None = None
) -> tuple[dict[str, Any], Path]:
    """Upload a capture; return the API's answer and the server's copy of the file."""
    before = set(server.captures_dir.glob("*.cap"))
    capture = await uploaded(client, path, name)
    [stored] = set(server.captures_dir.glob("*.cap")) - before
    return capture, stored.resolve()


def sharkd_pids(server: Server, path: Path | None = None) -> list[int]:
    """Return the server's sharkd processes that have this capture open (any capture: None)."""
    pids = []
    for pid in server.children():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "sharkd":
                continue
            files = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue  # it ended meanwhile
        if any(f == str(path) if path else f.startswith(str(server.captures_dir.resolve())) for f in files):
            pids.append(pid)
    return pids


def message_of(response: httpx.Response) -> str:
    message = response.json()["error"]
    assert isinstance(message, str) and message.strip(), response.text
    assert "Traceback" not in message and ".cap" not in message, message
    return message


@pytest.fixture
async def api(faults_server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_of(faults_server) as client:
        yield client


async def first_page(client: httpx.AsyncClient, capture: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = await client.get(f"/api/captures/{capture['id']}/packets", params={"limit": 20, **params})
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def keep_killing(server: Server, path: Path, stop: asyncio.Event) -> list[int]:
    """SIGKILL every sharkd that opens the capture until told to stop; return the pids killed."""
    killed: list[int] = []
    while not stop.is_set():
        for pid in sharkd_pids(server, path):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        await asyncio.sleep(0.02)
    return killed


async def test_a_killed_engine_is_restarted_and_the_filter_answered(
    faults_server: Server, api: httpx.AsyncClient, mid_size_capture: Path
) -> None:
    server = faults_server
    capture, path = await uploaded_to(server, api, mid_size_capture)
    await first_page(api, capture)
    [pid] = sharkd_pids(server, path)

    filtering = asyncio.create_task(first_page(api, capture, filter=SLOW_FILTER))
    await asyncio.sleep(0.3)
    assert not filtering.done()
    os.kill(pid, signal.SIGKILL)
    page = await filtering

    # Killed once mid-request, the session was restarted and the request sent again.
    assert page["displayed"] == len(tshark_numbers(mid_size_capture, SLOW_FILTER))
    assert sharkd_pids(server, path) and pid not in sharkd_pids(server, path)


async def test_an_engine_killed_again_and_again_gives_a_clear_error_and_others_carry_on(
    faults_server: Server, api: httpx.AsyncClient, mid_size_capture: Path
) -> None:
    server = faults_server
    capture, path = await uploaded_to(server, api, mid_size_capture, "killed.pcap")
    other, other_path = await uploaded_to(server, api, sample_capture("http_espn.pcapng"))
    await first_page(api, capture)
    await first_page(api, other)
    other_pids = sharkd_pids(server, other_path)
    assert other_pids

    filtering = asyncio.create_task(
        api.get(f"/api/captures/{capture['id']}/packets", params={"filter": "tcp"})
    )
    await asyncio.sleep(0.3)
    assert not filtering.done()
    stop = asyncio.Event()
    killer = asyncio.create_task(keep_killing(server, path, stop))
    try:
        # Meanwhile the other capture answers page after page, from the same session.
        for offset in range(0, 900, 100):
            page = await first_page(api, other, offset=offset, limit=100)
            assert page["packets"][0]["number"] == offset + 1
            detail = await api.get(f"/api/captures/{other['id']}/packets/{offset + 1}/")
            assert detail.status_code == 200, detail.text
        answer = await filtering
    finally:
        stop.set()
        killed = await killer

    assert len(killed) >= 2  # the session, and the one started to retry the request
    assert answer.status_code == 503, answer.text
    assert "stopped unexpectedly" in message_of(answer)
    assert sharkd_pids(server, other_path) == other_pids

    # The next request starts a fresh session and is answered as tshark would.
    again = await first_page(api, capture, filter="tcp")
    assert again["displayed"] == len(tshark_numbers(mid_size_capture, "tcp"))


def pcapng_with_interface_name(name: bytes) -> bytes:
    """Return a one-packet pcapng whose interface has this name (option if_name), bytes as given."""

    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    section = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    option = struct.pack("<HH", 2, len(name)) + name + bytes(-len(name) % 4) + struct.pack("<HH", 0, 0)
    interface = block(1, struct.pack("<HHI", 1, 0, 65535) + option)
    # An ARP request (Ethernet broadcast, who has 192.168.0.2).
    arp = bytes.fromhex(
        "ffffffffffff00112233445508060001080006040001001122334455c0a80001000000000000c0a80002"
    )
    packet = block(6, struct.pack("<IIIII", 0, 0, 0, len(arp), len(arp)) + arp)
    return section + interface + packet


async def test_an_answer_that_is_not_utf8_is_read_at_once(
    faults_server: Server, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    # sharkd copies the name into its JSON as it is; such an answer once went unread, and
    # the request waited for the engine's timeout.
    path = tmp_path / "latin1-interface.pcapng"
    path.write_bytes(pcapng_with_interface_name(b"caf\xe9 eth0"))
    capture = await uploaded(api, path)
    asked = time.monotonic()
    detail = await api.get(f"/api/captures/{capture['id']}/packets/1/")
    assert detail.status_code == 200, detail.text
    assert "on interface caf\ufffd eth0" in detail.json()["tree"][0]["label"]
    assert time.monotonic() - asked < 10


@pytest.fixture(scope="module")
def quick_timeout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory, "timeout", ENGINE_REQUEST_TIMEOUT="5")


async def test_a_stopped_engine_times_out_with_a_clear_error_and_is_replaced(
    quick_timeout_server: Server,
) -> None:
    server = quick_timeout_server
    async with await client_of(server) as api:
        capture, path = await uploaded_to(server, api, sample_capture("http_espn.pcapng"))
        other = await uploaded(api, sample_capture("dns-udp.pcap"))
        await first_page(api, capture)
        await first_page(api, other)
        [pid] = sharkd_pids(server, path)
        os.kill(pid, signal.SIGSTOP)
        try:
            asked = time.monotonic()
            # A page not asked for before: only the engine can answer it.
            answer = await api.get(f"/api/captures/{capture['id']}/packets", params={"offset": 300})
            waited = time.monotonic() - asked
            # Another capture is not held up meanwhile.
            assert (await api.get(f"/api/captures/{other['id']}/packets/2/")).status_code == 200
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

        assert answer.status_code == 503, answer.text
        assert "did not answer within 5 s" in message_of(answer)
        assert 5 <= waited < 10
        page = await first_page(api, capture, offset=300)
        assert page["packets"][0]["number"] == 301
        detail = await api.get(f"/api/captures/{capture['id']}/packets/7/")
        assert detail.status_code == 200, detail.text
        assert detail.json()["tree"][0]["label"].startswith("Frame 7:")
        assert pid not in sharkd_pids(server, path)


@pytest.fixture(scope="module")
def hanging_load_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose sharkd starts but never answers (capinfos and tshark are the real ones)."""
    tools = tmp_path_factory.mktemp("bin")
    for tool in ("capinfos", "tshark", "editcap", "mergecap"):
        found = shutil.which(tool)
        assert found is not None
        (tools / tool).symlink_to(found)
    (tools / "sharkd").write_text("#!/bin/sh\nexec sleep 600\n")
    (tools / "sharkd").chmod(0o755)
    yield from started(tmp_path_factory, "hang", ENGINE_REQUEST_TIMEOUT="5", WIRESHARK_BIN_DIR=str(tools))


async def test_a_load_that_never_ends_times_out_with_a_clear_error(hanging_load_server: Server) -> None:
    async with await client_of(hanging_load_server) as api:
        capture = await uploaded(api, sample_capture("dns-udp.pcap"))
        for _ in range(2):
            asked = time.monotonic()
            answer = await api.get(f"/api/captures/{capture['id']}/packets")
            assert answer.status_code == 503, answer.text
            assert "did not finish loading the capture within 5 s" in message_of(answer)
            assert time.monotonic() - asked < 10
        assert (await api.get("/api/captures/")).status_code == 200


@pytest.fixture(scope="module")
def tiny_memory_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # sharkd alone reserves about 350 MB of address space before it reads a capture.
    yield from started(tmp_path_factory, "memory", ENGINE_MEMORY_MB="200")


async def test_a_memory_limit_too_small_gives_a_clear_error(tiny_memory_server: Server) -> None:
    async with await client_of(tiny_memory_server) as api:
        capture = await uploaded(api, sample_capture("http_google.pcapng"))
        for _ in range(2):
            asked = time.monotonic()
            answer = await api.get(f"/api/captures/{capture['id']}/packets")
            assert answer.status_code == 503, answer.text
            assert message_of(answer) == "the engine ran out of memory: it may use 200 MB per capture"
            assert time.monotonic() - asked < 30
        assert (await api.get(f"/api/captures/{capture['id']}/")).status_code == 200


@pytest.fixture(scope="module")
def two_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory, "cap", ENGINE_MAX_PROCESSES="2", ENGINE_BUSY_WAIT_SECONDS="1")


async def test_three_captures_are_served_by_two_sessions(two_session_server: Server) -> None:
    server = two_session_server
    names = ["http_google.pcapng", "dns-udp.pcap", "tls-sni.pcapng"]
    async with await client_of(server) as api:
        captures = [await uploaded(api, sample_capture(name)) for name in names]
        for _ in range(2):
            for name, capture in zip(names, captures, strict=True):
                page = await first_page(api, capture)
                assert page["total"] == len(tshark_numbers(sample_capture(name), "frame"))
                detail = await api.get(f"/api/captures/{capture['id']}/packets/1/")
                assert detail.status_code == 200, detail.text
                assert len(sharkd_pids(server)) <= 2
        # All three at once: the third waits for one of the others to finish.
        pages = await asyncio.gather(*(first_page(api, capture, offset=1) for capture in captures))
        assert [page["packets"][0]["number"] for page in pages] == [2, 2, 2]
        assert len(sharkd_pids(server)) <= 2


async def test_a_capture_waiting_for_a_busy_engine_is_told_so(
    two_session_server: Server, mid_size_capture: Path
) -> None:
    server = two_session_server
    async with await client_of(server) as api:
        busy = [await uploaded(api, mid_size_capture, f"busy-{n}.pcap") for n in range(2)]
        waiting = await uploaded(api, sample_capture("http_post.pcapng"))
        for capture in busy:
            await first_page(api, capture)
        filters = [
            asyncio.create_task(first_page(api, capture, filter=f"{SLOW_FILTER} && frame.len > {n}"))
            for n, capture in enumerate(busy)
        ]
        await asyncio.sleep(0.3)
        # Hold both sessions in the middle of their filters, so that they stay busy for as long as
        # the waiting capture waits, however fast this machine runs them. A session closed to make
        # room for them may take a moment to end on a busy machine.
        deadline = time.monotonic() + 10
        while len(held := sharkd_pids(server)) > 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(held) == 2
        for pid in held:
            os.kill(pid, signal.SIGSTOP)
        try:
            answer = await api.get(f"/api/captures/{waiting['id']}/packets")
        finally:
            for pid in held:
                os.kill(pid, signal.SIGCONT)
        assert answer.status_code == 503, answer.text
        assert message_of(answer).startswith("the engine is busy: all 2 of its sessions are working")
        await asyncio.gather(*filters)
        # Once a session is idle again, its place goes to the capture that waited.
        page = await first_page(api, waiting)
        assert page["total"] == len(tshark_numbers(sample_capture("http_post.pcapng"), "frame"))


# Room for the sessions of two small captures (about 150 MB each) and not three.
BUDGET_MB = 400


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory, "budget", ENGINE_MEMORY_BUDGET_MB=str(BUDGET_MB))


def resident_mb(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_captures_opened_one_after_another_stay_within_the_memory_budget(budget_server: Server) -> None:
    server = budget_server
    names = ["http_google.pcapng", "dns-udp.pcap", "tls-sni.pcapng", "http_espn.pcapng", "http_post.pcapng"]
    most = 0
    async with await client_of(server) as api:
        for name in names:
            capture = await uploaded(api, sample_capture(name))
            page = await first_page(api, capture)
            assert page["total"] == len(tshark_numbers(sample_capture(name), "frame"))
            held = sharkd_pids(server)
            assert sum(resident_mb(pid) for pid in held) <= BUDGET_MB, held
            most = max(most, len(held))
    # The budget, not the count of sessions (8 by default), closed the least recently used.
    assert most == 2
