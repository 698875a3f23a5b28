"""A server killed in the middle of an upload shows nothing half-stored, and leftovers of a
process killed while storing one are swept."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import OWNER, Server, repeated_synscan, sample_capture, upload

pytestmark = pytest.mark.engine

HOUR = 3600


@pytest.fixture(scope="module")
def killable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("killable"))
    server.start()
    yield server
    server.stop()


def age(path: os.PathLike[str], seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_an_upload_cut_by_a_killed_server_leaves_no_capture_and_its_leftovers_are_swept(
    killable: Server, tmp_path: Path
) -> None:
    server = killable
    token = server.token(OWNER)
    # Large enough (about 5 MB) that the server writes part of it before the rest arrives.
    data = repeated_synscan(tmp_path, 30).read_bytes()
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.pcapng"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    request = (
        f"POST /api/captures/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + len(data) + len(tail)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.sendall(request + head + data[: len(data) * 9 // 10])
        time.sleep(0.5)
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        server.log.close()

    server.start(new_database=False)
    with server.client(OWNER) as client:
        assert client.get("/api/captures/").json() == []
        # What a process killed while it stored an upload leaves: the staging file it was
        # writing, or the file it moved in before it recorded the capture. And a real capture.
        left = server.captures_dir / ".staging" / f"{uuid.uuid4().hex}.part"
        left.parent.mkdir(parents=True, exist_ok=True)
        left.write_bytes(data[: len(data) // 2])
        live = left.with_name("live-1-recording.part")
        live.write_bytes(data[:24])
        unrecorded = server.captures_dir / f"{uuid.uuid4().hex}.cap"
        shutil.copy(sample_capture("dns-udp.pcap"), unrecorded)
        stored = upload(client, sample_capture("dns-udp.pcap"))
        assert stored.status_code == 201, stored.text
        kept = [p for p in server.captures_dir.glob("*.cap") if p != unrecorded]
        assert len(kept) == 1

        # Recent files may belong to work in progress: they stay.
        swept = server.manage("sweep_captures")
        assert swept.returncode == 0 and swept.stdout == "", swept.stderr
        for path in (left, live, unrecorded, *kept):
            age(path, 2 * HOUR)
        swept = server.manage("sweep_captures")
        assert swept.returncode == 0, swept.stderr
        assert swept.stdout.splitlines() == [
            f"staging file {left.name}",
            f"capture file {unrecorded.name} (no capture names it)",
        ]
        assert not left.exists() and not unrecorded.exists()
        assert kept[0].exists() and live.exists()  # a live recording may be quiet for hours
        answer = client.get(f"/api/captures/{stored.json()['captures'][0]['id']}/packets")
        assert answer.status_code == 200, answer.text
