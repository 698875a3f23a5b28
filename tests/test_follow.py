"""Follow Stream shows each side's bytes in the order tshark's own follow prints them."""

from __future__ import annotations

import base64
import html
import re
import struct
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from .conftest import ARTIFACTS, Server, sample_capture, tshark, tshark_follow, tshark_numbers, upload

pytestmark = pytest.mark.engine

# (capture, kind, stream): streams that carry payload both ways.
STREAMS = [
    ("http_google.pcapng", "TCP", 0),
    ("dns-tcp.pcap", "TCP", 0),
    ("dns-tcp.pcap", "TCP", 1),
    ("http_post.pcapng", "TCP", 0),
    ("dns-udp.pcap", "UDP", 0),
    ("http_google.pcapng", "HTTP", 0),
]
STREAM_FIELD = {"TCP": "tcp.stream", "UDP": "udp.stream", "HTTP": "tcp.stream"}


def endpoint(peer: dict[str, Any]) -> str:
    """Return a peer as tshark's follow writes a node: host:port, IPv6 hosts in brackets."""
    host = f"[{peer['host']}]" if ":" in peer["host"] else peer["host"]
    return f"{host}:{peer['port']}"


def ident(uploaded: dict[str, dict[str, Any]], name: str) -> int:
    assert uploaded[name].get("id"), uploaded[name]
    return int(uploaded[name]["id"])


def follow(api: httpx.Client, capture_id: int, kind: str, stream: int) -> dict[str, Any]:
    answer = api.get(f"/api/captures/{capture_id}/follow", params={"kind": kind, "stream": stream})
    assert answer.status_code == 200, answer.text
    return answer.json()


def side_bytes(segments: list[tuple[str, bytes]], side: str) -> bytes:
    return b"".join(data for segment_side, data in segments if segment_side == side)


@pytest.mark.parametrize(("name", "kind", "stream"), STREAMS)
def test_it_follows_a_stream_as_tshark_does(
    api: httpx.Client, uploaded: dict[str, Any], name: str, kind: str, stream: int
) -> None:
    path = sample_capture(name)
    nodes, expected = tshark_follow(path, kind, stream)
    body = follow(api, ident(uploaded, name), kind, stream)
    shown = [(s["side"], base64.b64decode(s["bytes"])) for s in body["segments"]]

    assert (body["kind"], body["stream"]) == (kind, stream)
    assert [endpoint(body["client"]), endpoint(body["server"])] == nodes
    assert side_bytes(shown, "client") == side_bytes(expected, "client")
    assert side_bytes(shown, "server") == side_bytes(expected, "server")
    assert shown == expected
    assert body["client"]["bytes"] == len(side_bytes(expected, "client")) > 0
    assert body["server"]["bytes"] == len(side_bytes(expected, "server")) > 0
    assert body["client"]["packets"] + body["server"]["packets"] == len(expected)
    # Every segment points back at a packet of the stream, in capture order.
    frames = [s["frame"] for s in body["segments"]]
    assert frames == sorted(frames)
    assert set(frames) <= set(tshark_numbers(path, f"{STREAM_FIELD[kind]} eq {stream}"))


def test_http_follow_returns_the_http_messages(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    body = follow(api, ident(uploaded, "http_google.pcapng"), "HTTP", 0)
    client = b"".join(base64.b64decode(s["bytes"]) for s in body["segments"] if s["side"] == "client")
    server = b"".join(base64.b64decode(s["bytes"]) for s in body["segments"] if s["side"] == "server")
    assert client.startswith(b"GET / HTTP/1.1\r\nHost: www.google.com\r\n")
    assert server.startswith(b"HTTP/1.1 200 OK\r\n")


def test_the_raw_download_holds_one_side_or_both(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    path = sample_capture("http_post.pcapng")
    _, expected = tshark_follow(path, "TCP", 0)
    url = f"/api/captures/{ident(uploaded, 'http_post.pcapng')}/follow/raw"
    for side in ("client", "server", "both"):
        answer = api.get(url, params={"kind": "TCP", "stream": 0, "side": side})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-disposition"].startswith("attachment")
        wanted = b"".join(data for s, data in expected if side in ("both", s))
        assert answer.content == wanted


def test_it_refuses_an_unknown_kind_or_stream(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    capture_id = ident(uploaded, "http_google.pcapng")
    url = f"/api/captures/{capture_id}/follow"
    answer = api.get(url, params={"kind": "SMTP", "stream": 0})
    assert answer.status_code == 400
    assert "unknown stream kind" in answer.json()["error"]
    answer = api.get(url, params={"kind": "tcp.stream eq 0 or 1", "stream": 0})
    assert answer.status_code == 400
    answer = api.get(url, params={"kind": "TCP", "stream": -1})
    assert answer.status_code == 400
    # Beyond the last stream: a clear error rather than an empty conversation.
    streams = tshark("-r", str(sample_capture("http_google.pcapng")), "-T", "fields", "-e", "tcp.stream")
    beyond = max(int(s) for s in streams.split()) + 1
    answer = api.get(url, params={"kind": "TCP", "stream": beyond})
    assert answer.status_code == 400
    assert answer.json() == {"error": f"there is no TCP stream {beyond} in this capture"}
    assert api.get("/api/captures/999999/follow", params={"kind": "TCP", "stream": 0}).status_code == 404


def test_a_stream_without_payload_is_empty(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    body = follow(api, ident(uploaded, "tcp_handshake.pcapng"), "TCP", 0)
    assert body["segments"] == []
    assert body["client"]["bytes"] == body["server"]["bytes"] == 0
    assert body["client"]["host"] and body["server"]["host"]


# ---- the page --------------------------------------------------------------------------------


def test_the_page_shows_both_sides_as_text(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    capture_id = ident(uploaded, "http_google.pcapng")
    page = api.get(f"/captures/{capture_id}/follow/", params={"kind": "TCP", "stream": 0})
    assert page.status_code == 200
    text = page.text
    assert 'class="follow-segment follow-client"' in text
    assert 'class="follow-segment follow-server"' in text
    assert "GET / HTTP/1.1\nHost: www.google.com\n" in text
    assert "HTTP/1.1 200 OK\n" in text
    assert f'href="/captures/{capture_id}/?packet=4"' in text
    assert "filter=tcp.stream+eq+0" in text  # show only this stream
    assert "filter=%21%28tcp.stream+eq+0%29" in text  # filter it out
    assert f"/captures/{capture_id}/follow/?kind=TCP&amp;stream=1" in text  # the next stream
    assert 'id="follow-previous"' not in text
    assert re.search(r"1 client pkts?, \d+ server pkts?", text)

    hex_page = api.get(f"/captures/{capture_id}/follow/", params={"kind": "TCP", "stream": 0, "view": "hex"})
    assert "00000000  47 45 54 20 2f 20 48 54  54 50 2f 31 2e 31 0d 0a  GET / HTTP/1.1.." in hex_page.text
    raw_page = api.get(
        f"/captures/{capture_id}/follow/",
        params={"kind": "TCP", "stream": 0, "view": "raw", "side": "server"},
    )
    assert "485454502f312e3120323030204f4b" in raw_page.text  # "HTTP/1.1 200 OK"
    assert 'class="follow-segment follow-client"' not in raw_page.text


def test_the_page_explains_a_bad_request(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    capture_id = ident(uploaded, "http_google.pcapng")
    page = api.get(f"/captures/{capture_id}/follow/", params={"kind": "<b>SMTP</b>", "stream": 0})
    assert page.status_code == 400
    assert 'id="follow-error"' in page.text
    # The kind is shown as asked for (upper case), as text.
    assert "<B>SMTP</B>" not in page.text and "&lt;B&gt;SMTP&lt;/B&gt;" in page.text
    assert api.get("/captures/999999/follow/", params={"kind": "TCP", "stream": 0}).status_code == 404


def test_the_packet_detail_links_to_its_streams(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    capture_id = ident(uploaded, "http_google.pcapng")
    fragment = api.get(f"/captures/{capture_id}/packets/4/detail/", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert f'href="/captures/{capture_id}/follow/?kind=TCP&amp;stream=0"' in fragment.text
    assert f'href="/captures/{capture_id}/follow/?kind=HTTP&amp;stream=0"' in fragment.text
    assert "Follow </span>TCP stream" in fragment.text


# ---- a long stream with markup in it, written by hand -------------------------------------------

MARKUP = b"<script>window.__xss=1</script> & <b>bold</b>\r\n"
DATAGRAM = 60_000
DATAGRAMS = 12


def udp_frame(source: bytes, destination: bytes, ports: tuple[int, int], payload: bytes) -> bytes:
    datagram = struct.pack("!HHHH", *ports, 8 + len(payload), 0) + payload
    # Zero checksums: tshark does not verify them by default.
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(datagram), 1, 0x4000, 64, 17, 0, source, destination)
    return bytes.fromhex("020000000002 020000000001 0800") + ip + datagram


def long_udp_capture() -> bytes:
    client, server = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for index in range(DATAGRAMS):
        payload = (MARKUP * (DATAGRAM // len(MARKUP) + 1))[:DATAGRAM]
        if index % 2:
            frame = udp_frame(server, client, (40002, 40000), payload)
        else:
            frame = udp_frame(client, server, (40000, 40002), payload)
        data += struct.pack("<IIII", 1_700_000_000 + index, 0, len(frame), len(frame)) + frame
    return data


@pytest.fixture(scope="module")
def long_stream(api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> int:
    path = tmp_path_factory.mktemp("follow") / "long-udp.pcap"
    path.write_bytes(long_udp_capture())
    answer = upload(api, path)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def test_the_page_escapes_payloads_and_cuts_long_streams(api: httpx.Client, long_stream: int) -> None:
    total = DATAGRAM * DATAGRAMS
    body = follow(api, long_stream, "UDP", 0)
    assert (body["client"]["bytes"], body["server"]["bytes"]) == (total // 2, total // 2)

    page = api.get(f"/captures/{long_stream}/follow/", params={"kind": "UDP", "stream": 0})
    assert page.status_code == 200
    assert "<script>window.__xss" not in page.text and "<b>bold" not in page.text
    assert html.escape("<script>window.__xss=1</script> & <b>bold</b>\n", quote=False) in page.text
    assert 'id="follow-truncated"' not in page.text  # 720 KB of ASCII fits in a page

    hex_page = api.get(f"/captures/{long_stream}/follow/", params={"kind": "UDP", "stream": 0, "view": "hex"})
    assert f"Showing the first 524,288 of {total:,} bytes; download for the rest." in hex_page.text
    assert len(hex_page.content) < 3_000_000


# ---- in a browser ------------------------------------------------------------------------------


@pytest.mark.browser
def test_it_follows_the_selected_packets_stream_in_the_browser(
    browser: Browser, server: Server, uploaded: dict[str, Any]
) -> None:
    capture_id = ident(uploaded, "http_google.pcapng")
    context = server.new_context(browser, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"/captures/{capture_id}/")
        expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
        page.locator("#packet-list .packet-row[data-number='4']").click()
        expect(page.locator("#detail-tree")).to_have_attribute("data-packet", "4")
        expect(page.locator("#follow-links")).to_be_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "follow-links.png")
        page.get_by_role("link", name="Follow TCP stream").click()
        page.wait_for_url(re.compile(r"/follow/\?kind=TCP&stream=0$"))

        client = page.locator("#follow-data .follow-client").first
        server_side = page.locator("#follow-data .follow-server").first
        expect(client).to_contain_text("GET / HTTP/1.1")
        expect(server_side).to_contain_text("HTTP/1.1 200 OK")
        colours = page.evaluate(
            """() => ['.follow-client', '.follow-server'].map((side) =>
                getComputedStyle(document.querySelector(`#follow-data ${side} .follow-text`)).color)"""
        )
        assert colours == ["rgb(127, 0, 0)", "rgb(0, 0, 127)"]
        expect(page.locator("#follow-counts")).to_contain_text("1 client pkt,")
        page.screenshot(path=ARTIFACTS / "follow-view.png")

        page.get_by_role("link", name="Hex dump").click()
        page.wait_for_url(re.compile(r"[?&]view=hex(&|$)"))
        expect(client).to_contain_text("00000000  47 45 54 20")
        client.locator(".follow-frame").click()
        page.wait_for_url(re.compile(rf"/captures/{capture_id}/\?packet=4$"))
        expect(page.locator("#detail-tree")).to_have_attribute("data-packet", "4")
    finally:
        context.close()
    assert errors == [], "the pages logged errors"
