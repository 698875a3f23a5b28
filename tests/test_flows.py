"""The flow graph draws one arrow per packet tshark displays, between the nodes tshark names."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from .conftest import ARTIFACTS, Server, sample_capture, tshark, tshark_numbers, upload

pytestmark = pytest.mark.engine

SVG = "{http://www.w3.org/2000/svg}"


def ident(uploaded: dict[str, dict[str, Any]], name: str) -> int:
    assert uploaded[name].get("id"), uploaded[name]
    return int(uploaded[name]["id"])


def flow(api: httpx.Client, capture_id: int, **params: Any) -> dict[str, Any]:
    answer = api.get(f"/api/captures/{capture_id}/flow", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def tshark_fields(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    """Return tshark's two-pass values of fields, one row per displayed packet."""
    args = ["-2", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "occurrence=l"]
    for name in fields:
        args += ["-e", name]
    return [line.split("\t") for line in tshark(*args).splitlines() if line]


def node(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tshark_directions(path: Path, display_filter: str = "tcp") -> list[tuple[int, str, str]]:
    """Return (frame, source node, destination node) of each TCP packet, as tshark sees them."""
    rows = tshark_fields(
        path,
        display_filter,
        "frame.number",
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "ip.dst",
        "ipv6.dst",
        "tcp.dstport",
    )
    return [
        (int(number), node(src4 or src6, sport), node(dst4 or dst6, dport))
        for number, src4, src6, sport, dst4, dst6, dport in rows
    ]


def test_it_draws_the_three_way_handshake(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    path = sample_capture("tcp_handshake.pcapng")
    body = flow(api, ident(uploaded, "tcp_handshake.pcapng"))

    assert body["filter"] == ""  # every packet, whatever its protocol
    assert (body["total"], body["offset"]) == (3, 0)
    assert [n["id"] for n in body["nodes"]] == ["172.16.16.128:2826", "212.58.226.142:80"]
    assert [a["flags"] for a in body["arrows"]] == ["SYN", "SYN, ACK", "ACK"]
    assert [(a["frame"], a["source"], a["destination"]) for a in body["arrows"]] == tshark_directions(path)
    # tshark's own flags, "·······A··S·", as names.
    letters = {"S": "SYN", "A": "ACK", "F": "FIN", "R": "RST", "P": "PSH"}
    for arrow, (flags_str,) in zip(body["arrows"], tshark_fields(path, "tcp", "tcp.flags.str"), strict=True):
        assert set(arrow["flags"].split(", ")) == {letters[c] for c in flags_str if c in letters}
    assert [(a["seq"], a["ack"], a["len"]) for a in body["arrows"]] == [(0, None, 0), (0, 1, 0), (1, 1, 0)]
    assert body["arrows"][1]["time"] == "0.132627"
    assert body["arrows"][0]["protocol"] == "TCP"
    assert body["arrows"][0]["summary"].startswith("2826 → 80 [SYN] Seq=0 Win=8192")


def test_it_draws_the_close_with_fins(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    path = sample_capture("tcp_teardown.pcapng")
    body = flow(api, ident(uploaded, "tcp_teardown.pcapng"))
    assert [a["flags"] for a in body["arrows"]] == ["FIN, ACK", "ACK", "FIN, ACK", "ACK"]
    assert [(a["frame"], a["source"], a["destination"]) for a in body["arrows"]] == tshark_directions(path)
    fins = [a["frame"] for a in body["arrows"] if "FIN" in a["flags"]]
    assert fins == tshark_numbers(path, "tcp.flags.fin == 1")


@pytest.mark.parametrize(
    ("name", "display_filter"),
    [
        ("http_google.pcapng", "tcp"),
        ("http_google.pcapng", "http"),
        ("http_google.pcapng", "tcp.len > 0"),
        ("dns-tcp.pcap", "tcp.port == 53 && tcp.stream eq 1"),
        ("v6-http.pcap", "tcp"),
        ("tcp_retransmissions.pcapng", "tcp.analysis.retransmission"),
    ],
)
def test_its_arrows_are_the_packets_tshark_displays(
    api: httpx.Client, uploaded: dict[str, Any], name: str, display_filter: str
) -> None:
    path = sample_capture(name)
    body = flow(api, ident(uploaded, name), filter=display_filter)
    assert [a["frame"] for a in body["arrows"]] == tshark_numbers(path, display_filter)
    assert body["total"] == len(body["arrows"])
    assert [(a["frame"], a["source"], a["destination"]) for a in body["arrows"]] == tshark_directions(
        path, display_filter
    )
    expected = tshark_fields(path, display_filter, "tcp.seq", "tcp.len")
    assert [[str(a["seq"]), str(a["len"])] for a in body["arrows"]] == expected
    # Every node is an endpoint of some arrow, named in the order the arrows first reach it.
    names = [n["id"] for n in body["nodes"]]
    assert names == list(dict.fromkeys(x for a in body["arrows"] for x in (a["source"], a["destination"])))


def test_a_stream_and_a_non_tcp_filter(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    path = sample_capture("dns-tcp.pcap")
    body = flow(api, ident(uploaded, "dns-tcp.pcap"), stream=1)
    assert body["filter"] == "tcp.stream eq 1"
    assert [a["frame"] for a in body["arrows"]] == tshark_numbers(path, "tcp.stream eq 1")
    assert len(body["nodes"]) == 2

    # Without TCP the nodes are hosts, and the label is the protocol.
    icmp = flow(api, ident(uploaded, "icmp_echo.pcapng"), filter="icmp")
    rows = tshark_fields(sample_capture("icmp_echo.pcapng"), "icmp", "frame.number", "ip.src", "ip.dst")
    assert [[str(a["frame"]), a["source"], a["destination"]] for a in icmp["arrows"]] == rows
    assert {a["flags"] for a in icmp["arrows"]} == {""}
    assert {a["seq"] for a in icmp["arrows"]} == {None}


def test_it_pages_through_a_long_capture(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    path = sample_capture("synscan.pcapng")
    capture_id = ident(uploaded, "synscan.pcapng")
    expected = tshark_numbers(path, "tcp")
    assert len(expected) > 1000
    frames: list[int] = []
    while len(frames) < len(expected):
        body = flow(api, capture_id, offset=len(frames))
        assert body["total"] == len(expected)
        assert body["offset"] == len(frames)
        assert 0 < len(body["arrows"]) <= 500
        frames += [a["frame"] for a in body["arrows"]]
    assert frames == expected
    assert flow(api, capture_id, offset=len(expected))["arrows"] == []
    assert len(flow(api, capture_id, offset=10, limit=20)["arrows"]) == 20
    answer = api.get(f"/api/captures/{capture_id}/flow", params={"limit": 501})
    assert answer.status_code == 400

    page = api.get(f"/captures/{capture_id}/flow/", params={"offset": 500})
    assert page.status_code == 200
    assert f"Packets 501–1,000 of {len(expected):,}" in page.text
    assert f'href="/captures/{capture_id}/flow/?offset=1000"' in page.text  # next
    assert f'href="/captures/{capture_id}/flow/"' in page.text  # previous: the first page
    assert page.text.count('class="flow-arrow"') == 500


def test_it_refuses_a_bad_filter_or_stream(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    capture_id = ident(uploaded, "tcp_handshake.pcapng")
    answer = api.get(f"/api/captures/{capture_id}/flow", params={"filter": "tcp.port ==="})
    assert answer.status_code == 400
    assert set(answer.json()) == {"error"} and answer.json()["error"]
    assert api.get(f"/api/captures/{capture_id}/flow", params={"stream": -1}).status_code == 400
    assert api.get("/api/captures/999999/flow").status_code == 404

    page = api.get(f"/captures/{capture_id}/flow/", params={"filter": "<b>tcp</b> ==="})
    assert page.status_code == 400
    assert 'id="flow-error"' in page.text and "<b>tcp</b>" not in page.text
    page = api.get(f"/captures/{capture_id}/flow/", params={"stream": "1 or 1"})
    assert page.status_code == 400
    assert api.get("/captures/999999/flow/").status_code == 404


def test_the_page_draws_a_ladder_that_links_to_packets(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    capture_id = ident(uploaded, "tcp_handshake.pcapng")
    page = api.get(f"/captures/{capture_id}/flow/", params={"stream": 0})
    assert page.status_code == 200
    svg = re.search(r"<svg .*?</svg>", page.text, re.S)
    assert svg is not None
    root = ET.fromstring(svg.group(0))
    links = root.findall(f".//{SVG}a")
    assert [link.get("href") for link in links] == [
        f"/captures/{capture_id}/?packet={n}&filter=tcp.stream+eq+0" for n in (1, 2, 3)
    ]
    labels = [link.find(f"{SVG}text[@class='flow-label']") for link in links]
    assert [label.text for label in labels if label is not None] == [
        "SYN Seq=0 Len=0",
        "SYN, ACK Seq=0 Ack=1 Len=0",
        "ACK Seq=1 Ack=1 Len=0",
    ]
    # Two lifelines, and the arrows go right, left, right between them.
    lifelines = [
        float(line.get("x1", "")) for line in root.findall(f".//{SVG}g[@class='flow-node']/{SVG}line")
    ]
    assert len(lifelines) == 2
    ends = []
    for link in links:
        line = link.find(f"{SVG}polyline")
        assert line is not None
        (x1, _), (x2, _) = (map(float, point.split(",")) for point in line.get("points", "").split())
        ends.append((x1, round(x2)))
    left, right = lifelines
    assert ends == [(left, right - 1), (right, left + 1), (left, right - 1)]


def test_the_svg_download_is_the_pages_svg(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    capture_id = ident(uploaded, "tcp_handshake.pcapng")
    page = api.get(f"/captures/{capture_id}/flow/")
    assert f'href="/captures/{capture_id}/flow/?format=svg"' in page.text
    answer = api.get(f"/captures/{capture_id}/flow/", params={"format": "svg"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("image/svg+xml")
    assert answer.headers["content-disposition"].startswith("attachment")
    assert "tcp_handshake-flow-graph.svg" in answer.headers["content-disposition"]
    root = ET.fromstring(answer.content)
    assert root.tag == f"{SVG}svg"
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "SYN, ACK Seq=0 Ack=1 Len=0" in texts
    assert "172.16.16.128:2826" in texts and "212.58.226.142:80" in texts
    assert answer.text.split("\n", 1)[1].strip() in page.text


def test_the_capture_view_links_to_the_flow_graph(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    capture_id = ident(uploaded, "http_google.pcapng")
    view = api.get(f"/captures/{capture_id}/", params={"filter": "tcp.port == 80"})
    assert (
        f'href="/captures/{capture_id}/flow/?filter=tcp.port%20%3D%3D%2080" id="flow-graph-link"' in view.text
    )
    fragment = api.get(f"/captures/{capture_id}/packets/4/detail/", headers={"HX-Request": "true"})
    assert f'id="flow-stream-link" href="/captures/{capture_id}/flow/?stream=0"' in fragment.text
    # A packet outside TCP has no stream to draw.
    dns = ident(uploaded, "dns-udp.pcap")
    fragment = api.get(f"/captures/{dns}/packets/1/detail/", headers={"HX-Request": "true"})
    assert 'id="flow-stream-link"' not in fragment.text


# ---- markup in packets and names ------------------------------------------------------------------

HOSTILE = "/<script>window.__xss=1</script>&<b>x</b>'\""


def http_request_capture() -> bytes:
    """Return a pcap of one TCP segment to port 80 carrying a request line full of markup."""
    payload = f"GET {HOSTILE} HTTP/1.1\r\nHost: example\r\n\r\n".encode()
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1000, 2000, 5 << 4, 0x18, 65535, 0, 0) + payload
    # Zero checksums: tshark does not verify them by default.
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, b"\n\0\0\1", b"\n\0\0\2")
    frame = bytes.fromhex("020000000002 020000000001 0800") + ip + tcp
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    return header + struct.pack("<IIII", 1_700_000_000, 0, len(frame), len(frame)) + frame


def test_the_page_and_the_svg_escape_packet_data_and_names(api: httpx.Client, tmp_path: Path) -> None:
    path = tmp_path / "hostile.pcap"
    path.write_bytes(http_request_capture())
    answer = upload(api, path, name="<img src=x onerror=alert(1)>.pcap")
    assert answer.status_code == 201, answer.text
    capture_id = answer.json()["id"]
    body = flow(api, capture_id)
    assert HOSTILE in body["arrows"][0]["summary"]

    page = api.get(f"/captures/{capture_id}/flow/")
    assert page.status_code == 200
    assert "<script>window.__xss" not in page.text and "<b>x</b>" not in page.text
    assert "<img src=x" not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;&amp;&lt;b&gt;x&lt;/b&gt;" in page.text

    svg = api.get(f"/captures/{capture_id}/flow/", params={"format": "svg"})
    root = ET.fromstring(svg.content)
    summaries = ["".join(t.itertext()) for t in root.iter(f"{SVG}text") if t.get("class") == "flow-summary"]
    assert len(summaries) == 1 and HOSTILE in summaries[0]
    assert not root.findall(f".//{SVG}script")
    title = root.find(f"{SVG}title")
    assert title is not None and "<img src=x onerror=alert(1)>.pcap" in (title.text or "")


# ---- in a browser ------------------------------------------------------------------------------


@pytest.mark.browser
def test_it_opens_a_packet_from_the_flow_graph(
    browser: Browser, server: Server, uploaded: dict[str, Any]
) -> None:
    capture_id = ident(uploaded, "tcp_handshake.pcapng")
    context = server.new_context(browser, viewport={"width": 1200, "height": 700})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"/captures/{capture_id}/")
        expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
        page.locator("#flow-graph-link").click()
        page.wait_for_url(re.compile(rf"/captures/{capture_id}/flow/$"))
        arrows = page.locator("#flow-graph a.flow-arrow")
        expect(arrows).to_have_count(3)
        expect(page.locator("#flow-range")).to_contain_text("Packets 1–3 of 3")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "flow-graph.png")

        arrows.nth(1).locator(".flow-label").click()
        page.wait_for_url(re.compile(rf"/captures/{capture_id}/\?packet=2$"))
        expect(page.locator("#detail-tree")).to_have_attribute("data-packet", "2")
        expect(page.locator("#packet-list .packet-row[data-number='2']")).to_have_attribute(
            "aria-selected", "true"
        )
    finally:
        context.close()
    assert errors == [], "the pages logged errors"
