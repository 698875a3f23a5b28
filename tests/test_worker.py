"""The background worker: with BACKGROUND_WORKER=1, `manage.py run_worker` summarizes and exports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import OWNER, ROOT, Server, repeated_synscan, sample_capture, tshark_numbers, upload
from .services import PostgresServer, RedisServer

pytestmark = [pytest.mark.services, pytest.mark.engine]


@pytest.fixture(scope="module")
def queued(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("queued"),
        DATABASE_URL=postgres_server.create_database("worker"),
        REDIS_URL=redis_server.new_database_url(),
        BACKGROUND_WORKER="1",
        EXPORT_LEASE_SECONDS="3",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(queued: Server) -> Iterator[httpx.Client]:
    with queued.client(OWNER) as client:
        yield client


def stored(api: httpx.Client, name: str) -> int:
    answer = upload(api, sample_capture(name))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def found(api: httpx.Client, word: str) -> set[int]:
    answer = api.get("/api/captures/", params={"q": word})
    assert answer.status_code == 200, answer.text
    return {capture["id"] for capture in answer.json()}


def wait_found(api: httpx.Client, word: str, capture_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while capture_id not in found(api, word):
        assert time.monotonic() < deadline, f"capture {capture_id} never found by {word!r}"
        time.sleep(0.2)


def worker_command(*options: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), "run_worker", "--poll", "0.2", *options]


def test_the_worker_summarizes_what_the_server_stores_and_what_was_stored_while_it_was_away(
    queued: Server, api: httpx.Client
) -> None:
    # Found by protocols their names do not hold: only once they are summarized.
    first = stored(api, "dns-udp.pcap")
    # The server itself would have summarized so small a capture well within this.
    time.sleep(3)
    assert first not in found(api, "eth")

    worker = subprocess.Popen(worker_command(), env=queued.env, cwd=ROOT, start_new_session=True)
    try:
        wait_found(api, "eth", first)
        second = stored(api, "http_google.pcapng")
        wait_found(api, "tcp", second)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)

    # Nothing runs now: the capture waits in the database for the next worker.
    third = stored(api, "icmp_echo.pcapng")
    time.sleep(1)
    assert third not in found(api, "eth")
    done = queued.manage("run_worker", "--once")
    assert done.returncode == 0, done.stderr
    assert third in found(api, "eth")


def test_two_workers_share_the_queue_and_summarize_each_capture_once(
    queued: Server, api: httpx.Client
) -> None:
    names = [
        "dns-tcp.pcap",
        "http-vlan-0.pcap",
        "icmp_traceroute.pcapng",
        "arppoison.pcapng",
        "ndpi-sip.pcap",
    ]
    ids = {stored(api, name) for name in names}
    workers = [
        subprocess.Popen(
            worker_command("--once"), env=queued.env, cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    logs = [worker.communicate(timeout=120)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], logs
    summarized = [int(number) for log in logs for number in re.findall(r"summarized capture (\d+)", log)]
    assert sorted(summarized) == sorted(ids), logs
    waiting = queued.manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from explorer.models import Capture; print(Capture.objects.filter(protocols='').count())",
    )
    assert waiting.stdout.split() == ["0"], waiting.stderr


def tshark_of(pid: int) -> list[int]:
    """Return the tshark processes the worker started (each in a session of its own)."""
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(line.split()[0]) for line in out.stdout.splitlines() if line.split()[1:] == ["tshark"]]


def test_a_worker_killed_in_the_middle_of_a_summary_leaves_it_to_the_next(
    queued: Server, api: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # About 80,000 packets: a summary of a few seconds.
    path = repeated_synscan(tmp_path_factory.mktemp("killed"), 40)
    answer = upload(api, path)
    assert answer.status_code == 201, answer.text
    capture_id = int(answer.json()["id"])

    worker = subprocess.Popen(worker_command(), env=queued.env, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (running := tshark_of(worker.pid)):
        assert time.monotonic() < deadline and worker.poll() is None, "the worker never started tshark"
        time.sleep(0.02)
    os.killpg(worker.pid, signal.SIGKILL)
    for pid in running:
        os.killpg(pid, signal.SIGKILL)
    worker.wait(30)

    # Nothing half-done was stored: the capture still waits for a summary.
    assert capture_id not in found(api, "tcp")
    done = queued.manage("run_worker", "--once")
    assert done.returncode == 0, done.stderr
    assert f"summarized capture {capture_id}" in done.stderr
    assert capture_id in found(api, "tcp")


def test_exports_wait_for_a_worker_and_one_killed_mid_export_leaves_it_to_the_next(
    queued: Server, api: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = repeated_synscan(tmp_path_factory.mktemp("exported"), 40)
    answer = upload(api, path)
    assert answer.status_code == 201, answer.text
    capture_id = int(answer.json()["id"])
    made = api.post(f"/api/captures/{capture_id}/exports", json={"filter": "tcp.flags.syn == 1"})
    assert made.status_code == 202, made.text
    url = made.json()["url"]
    time.sleep(1)
    assert api.get(url).json()["state"] == "queued"  # the servers leave it to a worker

    def state() -> str:
        return str(api.get(url).json()["state"])

    first = subprocess.Popen(worker_command(), env=queued.env, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while state() != "running":
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    assert state() == "running"

    second = subprocess.Popen(worker_command(), env=queued.env, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while state() != "done":
            assert state() in ("queued", "running") and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(30)
    exported = api.get(url + "/file")
    assert exported.status_code == 200
    copy = tmp_path_factory.mktemp("exported-file") / "export.pcapng"
    copy.write_bytes(exported.content)
    assert tshark_numbers(copy, "frame") == list(
        range(1, len(tshark_numbers(path, "tcp.flags.syn == 1")) + 1)
    )
