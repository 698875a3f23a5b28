"""Exports as jobs: queued, run apart from the request, and run again after their server died."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import OWNER, Server, repeated_synscan, sample_capture, tshark_numbers, upload

pytestmark = pytest.mark.engine

SLOW_FILTER = "tcp.flags.syn == 1 && tcp.flags.ack == 0 && !tcp.analysis.retransmission"


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A short lease, so that a job whose server died is taken over within seconds.
    server = Server(tmp_path_factory.mktemp("export-jobs"), EXPORT_LEASE_SECONDS="3")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(restartable: Server) -> Iterator[httpx.Client]:
    with restartable.client(OWNER) as client:
        yield client


def stored(client: httpx.Client, path: Path) -> int:
    answer = upload(client, path)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["captures"][0]["id"])


def wait_done(client: httpx.Client, url: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(url)
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        if job["state"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"export still {job['state']}"
        time.sleep(0.1)


def frames_in(data: bytes, tmp_path: Path) -> int:
    exported = tmp_path / "export.pcapng"
    exported.write_bytes(data)
    return len(tshark_numbers(exported, "frame"))


def test_an_export_job_writes_the_displayed_frames_of_its_range(client: httpx.Client, tmp_path: Path) -> None:
    path = sample_capture("http_espn.pcapng")
    capture_id = stored(client, path)
    made = client.post(
        f"/api/captures/{capture_id}/exports", json={"filter": "http", "first": 10, "last": 600}
    )
    assert made.status_code == 202, made.text
    assert made.json()["state"] in ("queued", "running")
    job = wait_done(client, made.json()["url"])
    assert job["state"] == "done" and job["error"] == ""
    first = client.get(job["file_url"])
    assert first.status_code == 200, first.text
    expected = [n for n in tshark_numbers(path, "http") if 10 <= n <= 600]
    assert frames_in(first.content, tmp_path) == len(expected) > 0
    assert len(first.content) == job["size"]
    # Kept for a while: a second download gets the same file.
    assert client.get(job["file_url"]).content == first.content


def test_a_bad_filter_or_range_is_refused_before_anything_is_queued(client: httpx.Client) -> None:
    capture_id = stored(client, sample_capture("dns-udp.pcap"))
    bad_filter = client.post(f"/api/captures/{capture_id}/exports", json={"filter": "tcp.port =="})
    assert bad_filter.status_code == 400
    assert bad_filter.json()["error"] == "Unexpected end of filter expression."
    backwards = client.post(f"/api/captures/{capture_id}/exports", json={"first": 9, "last": 3})
    assert backwards.status_code == 400
    assert backwards.json()["error"] == "the range's last frame (3) comes before its first (9)"
    missing = client.get(f"/api/captures/{capture_id}/exports/999999")
    assert missing.status_code == 404


def job_row(server: Server, job_id: int) -> list[str]:
    code = (
        "from explorer.models import ExportJob\n"
        f"job = ExportJob.objects.get(pk={job_id})\n"
        "print(job.state, job.attempts)\n"
    )
    answer = server.manage("shell", "-v", "0", "-c", code)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.split()


def test_an_export_whose_server_was_killed_runs_again_once_asked_about(
    restartable: Server, client: httpx.Client, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    # About 80,000 packets: its filter takes the engine a few seconds.
    path = repeated_synscan(tmp_path_factory.mktemp("slow"), 40)
    capture_id = stored(client, path)
    made = client.post(f"/api/captures/{capture_id}/exports", json={"filter": SLOW_FILTER})
    assert made.status_code == 202, made.text
    deadline = time.monotonic() + 30
    while client.get(made.json()["url"]).json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)

    assert restartable.process is not None
    os.killpg(restartable.process.pid, signal.SIGKILL)
    restartable.process.wait(10)
    restartable.log.close()
    # It died in the middle: the job is still the running one it was, no file was made.
    assert job_row(restartable, made.json()["id"]) == ["running", "1"]

    restartable.start(new_database=False)
    job = wait_done(client, made.json()["url"])
    assert job["state"] == "done", job
    assert job_row(restartable, made.json()["id"]) == ["done", "2"]
    exported = client.get(job["file_url"])
    assert exported.status_code == 200
    assert frames_in(exported.content, tmp_path) == len(tshark_numbers(path, SLOW_FILTER)) > 0


def test_the_sweep_removes_the_records_of_exports_finished_a_week_ago(
    restartable: Server, client: httpx.Client
) -> None:
    capture_id = stored(client, sample_capture("dns-udp.pcap"))
    urls = []
    for _ in range(2):
        made = client.post(f"/api/captures/{capture_id}/exports", json={"filter": "dns"})
        assert made.status_code == 202, made.text
        assert wait_done(client, made.json()["url"])["state"] == "done"
        urls.append(made.json()["url"])
    old_id = int(urls[0].rstrip("/").rsplit("/", 1)[1])
    aged = restartable.manage(
        "shell",
        "-c",
        "from datetime import timedelta; from django.utils import timezone; "
        "from explorer.models import ExportJob; "
        f"ExportJob.objects.filter(pk={old_id}).update(finished_at=timezone.now() - timedelta(days=8))",
    )
    assert aged.returncode == 0, aged.stderr

    swept = restartable.manage("sweep_captures")
    assert swept.returncode == 0, swept.stderr
    assert "1 export record(s) finished long ago" in swept.stdout.splitlines()
    assert client.get(urls[0]).status_code == 404
    assert client.get(urls[1]).json()["state"] == "done"
