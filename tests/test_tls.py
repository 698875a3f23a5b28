"""TLS key logs: attached to a capture they decrypt it everywhere; embedded secrets need none."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import httpx
import pytest

from .conftest import Server, all_packets, sample_capture, tshark_follow, tshark_numbers, tshark_rows, upload

pytestmark = pytest.mark.engine

DECRYPTION_SECRETS_BLOCK = 0x0000000A
KEYS = sample_capture("tls_nss_example.keys")
TLS = sample_capture("tls_nss_example.pcap")


def attach(api: httpx.Client, capture_id: int, data: bytes, name: str = "keys.txt") -> httpx.Response:
    return api.post(f"/api/captures/{capture_id}/keylog", files={"file": (name, data)})


@pytest.fixture
def tls_capture(api: httpx.Client) -> int:
    return int(upload(api, TLS).json()["id"])


def test_a_key_log_decrypts_http_inside_tls(api: httpx.Client, tls_capture: int) -> None:
    assert all_packets(api, tls_capture, filter="http") == []
    response = attach(api, tls_capture, KEYS.read_bytes())
    assert response.status_code == 200, response.text
    assert response.json() == {"secrets": 6}
    assert api.get(f"/api/captures/{tls_capture}/").json()["keylog_secrets"] == 6

    keys = f"tls.keylog_file:{KEYS}"
    expected = tshark_rows(TLS, "http", "-o", keys)
    shown = all_packets(api, tls_capture, filter="http")
    assert [row["number"] for row in shown] == [int(row[0]) for row in expected] == [10, 30]
    assert [row["info"] for row in shown] == [row[6] for row in expected]
    everything = all_packets(api, tls_capture)
    assert [row["protocol"] for row in everything] == [row[4] for row in tshark_rows(TLS, "", "-o", keys)]

    detail = api.get(f"/api/captures/{tls_capture}/packets/10/").json()
    names = [source["name"] for source in detail["sources"]]
    assert "Decrypted TLS" in " ".join(names), names
    decrypted = base64.b64decode(
        detail["sources"][names.index(next(n for n in names if "Decrypted" in n))]["bytes"]
    )
    assert decrypted.startswith(b"GET /pki/srv_key.pem HTTP/1.0")


def test_removing_the_key_log_stops_decrypting(api: httpx.Client, tls_capture: int) -> None:
    attach(api, tls_capture, KEYS.read_bytes())
    assert len(all_packets(api, tls_capture, filter="http")) == 2
    assert api.delete(f"/api/captures/{tls_capture}/keylog").status_code == 204
    assert all_packets(api, tls_capture, filter="http") == []
    assert api.get(f"/api/captures/{tls_capture}/").json()["keylog_secrets"] is None


def test_it_refuses_what_is_not_a_key_log(api: httpx.Client, tls_capture: int) -> None:
    response = attach(api, tls_capture, b"CLIENT_RANDOM not-hex at all\n", "bad.txt")
    assert response.status_code == 400
    assert "not a TLS key log file" in response.json()["error"]
    assert api.get(f"/api/captures/{tls_capture}/").json()["keylog_secrets"] is None


def test_the_key_log_is_never_served_back(api: httpx.Client, server: Server, tls_capture: int) -> None:
    attach(api, tls_capture, KEYS.read_bytes())
    secret = next(line for line in KEYS.read_text().splitlines() if line.startswith("CLIENT")).split()[2]
    assert api.get(f"/api/captures/{tls_capture}/keylog").status_code == 405
    for url in (f"/captures/{tls_capture}/properties/", f"/api/captures/{tls_capture}/", "/api/captures/"):
        assert secret not in api.get(url).text
    download = api.get(f"/api/captures/{tls_capture}/download").content
    assert download == TLS.read_bytes()


def test_embedded_secrets_decrypt_without_a_key_log(api: httpx.Client) -> None:
    path = sample_capture("http2-with-cookies.pcapng")
    capture_id = int(upload(api, path).json()["id"])
    shown = all_packets(api, capture_id, filter="http2.header")
    assert shown and [row["number"] for row in shown] == tshark_numbers(path, "http2.header")


def without_secrets(data: bytes) -> bytes:
    """Return a little-endian pcapng file's blocks without its Decryption Secrets Blocks."""
    kept, offset = [], 0
    while offset < len(data):
        kind, length = struct.unpack_from("<II", data, offset)
        if kind != DECRYPTION_SECRETS_BLOCK:
            kept.append(data[offset : offset + length])
        offset += length
    return b"".join(kept)


def test_embedded_secrets_decrypt_quic(api: httpx.Client, tmp_path: Path) -> None:
    path = sample_capture("chrome-cloudflare-quic-with-secrets.pcapng")
    capture_id = int(upload(api, path).json()["id"])
    # STREAM frames travel in 1-RTT packets: only decrypted packets show them.
    decrypted = tshark_numbers(path, "quic.stream.stream_id")
    assert decrypted, "tshark decrypts some QUIC streams with the file's own secrets"
    shown = all_packets(api, capture_id, filter="quic.stream.stream_id")
    assert [row["number"] for row in shown] == decrypted
    assert [row["info"] for row in shown] == [row[6] for row in tshark_rows(path, "quic.stream.stream_id")]
    detail = api.get(f"/api/captures/{capture_id}/packets/{decrypted[0]}/").json()
    assert any(source["name"].startswith("Decrypted QUIC") for source in detail["sources"])

    # The stream's bytes are the decrypted ones tshark follows.
    nodes, segments = tshark_follow(path, "QUIC", 0, 0)
    followed = api.get(f"/api/captures/{capture_id}/follow", params={"kind": "QUIC", "stream": 0})
    assert followed.status_code == 200, followed.text
    body = followed.json()
    got = [(s["side"], base64.b64decode(s["bytes"])) for s in body["segments"]]
    assert got == segments and len(nodes) == 2

    # The same file without its Decryption Secrets Block decrypts none of it.
    stripped = tmp_path / "without-secrets.pcapng"
    stripped.write_bytes(without_secrets(path.read_bytes()))
    assert tshark_numbers(stripped, "quic.stream.stream_id") == []
    bare_id = int(upload(api, stripped).json()["id"])
    assert all_packets(api, bare_id, filter="quic.stream.stream_id") == []


def test_the_properties_page_attaches_a_key_log(api: httpx.Client, tls_capture: int) -> None:
    page = api.get(f"/captures/{tls_capture}/properties/")
    token = page.cookies.get("csrftoken") or api.cookies.get("csrftoken")
    response = api.post(
        f"/captures/{tls_capture}/keylog/",
        data={"csrfmiddlewaretoken": token},
        files={"file": ("keys.txt", KEYS.read_bytes())},
        headers={"Referer": str(api.base_url)},
    )
    assert response.status_code == 302
    page = api.get(f"/captures/{tls_capture}/properties/").text
    assert "Key log attached: 6 secrets" in page
    assert len(all_packets(api, tls_capture, filter="http")) == 2


def test_a_key_log_sent_with_the_upload_decrypts_each_capture(api: httpx.Client) -> None:
    with open(TLS, "rb") as capture, open(KEYS, "rb") as keys:
        response = api.post(
            "/api/captures/",
            files=[("file", ("a.pcap", capture.read())), ("keylog", ("keys.log", keys.read()))],
        )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["errors"] == []
    assert body["captures"][0]["keylog_secrets"] == 6
    assert [row["number"] for row in all_packets(api, body["id"], filter="http")] == [10, 30]


def test_a_bad_key_log_with_the_upload_is_reported_and_the_capture_kept(api: httpx.Client) -> None:
    response = api.post(
        "/api/captures/",
        files=[("file", ("b.pcap", TLS.read_bytes())), ("keylog", ("notes.txt", b"hello\n"))],
    )
    assert response.status_code == 201
    body = response.json()
    assert body["errors"] == [{"name": "notes.txt", "error": body["errors"][0]["error"]}]
    assert "not a TLS key log file" in body["errors"][0]["error"]
    assert api.get(f"/api/captures/{body['id']}/").json()["keylog_secrets"] is None
