"""Uploads: files are stored byte for byte, recognised by content, and refused cleanly otherwise."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import socket
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import OWNER, TEST_UPLOAD_LIMIT_MB, Server, all_packets, sample_capture, tshark_rows, upload

pytestmark = pytest.mark.engine

LIMIT_MESSAGE = f"larger than the configured limit of {TEST_UPLOAD_LIMIT_MB} MB"
COLUMNS = ["number", "time", "source", "destination", "protocol", "length", "info"]


def stored_files(server: Server) -> set[Path]:
    """Return the files directly under the server's captures folder (not the staging folder)."""
    if not server.captures_dir.exists():  # created by the first upload
        return set()
    return {path for path in server.captures_dir.iterdir() if path.is_file()}


def staged_files(server: Server) -> list[Path]:
    staging = server.captures_dir / ".staging"
    return sorted(staging.iterdir()) if staging.exists() else []


def capture_ids(client: httpx.Client) -> set[int]:
    listing = client.get("/api/captures/")
    assert listing.status_code == 200, listing.text
    return {capture["id"] for capture in listing.json()}


def upload_bytes(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/api/captures/", files={"file": (name, data)})


def stored_one(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["errors"] == []
    assert len(body["captures"]) == 1
    capture: dict[str, Any] = body["captures"][0]
    assert body["id"] == capture["id"]
    assert body["url"] == capture["url"] == f"/captures/{capture['id']}/"
    return capture


def as_columns(row: dict[str, Any]) -> list[str]:
    return [str(row[column]) for column in COLUMNS]


def tiny_png() -> bytes:
    """Return a valid 1x1 RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


# --- stored byte for byte -------------------------------------------------------------------


def test_the_stored_file_is_byte_for_byte_the_upload(api: httpx.Client) -> None:
    path = sample_capture("http_google.pcapng")
    original = path.read_bytes()
    capture = stored_one(upload(api, path))
    assert capture["name"] == "http_google.pcapng"
    assert capture["size"] == len(original) == path.stat().st_size
    assert capture["sha256"] == hashlib.sha256(original).hexdigest()

    download = api.get(f"/api/captures/{capture['id']}/download")
    assert download.status_code == 200
    assert download.content == original
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment")
    assert 'filename="http_google.pcapng"' in disposition


def test_several_files_in_one_request_are_all_stored(api: httpx.Client) -> None:
    names = ["tcp_handshake.pcapng", "dns-udp.pcap", "arp_resolution.pcapng"]
    before = capture_ids(api)
    files = [("file", (name, sample_capture(name).read_bytes())) for name in names]
    response = api.post("/api/captures/", files=files)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["errors"] == []
    assert [capture["name"] for capture in body["captures"]] == names
    assert [capture["packets"] for capture in body["captures"]] == [
        len(tshark_rows(sample_capture(name))) for name in names
    ]
    assert [capture["sha256"] for capture in body["captures"]] == [
        hashlib.sha256(sample_capture(name).read_bytes()).hexdigest() for name in names
    ]
    assert body["id"] == body["captures"][0]["id"]
    assert capture_ids(api) - before == {capture["id"] for capture in body["captures"]}


def test_good_and_bad_files_in_one_request_store_the_good_and_list_the_bad(
    api: httpx.Client, server: Server
) -> None:
    files = [
        ("file", ("dns-udp.pcap", sample_capture("dns-udp.pcap").read_bytes())),
        ("file", ("notes.txt", b"these are notes, not packets\n" * 20)),
    ]
    response = api.post("/api/captures/", files=files)
    assert response.status_code == 201, response.text
    body = response.json()
    assert [capture["name"] for capture in body["captures"]] == ["dns-udp.pcap"]
    assert body["errors"] == [{"name": "notes.txt", "error": "not a capture file"}]
    assert staged_files(server) == []


# --- formats recognised by content ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "file_format", "precision", "encapsulation"),
    [
        ("tcp-handshake-nano.pcap", "nsecpcap", "nanoseconds (9)", "linux-sll"),
        ("pptp.pcap", "pcap", "microseconds (6)", "ether"),
        ("http_google.pcapng", "pcapng", "microseconds (6)", "ether"),
        ("ja4-http1-pcap-named-pcapng.pcapng", "pcap", "microseconds (6)", "ether"),
    ],
)
def test_the_format_is_detected_from_the_content(
    api: httpx.Client, name: str, file_format: str, precision: str, encapsulation: str
) -> None:
    path = sample_capture(name)
    capture = stored_one(upload(api, path))
    assert capture["format"] == file_format
    assert capture["time_precision"] == precision
    assert capture["encapsulation"] == encapsulation
    assert capture["packets"] == len(tshark_rows(path))
    assert capture["warning"] == ""


def test_a_nanosecond_capture_keeps_its_nanoseconds(api: httpx.Client) -> None:
    capture = stored_one(upload(api, sample_capture("tcp-handshake-nano.pcap")))
    assert capture["time_precision"].startswith("nanoseconds")
    # capinfos: First packet time 1418145369.924505488, duration 0.127609669 seconds
    assert str(capture["first_time"]).startswith("1418145369.924505488")
    assert str(capture["duration"]).startswith("0.127609669")
    shown = all_packets(api, capture["id"])
    assert [as_columns(row) for row in shown] == tshark_rows(sample_capture("tcp-handshake-nano.pcap"))


def test_a_big_endian_pcap_shows_the_packets_tshark_shows(api: httpx.Client) -> None:
    path = sample_capture("pptp.pcap")
    assert path.read_bytes()[:4] == b"\xa1\xb2\xc3\xd4"  # big-endian magic
    capture = stored_one(upload(api, path))
    shown = all_packets(api, capture["id"])
    assert [as_columns(row) for row in shown] == tshark_rows(path)


def test_a_gzip_compressed_capture_is_accepted(api: httpx.Client, tmp_path: Path) -> None:
    original = sample_capture("http_google.pcapng")
    compressed = tmp_path / "http_google.pcapng.gz"
    compressed.write_bytes(gzip.compress(original.read_bytes()))
    capture = stored_one(upload(api, compressed))
    expected = tshark_rows(original)
    assert capture["packets"] == len(expected) == 12
    assert "pcapng" in capture["format"]
    assert capture["size"] == compressed.stat().st_size
    # The compressed file is what is kept, and the packets read from it are the original's.
    assert api.get(f"/api/captures/{capture['id']}/download").content == compressed.read_bytes()
    assert [as_columns(row) for row in all_packets(api, capture["id"])] == expected


@pytest.mark.parametrize(
    ("name", "encapsulation", "link_type"),
    [
        ("linux_dlt_sll2.pcap", "linux-sll2", "Linux cooked-mode capture v2 (210 - linux-sll2)"),
        ("nflog.pcap", "nflog", "NFLOG (141 - nflog)"),
        ("80211beacon.pcapng", "ieee-802-11", "IEEE 802.11 Wireless LAN (20 - ieee-802-11)"),
        ("LINKTYPE_RAW_ipv6.pcap", "rawip", "Raw IP (7 - rawip)"),
    ],
)
def test_odd_link_types_are_reported(
    api: httpx.Client, name: str, encapsulation: str, link_type: str
) -> None:
    path = sample_capture(name)
    capture = stored_one(upload(api, path))
    assert capture["encapsulation"] == encapsulation
    assert capture["link_types"] == [link_type]
    assert len(capture["interfaces"]) == 1
    assert capture["interfaces"][0]["Encapsulation"] == link_type
    assert [as_columns(row) for row in all_packets(api, capture["id"])] == tshark_rows(path)


@pytest.mark.parametrize(("name", "file_format"), [("empty.pcap", "pcap"), ("empty.pcapng", "pcapng")])
def test_an_empty_capture_is_accepted_with_no_packets(api: httpx.Client, name: str, file_format: str) -> None:
    capture = stored_one(upload(api, sample_capture(name)))
    assert capture["packets"] == 0
    assert capture["format"] == file_format
    assert capture["first_time"] is None and capture["last_time"] is None
    assert capture["warning"] == ""
    assert api.get(f"/api/captures/{capture['id']}/download").content == sample_capture(name).read_bytes()


# --- refusals -------------------------------------------------------------------------------


def rejected(client: httpx.Client, server: Server, name: str, data: bytes) -> str:
    """Upload a file that must be refused; check nothing is kept; return the error message."""
    before_ids, before_files = capture_ids(client), stored_files(server)
    response = upload_bytes(client, name, data)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["captures"] == [] and body["id"] is None and body["url"] is None
    assert len(body["errors"]) == 1
    assert body["errors"][0]["name"] == name
    assert capture_ids(client) == before_ids
    assert stored_files(server) == before_files
    assert staged_files(server) == []
    message: str = body["errors"][0]["error"]
    return message


def test_a_text_file_is_not_a_capture(api: httpx.Client, server: Server) -> None:
    manifest = sample_capture("MANIFEST.tsv")
    assert rejected(api, server, "MANIFEST.tsv", manifest.read_bytes()) == "not a capture file"


def test_random_bytes_are_not_a_capture(api: httpx.Client, server: Server) -> None:
    assert rejected(api, server, "noise.pcap", random.Random(7).randbytes(5000)) == "not a capture file"


def test_a_png_image_is_not_a_capture(api: httpx.Client, server: Server) -> None:
    message = rejected(api, server, "picture.pcap", tiny_png())
    assert message.startswith("not a capture file"), message


def test_a_json_file_is_not_a_capture(api: httpx.Client, server: Server) -> None:
    data = json.dumps({"packets": [{"number": 1, "protocol": "TCP"}]}).encode()
    message = rejected(api, server, "packets.json", data)
    assert message.startswith("not a capture file"), message


def test_a_capture_truncated_mid_packet_keeps_its_readable_packets(api: httpx.Client) -> None:
    path = sample_capture("truncated_dns_2.pcap")
    capture = stored_one(upload(api, path))
    assert capture["warning"] == "file is truncated after packet 1: 1 packet readable"
    assert capture["packets"] == 1
    assert capture["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_it_rejects_a_capture_truncated_before_its_first_packet(api: httpx.Client, server: Server) -> None:
    data = sample_capture("dns-udp.pcap").read_bytes()[:30]  # 24-byte header + 6 bytes of a record
    message = rejected(api, server, "cut.pcap", data)
    assert "truncated" in message, message


def test_a_request_without_a_file_is_refused(api: httpx.Client) -> None:
    response = api.post("/api/captures/", data={"other": "value"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["captures"] == []
    assert body["errors"] and "file" in body["errors"][0]["error"]


@pytest.mark.parametrize("extra", [1, 1024 * 1024], ids=["limit+1B", "limit+1MB"])
def test_a_file_over_the_limit_is_refused_and_nothing_is_kept(
    api: httpx.Client, server: Server, extra: int
) -> None:
    before_ids, before_files = capture_ids(api), stored_files(server)
    data = os.urandom(TEST_UPLOAD_LIMIT_MB * 1024 * 1024 + extra)
    response = upload_bytes(api, "huge.pcap", data)
    assert response.status_code == 413, response.text
    assert response.json() == {"error": LIMIT_MESSAGE}
    assert capture_ids(api) == before_ids
    assert stored_files(server) == before_files
    assert staged_files(server) == []


def test_an_oversized_file_beside_a_good_one_is_listed_as_an_error(api: httpx.Client, server: Server) -> None:
    before_files = stored_files(server)
    files = [
        ("file", ("tcp_handshake.pcapng", sample_capture("tcp_handshake.pcapng").read_bytes())),
        ("file", ("huge.pcap", os.urandom(TEST_UPLOAD_LIMIT_MB * 1024 * 1024 + 1))),
    ]
    response = api.post("/api/captures/", files=files)
    assert response.status_code == 201, response.text
    body = response.json()
    assert [capture["name"] for capture in body["captures"]] == ["tcp_handshake.pcapng"]
    assert body["errors"] == [{"name": "huge.pcap", "error": LIMIT_MESSAGE}]
    assert len(stored_files(server) - before_files) == 1
    assert staged_files(server) == []


def test_a_file_at_the_limit_is_not_refused_for_its_size(api: httpx.Client, server: Server) -> None:
    # Exactly the limit passes the size check; text is then refused as not a capture.
    # (Random bytes would not do: now and then wiretap's heuristics take them for a format.)
    line = b"plain text, not a packet capture\n"
    data = (line * (TEST_UPLOAD_LIMIT_MB * 1024 * 1024 // len(line) + 1))[
        : TEST_UPLOAD_LIMIT_MB * 1024 * 1024
    ]
    assert rejected(api, server, "exactly.pcap", data) == "not a capture file"


def test_an_interrupted_upload_leaves_nothing_behind(api: httpx.Client, server: Server) -> None:
    before_ids, before_files = capture_ids(api), stored_files(server)
    boundary = "----capture-explorer-test"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="partial.pcap"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    declared = 3 * 1024 * 1024
    request = (
        "POST /api/captures/ HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {declared}\r\n"
        "\r\n"
    ).encode()
    body = head + sample_capture("dns-udp.pcap").read_bytes()[:24] + os.urandom(1024 * 1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request + body)
        time.sleep(0.5)
    # The server notices the closed connection; give it a moment to clean up.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and staged_files(server):
        time.sleep(0.1)
    assert staged_files(server) == []
    assert stored_files(server) == before_files
    assert capture_ids(api) == before_ids
    # ...and it keeps serving.
    capture = stored_one(upload(api, sample_capture("tcp_handshake.pcapng")))
    assert capture["packets"] == 3


@pytest.mark.parametrize(
    ("sent_name", "shown_name"),
    [("../../etc/passwd.pcap", "passwd.pcap"), ("C:\\x\\y.pcap", "y.pcap"), ("/tmp/abs/z.pcap", "z.pcap")],
)
def test_path_components_in_a_file_name_are_dropped(
    api: httpx.Client, server: Server, sent_name: str, shown_name: str
) -> None:
    path = sample_capture("tcp_handshake.pcapng")
    before = stored_files(server)
    capture = stored_one(upload(api, path, name=sent_name))
    assert capture["name"] == shown_name
    new = stored_files(server) - before
    assert len(new) == 1
    (stored,) = new
    assert stored.resolve().parent == server.captures_dir.resolve()
    assert stored.read_bytes() == path.read_bytes()
    # Stored under a generated name: neither the sent path nor the display name is used as a path.
    assert stored.name != shown_name
    assert not (server.captures_dir / sent_name).exists()
    assert list(server.workdir.rglob(shown_name)) == []
    disposition = api.get(f"/api/captures/{capture['id']}/download").headers["content-disposition"]
    assert f'filename="{shown_name}"' in disposition


def test_the_page_upload_form_stores_and_redirects(api: httpx.Client, server: Server) -> None:
    path = sample_capture("icmp_echo.pcapng")
    before = capture_ids(api)
    with httpx.Client(base_url=server.url, timeout=120, cookies=server.session_cookies(OWNER)) as browser:
        page = browser.get("/")
        assert page.status_code == 200
        token = browser.cookies["csrftoken"]
        with open(path, "rb") as handle:
            response = browser.post(
                "/captures/upload/",
                data={"csrfmiddlewaretoken": token},
                files={"file": (path.name, handle)},
            )
        assert response.status_code == 302, response.text
        assert response.headers["location"] == "/"
        listing = browser.get("/")
        assert "icmp_echo.pcapng: stored, 8 packets" in listing.text
    new = capture_ids(api) - before
    assert len(new) == 1
    (ident,) = new
    capture = api.get(f"/api/captures/{ident}/").json()
    assert capture["name"] == "icmp_echo.pcapng"
    assert capture["packets"] == len(tshark_rows(path))
    assert capture["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_page_upload_form_requires_the_csrf_token(api: httpx.Client, server: Server) -> None:
    before = capture_ids(api)
    with httpx.Client(base_url=server.url, timeout=120, cookies=server.session_cookies(OWNER)) as browser:
        browser.get("/")
        response = browser.post(
            "/captures/upload/", files={"file": ("x.pcap", sample_capture("dns-udp.pcap").read_bytes())}
        )
    assert response.status_code == 403
    assert capture_ids(api) == before


def test_uploads_after_downloads_on_one_kept_alive_connection_are_stored(api: httpx.Client) -> None:
    # The server once started a request on a kept-alive connection in the context of the one
    # before it, whose thread context had exited: the upload's rate-limit check failed with a 500.
    capture = stored_one(upload(api, sample_capture("http_google.pcapng")))
    for _ in range(10):
        assert api.get(f"/api/captures/{capture['id']}/download").status_code == 200
        stored = stored_one(upload(api, sample_capture("empty.pcapng")))
        assert api.delete(f"/api/captures/{stored['id']}/").status_code == 204
