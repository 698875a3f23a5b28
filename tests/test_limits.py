"""Limits against abuse: what a user may keep, compressed captures, rates, filter lengths, downloads."""

from __future__ import annotations

import email.message
import io
import os
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import OWNER, PASSWORD, TEST_UPLOAD_LIMIT_MB, Server, sample_capture, upload

pytestmark = pytest.mark.engine

MAX_CAPTURES = 3
MAX_MB = 1
COUNT_MESSAGE = f"upload limit reached: one user may keep {MAX_CAPTURES} captures; delete some to upload more"
STORAGE_MESSAGE = (
    f"upload limit reached: one user may keep {MAX_MB} MB of captures; delete some to upload more"
)
INFLATED_MESSAGE = f"decompresses to more than the configured limit of {TEST_UPLOAD_LIMIT_MB} MB"


def staged_files(server: Server) -> list[Path]:
    staging = server.captures_dir / ".staging"
    return sorted(staging.iterdir()) if staging.exists() else []


def capture_names(client: httpx.Client) -> list[str]:
    listing = client.get("/api/captures/", params={"owner": "mine"})
    assert listing.status_code == 200, listing.text
    return sorted(capture["name"] for capture in listing.json())


def new_user(server: Server, name: str) -> httpx.Client:
    server.create_user(name)
    return server.client(name)


@contextmanager
def page_client(server: Server, username: str) -> Iterator[httpx.Client]:
    """A browser-like client signed in through the login form, with the page's CSRF cookie."""
    with httpx.Client(base_url=server.url, timeout=120, cookies=server.session_cookies(username)) as browser:
        assert browser.get("/").status_code == 200
        yield browser


def page_upload(browser: httpx.Client, *paths: Path) -> httpx.Response:
    files = [("file", (path.name, path.read_bytes())) for path in paths]
    token = browser.cookies["csrftoken"]
    return browser.post("/captures/upload/", data={"csrfmiddlewaretoken": token}, files=files)


# --- what one user may keep ------------------------------------------------------------------


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("quota"),
        UPLOAD_MAX_CAPTURES_PER_USER=str(MAX_CAPTURES),
        UPLOAD_MAX_MB_PER_USER=str(MAX_MB),
    )
    server.start()
    yield server
    server.stop()


def test_it_refuses_a_capture_beyond_the_count_per_user(quota_server: Server) -> None:
    with new_user(quota_server, "counted") as client:
        for name in ("dns-udp.pcap", "icmp_echo.pcapng", "tcp_handshake.pcapng"):
            assert upload(client, sample_capture(name)).status_code == 201
        refused = upload(client, sample_capture("arp_resolution.pcapng"))
        assert refused.status_code == 413, refused.text
        assert refused.json() == {"error": COUNT_MESSAGE}
        assert capture_names(client) == ["dns-udp.pcap", "icmp_echo.pcapng", "tcp_handshake.pcapng"]
        assert staged_files(quota_server) == []
        # Deleting one makes room for one.
        first = client.get("/api/captures/", params={"owner": "mine"}).json()[0]["id"]
        assert client.delete(f"/api/captures/{first}/").status_code == 204
        assert upload(client, sample_capture("arp_resolution.pcapng")).status_code == 201


def test_the_count_is_per_user(quota_server: Server) -> None:
    with new_user(quota_server, "other-counted") as client:
        assert upload(client, sample_capture("dns-udp.pcap")).status_code == 201


def test_files_of_one_request_beyond_the_count_are_listed_as_errors(quota_server: Server) -> None:
    names = ["dns-udp.pcap", "icmp_echo.pcapng", "tcp_handshake.pcapng", "arp_resolution.pcapng"]
    with new_user(quota_server, "many-at-once") as client:
        files = [("file", (name, sample_capture(name).read_bytes())) for name in names]
        response = client.post("/api/captures/", files=files)
        assert response.status_code == 201, response.text
        body = response.json()
        assert [capture["name"] for capture in body["captures"]] == names[:3]
        assert body["errors"] == [{"name": "arp_resolution.pcapng", "error": COUNT_MESSAGE}]
    assert staged_files(quota_server) == []


def test_it_refuses_a_capture_beyond_the_megabytes_per_user(quota_server: Server) -> None:
    with new_user(quota_server, "heavy") as client:
        assert upload(client, sample_capture("http_espn.pcapng")).status_code == 201  # 685 kB
        # 507 kB more would pass 1 MB: its bytes are dropped as they arrive.
        refused = upload(client, sample_capture("bro.org.pcap"))
        assert refused.status_code == 413, refused.text
        assert refused.json() == {"error": STORAGE_MESSAGE}
        # Declared larger than what is left: refused before the body is read.
        refused = upload(client, sample_capture("smb3_multichannel.pcap"))
        assert refused.status_code == 413, refused.text
        assert refused.json() == {"error": STORAGE_MESSAGE}
        # A small one still fits.
        assert upload(client, sample_capture("dns-udp.pcap")).status_code == 201
        assert capture_names(client) == ["dns-udp.pcap", "http_espn.pcapng"]
    assert staged_files(quota_server) == []


def multipart_chunks(boundary: str, name: str, data: bytes, chunk: int = 64 * 1024) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]
    yield f"\r\n--{boundary}--\r\n".encode()


def test_the_megabytes_are_counted_while_an_upload_of_unknown_length_streams(quota_server: Server) -> None:
    with new_user(quota_server, "streaming") as client:
        boundary = "----limits-test"
        data = os.urandom(3 * 1024 * 1024)
        response = client.post(
            "/api/captures/",
            content=multipart_chunks(boundary, "stream.pcap", data),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert response.status_code == 413, response.text
        assert response.json() == {"error": STORAGE_MESSAGE}
        assert capture_names(client) == []
    assert staged_files(quota_server) == []


def test_the_page_shows_the_limit_as_a_message(quota_server: Server) -> None:
    quota_server.create_user("page-user")
    with page_client(quota_server, "page-user") as browser:
        response = page_upload(browser, sample_capture("http_espn.pcapng"), sample_capture("bro.org.pcap"))
        assert response.status_code == 302, response.text
        listing = browser.get("/")
        assert "http_espn.pcapng: stored" in listing.text
        assert f"bro.org.pcap: {STORAGE_MESSAGE}" in listing.text


# --- compressed captures ---------------------------------------------------------------------

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet
FRAME = bytes(60)
RECORD = struct.pack("<IIII", 0, 0, len(FRAME), len(FRAME)) + FRAME


def gzip_member(prefix: bytes, block: bytes, repeats: int) -> bytes:
    """Return one gzip member of prefix + block * repeats, compressing the block only once.

    A full flush ends each compressed block on a byte boundary with nothing referring back,
    so its bytes can be repeated as they are; only the trailer's CRC sees every block.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    middle = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    crc = zlib.crc32(prefix)
    for _ in range(repeats):
        crc = zlib.crc32(block, crc)
    size = (len(prefix) + len(block) * repeats) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + start + middle * repeats + end + struct.pack("<II", crc, size)


def gzip_capture(records: int) -> bytes:
    """Return a gzip-compressed pcap of that many identical 60-byte frames (a multiple of 100,000)."""
    return gzip_member(PCAP_HEADER, RECORD * 100_000, records // 100_000)


@pytest.mark.parametrize("members", ["one member", "a small member, then the bomb"])
def test_a_gzip_bomb_is_refused_without_reading_it_all(
    api: httpx.Client, server: Server, members: str
) -> None:
    # Two million frames: 152 MB of packets in about 500 kB.
    if members == "one member":
        bomb = gzip_capture(2_000_000)
    else:
        bomb = gzip_member(PCAP_HEADER, RECORD, 1) + gzip_member(b"", RECORD * 100_000, 20)
    assert len(bomb) < TEST_UPLOAD_LIMIT_MB * 1024 * 1024 // 10
    before = capture_names(api)
    started = time.monotonic()
    response = api.post("/api/captures/", files={"file": ("bomb.pcap.gz", bomb)})
    assert response.status_code == 413, response.text
    assert response.json() == {"error": INFLATED_MESSAGE}
    # Stopped at the limit: reading the whole file would take capinfos seconds more.
    assert time.monotonic() - started < 5
    assert capture_names(api) == before
    assert staged_files(server) == []


def test_a_compressed_capture_within_the_decompressed_limit_is_stored(tmp_path_factory: Any) -> None:
    server = Server(tmp_path_factory.mktemp("inflate"), MAX_UPLOAD_MB="1", MAX_UNCOMPRESSED_MB="16")
    server.start()
    try:
        with server.client(OWNER) as client:
            # 15.2 MB of packets: more than MAX_UPLOAD_MB, within MAX_UNCOMPRESSED_MB.
            stored = client.post("/api/captures/", files={"file": ("big.pcap.gz", gzip_capture(200_000))})
            assert stored.status_code == 201, stored.text
            assert stored.json()["captures"][0]["packets"] == 200_000
            refused = client.post("/api/captures/", files={"file": ("bigger.pcap.gz", gzip_capture(300_000))})
            assert refused.status_code == 413, refused.text
            assert refused.json() == {"error": "decompresses to more than the configured limit of 16 MB"}
    finally:
        server.stop()


# --- rate limits -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("rated"),
        RATE_LIMIT_LOGIN_PER_IP="6/600",
        RATE_LIMIT_LOGIN_PER_USERNAME="3/600",
        RATE_LIMIT_UPLOADS="2/600",
        RATE_LIMIT_FILTERS="3/600",
    )
    server.start()
    yield server
    server.stop()


def sign_in(server: Server, username: str, password: str, form: str = "/accounts/login/") -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        browser.get(form)
        return browser.post(
            form,
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": server.url + form},
        )


def assert_too_many(response: httpx.Response, words: str) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= 600
    text = response.json()["error"] if response.request.url.path.startswith("/api/") else response.text
    assert words in text and "try again in" in text, text


def test_failed_sign_ins_are_limited_per_username(rated: Server) -> None:
    rated.create_user("target")
    # Signing in successfully costs nothing.
    for _ in range(4):
        assert sign_in(rated, "target", PASSWORD).status_code == 302
    for _ in range(3):
        assert sign_in(rated, "target", "wrong").status_code == 200
    assert_too_many(sign_in(rated, "target", "wrong"), "Too many failed sign-ins")
    # Even the right password waits now; another user signs in from the same address.
    assert_too_many(sign_in(rated, "target", PASSWORD), "Too many failed sign-ins")
    assert sign_in(rated, OWNER, PASSWORD).status_code == 302


def test_uploads_are_limited_per_user(rated: Server) -> None:
    with new_user(rated, "uploader") as client:
        for _ in range(2):
            assert upload(client, sample_capture("dns-udp.pcap")).status_code == 201
        refused = upload(client, sample_capture("dns-udp.pcap"))
        assert_too_many(refused, "too many uploads")
        assert len(capture_names(client)) == 2
    assert staged_files(rated) == []
    with new_user(rated, "another-uploader") as client:
        assert upload(client, sample_capture("dns-udp.pcap")).status_code == 201


def test_new_filters_and_statistics_are_limited_per_user(rated: Server) -> None:
    with new_user(rated, "filterer") as client:
        answer = upload(client, sample_capture("http_google.pcapng"))
        assert answer.status_code == 201, answer.text
        capture = answer.json()["id"]
        packets = f"/api/captures/{capture}/packets"
        for expression in ("tcp", "http", "dns"):
            assert client.get(packets, params={"filter": expression}).status_code == 200
        # Paging through a filter already run, and the unfiltered list, cost nothing.
        for offset in range(0, 12, 2):
            page = client.get(packets, params={"filter": "tcp", "offset": offset, "limit": 2})
            assert page.status_code == 200
        assert client.get(packets).status_code == 200
        assert_too_many(client.get(packets, params={"filter": "udp"}), "Too many new filters and statistics")
        assert_too_many(
            client.get(f"/api/captures/{capture}/conversations"), "Too many new filters and statistics"
        )
    with httpx.Client(base_url=rated.url, timeout=60, cookies=rated.session_cookies("filterer")) as browser:
        page = browser.get(f"/captures/{capture}/statistics/", params={"filter": "ip"})
        assert_too_many(page, "Too many new filters and statistics")
        assert 'id="too-many-requests"' in page.text
    # Someone else has a bucket of their own.
    with rated.client(OWNER) as owner:
        answer = upload(owner, sample_capture("http_google.pcapng"))
        assert answer.status_code == 201, answer.text
        response = owner.get(f"/api/captures/{answer.json()['id']}/packets", params={"filter": "udp"})
        assert response.status_code == 200


def test_failed_sign_ins_are_limited_per_address(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Server(tmp_path_factory.mktemp("address"), RATE_LIMIT_LOGIN_PER_IP="4/600")
    server.start()
    try:
        for name in ("a", "b", "c"):
            assert sign_in(server, name, "wrong").status_code == 200
        assert sign_in(server, "d", "wrong", "/admin/login/").status_code == 200
        assert_too_many(sign_in(server, "e", "wrong"), "Too many failed sign-ins")
        assert_too_many(sign_in(server, OWNER, PASSWORD), "Too many failed sign-ins")
        # The admin's sign-in form counts the same attempts.
        assert_too_many(sign_in(server, OWNER, PASSWORD, "/admin/login/"), "Too many failed sign-ins")
    finally:
        server.stop()


# --- display filters reach the engine as data, and within its request line -----------------


def long_filter(length: int) -> str:
    """Return a valid display filter of exactly length characters."""
    term = "frame.number >= 1"
    expression = term
    while len(expression) + len(" || " + term) <= length:
        expression += " || " + term
    return expression.replace(">=", ">=" + " " * (length - len(expression)), 1)


FILTER_LIMIT = 1024
TOO_LONG = "display filter too long"


def filter_routes(capture: int, expression: str) -> dict[str, dict[str, Any]]:
    """Return every API route that takes a display filter, with its parameters."""
    base = f"/api/captures/{capture}"
    return {
        f"{base}/packets": {"filter": expression},
        f"{base}/conversations": {"filter": expression, "kind": "TCP"},
        f"{base}/endpoints": {"filter": expression, "kind": "IPv4"},
        f"{base}/protocol-hierarchy": {"filter": expression},
        f"{base}/expert": {"filter": expression},
        f"{base}/iograph": {"filter": [expression] * 4, "graph": ["packets", "bytes", "packets", "bytes"]},
        f"{base}/flow": {"filter": expression},
        f"{base}/http-requests": {"filter": expression},
        f"{base}/dns-queries": {"filter": expression},
        f"{base}/export": {"filter": expression},
        "/api/filters/check": {"filter": expression},
    }


@pytest.fixture(scope="module")
def google(api: httpx.Client) -> int:
    answer = upload(api, sample_capture("http_google.pcapng"))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def test_a_filter_at_the_limit_runs_on_every_route(api: httpx.Client, google: int) -> None:
    expression = long_filter(FILTER_LIMIT)
    assert len(expression) == FILTER_LIMIT
    for route, params in filter_routes(google, expression).items():
        response = api.get(route, params=params)
        assert response.status_code == 200, (route, response.text)
        if route.endswith("/packets"):
            assert response.json()["displayed"] == 12
        if route.endswith("/check"):
            assert response.json() == {"valid": True, "error": None}


@pytest.mark.parametrize(
    ("expression", "counted"),
    [
        (long_filter(FILTER_LIMIT + 1), "1,025 characters"),
        # 15 characters, 2 quotes of 2 bytes and 200 characters of 6 (\u00e9).
        ('frame contains "' + "é" * 200 + '"', "1,219 bytes"),
    ],
    ids=["ascii", "beyond-ascii"],
)
def test_a_filter_over_the_limit_gets_one_clear_error_on_every_route(
    api: httpx.Client, google: int, expression: str, counted: str
) -> None:
    expected = (
        f"{TOO_LONG}: {counted}, the most is 1,024 "
        "(quotes and backslashes count twice, a character beyond ASCII 6 or 12 times)"
    )
    for route, params in filter_routes(google, expression).items():
        response = api.get(route, params=params)
        if route.endswith("/check"):
            assert response.json() == {"valid": False, "error": expected}
        else:
            assert response.status_code == 400, (route, response.text)
            assert response.json() == {"error": expected}, route


def test_shell_syntax_in_a_filter_is_only_a_filter(api: httpx.Client, google: int, tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    for expression in (
        f"$(touch {marker})",
        f"tcp; touch {marker}",
        f"`touch {marker}`",
        f"tcp | touch {marker}",
    ):
        response = api.get(f"/api/captures/{google}/packets", params={"filter": expression})
        assert response.status_code == 400, response.text
        conversations = api.get(f"/api/captures/{google}/protocol-hierarchy", params={"filter": expression})
        assert conversations.status_code == 400, conversations.text
    assert not marker.exists()


# --- downloads -------------------------------------------------------------------------------


def disposition(response: httpx.Response) -> tuple[str, str]:
    """Return the disposition type and the file name a browser would save the response as."""
    assert response.status_code == 200, response.text
    header = email.message.Message()
    header["content-disposition"] = response.headers["content-disposition"]
    name = header.get_filename()
    assert name is not None, response.headers["content-disposition"]
    return header.get_content_disposition() or "", name


def upload_named(client: httpx.Client, path: Path, name: str) -> httpx.Response:
    """Upload a file under a name sent as it is (a client library would percent-encode some of it)."""
    boundary = "----names-test"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"').encode()
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + quoted
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return client.post(
        "/api/captures/", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ('"quoted"; filename=evil.sh', '"quoted"; filename=evil.sh'),
        ("../../..\\windows\\naïve résumé.pcapng", "naïve résumé.pcapng"),
        ("tab\there\x7fand\x1bcontrols.pcapng", "tabhereandcontrols.pcapng"),
    ],
    ids=["quotes", "path-and-utf8", "controls"],
)
def test_every_download_is_an_attachment_with_a_safe_name(
    api: httpx.Client, server: Server, sent: str, shown: str
) -> None:
    answer = upload_named(api, sample_capture("http_google.pcapng"), sent)
    assert answer.status_code == 201, answer.text
    capture = answer.json()["captures"][0]
    assert capture["name"] == shown
    ident = capture["id"]
    stem = Path(shown).stem
    objects = api.get(f"/api/captures/{ident}/http-objects").json()
    assert objects, "the capture holds HTTP objects"
    expected = {
        f"/api/captures/{ident}/download": shown,
        f"/api/captures/{ident}/follow/raw?kind=TCP&stream=0": f"{stem}-tcp-stream-0-both.bin",
        f"/api/captures/{ident}/export": f"{stem}-export.pcapng",
        f"/api/captures/{ident}/http-objects.zip": f"{stem}-http-objects.zip",
        f"/captures/{ident}/flow/?format=svg": f"{stem}-flow-graph.svg",
    }
    with httpx.Client(base_url=server.url, timeout=120, cookies=server.session_cookies(OWNER)) as browser:
        for route, name in expected.items():
            kind, saved_as = disposition((browser if route.startswith("/captures/") else api).get(route))
            assert (kind, saved_as) == ("attachment", name), route
            assert "/" not in saved_as and "\\" not in saved_as
    for item in objects:
        kind, saved_as = disposition(api.get(item["download_url"]))
        assert kind == "attachment"
        assert saved_as == item["filename"].split("?")[0].rstrip("/").rsplit("/", 1)[-1] or saved_as
        assert "/" not in saved_as and "\\" not in saved_as and not saved_as.startswith(".")
    archive = zipfile.ZipFile(io.BytesIO(api.get(f"/api/captures/{ident}/http-objects.zip").content))
    for entry in archive.namelist():
        assert "/" not in entry and "\\" not in entry and not entry.startswith("."), entry
    # Neither name became a path on the server.
    assert list(server.workdir.rglob("evil.sh")) == []
    assert list(server.workdir.rglob("*résumé*")) == []
