"""Faults around the server: a full disk while an upload is stored, a database gone for a moment."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import OWNER, Server, sample_capture, upload

pytestmark = pytest.mark.engine

DISK_FULL = "the server has no room left to store this upload: nothing was kept"
DATABASE_AWAY = "the database is unavailable for a moment: try again shortly"
# The captures folder of the cramped server is a file system of this size: small captures fit,
# one of 2.6 MB does not.
DISK_SIZE = 1024 * 1024
BIG = "smb3_multichannel.pcap"
# Mount a small tmpfs on the captures folder in a mount namespace of the server's own, then
# run the server: no root needed where user namespaces are allowed, and nothing to unmount.
MOUNT_AND_RUN = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'


def captures_folder(server: Server) -> Path:
    """Return the captures folder as the server sees it (through its own mount namespace)."""
    if server.process is None:
        return server.captures_dir
    return Path(f"/proc/{server.process.pid}/root") / server.captures_dir.relative_to("/")


def kept_files(server: Server) -> list[Path]:
    """Return every file under the captures folder: stored, staged, exported or filtered."""
    folder = captures_folder(server)
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


def capture_names(client: httpx.Client) -> list[str]:
    listing = client.get("/api/captures/")
    assert listing.status_code == 200, listing.text
    return sorted(capture["name"] for capture in listing.json())


def namespaces_work() -> bool:
    probe = ["unshare", "--user", "--map-root-user", "--mount", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def cramped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose captures folder is a file system of DISK_SIZE bytes."""
    if not namespaces_work():
        pytest.skip("this machine allows no user and mount namespaces (unshare)")
    server = Server(tmp_path_factory.mktemp("cramped"))
    server.captures_dir.mkdir()
    server.command_prefix = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        MOUNT_AND_RUN,
        "mount-and-run",
        str(DISK_SIZE),
        str(server.captures_dir),
    ]
    server.start()
    yield server
    server.stop()


def test_the_captures_folder_is_small(cramped: Server) -> None:
    assert (
        os.statvfs(captures_folder(cramped)).f_blocks * os.statvfs(captures_folder(cramped)).f_frsize
        == DISK_SIZE
    )


def test_a_full_disk_refuses_the_upload_and_keeps_nothing(cramped: Server) -> None:
    assert sample_capture(BIG).stat().st_size > DISK_SIZE
    with cramped.client(OWNER) as client:
        before = kept_files(cramped)
        response = upload(client, sample_capture(BIG))
        assert response.status_code == 507, response.text
        assert response.json() == {"error": DISK_FULL}
        assert capture_names(client) == []
        assert kept_files(cramped) == before


def test_a_full_disk_refuses_every_file_of_the_request(cramped: Server) -> None:
    with cramped.client(OWNER) as client:
        before = kept_files(cramped)
        files = [
            ("file", ("dns-udp.pcap", sample_capture("dns-udp.pcap").read_bytes())),
            ("file", (BIG, sample_capture(BIG).read_bytes())),
        ]
        response = client.post("/api/captures/", files=files)
        assert response.status_code == 507, response.text
        assert response.json() == {"error": DISK_FULL}
        assert capture_names(client) == []
        assert kept_files(cramped) == before


def test_a_full_disk_is_explained_on_the_upload_page(cramped: Server) -> None:
    with httpx.Client(base_url=cramped.url, timeout=120, cookies=cramped.session_cookies(OWNER)) as browser:
        assert browser.get("/").status_code == 200
        response = browser.post(
            "/captures/upload/",
            data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]},
            files={"file": (BIG, sample_capture(BIG).read_bytes())},
        )
        assert response.status_code == 507
        assert response.headers["content-type"].startswith("text/html")
        assert 'id="upload-refused"' in response.text
        assert "The server has no room left to store this upload: nothing was kept." in response.text


def test_uploads_that_fit_are_stored_after_a_full_disk(cramped: Server) -> None:
    with cramped.client(OWNER) as client:
        assert upload(client, sample_capture(BIG)).status_code == 507
        response = upload(client, sample_capture("http_google.pcapng"))
        assert response.status_code == 201, response.text
        assert capture_names(client) == ["http_google.pcapng"]
        assert client.get(f"/api/captures/{response.json()['id']}/packets").json()["total"] == 12


# --- the database away for a moment ----------------------------------------------------------


def test_requests_fail_cleanly_while_the_database_is_away_and_succeed_after(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = Server(tmp_path_factory.mktemp("database"))
    server.start()
    try:
        database = server.workdir / "db.sqlite3"
        cookies = server.session_cookies(OWNER)
        with (
            server.client(OWNER) as client,
            httpx.Client(base_url=server.url, timeout=60, cookies=cookies) as browser,
        ):
            stored = upload(client, sample_capture("http_google.pcapng"))
            assert stored.status_code == 201, stored.text
            ident = stored.json()["id"]
            files_before = kept_files(server)

            # SQLite opens an empty database in its place: every table is missing.
            away = database.with_name("db.sqlite3.away")
            os.replace(database, away)
            try:
                for route in ("/api/captures/", f"/api/captures/{ident}/", f"/api/captures/{ident}/packets"):
                    response = client.get(route)
                    assert response.status_code == 503, (route, response.text)
                    assert response.json() == {"error": DATABASE_AWAY}
                    assert response.headers["retry-after"] == "5"
                # Anonymous, and with a session: the same answers.
                anonymous = httpx.get(f"{server.url}/api/captures/{ident}/", timeout=30)
                assert anonymous.status_code == 503, anonymous.text
                assert anonymous.json() == {"error": DATABASE_AWAY}
                for page in ("/", f"/captures/{ident}/", f"/captures/{ident}/statistics/"):
                    response = browser.get(page)
                    assert response.status_code == 503, (page, response.text)
                    assert 'id="unavailable"' in response.text
                    assert "The database is unavailable for a moment." in response.text
                # An upload is refused and leaves nothing behind.
                refused = upload(client, sample_capture("dns-udp.pcap"))
                assert refused.status_code == 503, refused.text
                # The staged file is removed once the answer is sent.
                deadline = time.monotonic() + 10
                while kept_files(server) != files_before and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert kept_files(server) == files_before
            finally:
                os.replace(away, database)

            assert capture_names(client) == ["http_google.pcapng"]
            assert client.get(f"/api/captures/{ident}/packets").json()["total"] == 12
            assert browser.get("/").status_code == 200
            assert upload(client, sample_capture("dns-udp.pcap")).status_code == 201
    finally:
        server.stop()
