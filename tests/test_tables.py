"""HTTP requests, DNS queries and the conversation graph agree with tshark and the packet list."""

from __future__ import annotations

import html
import re
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import sample_capture, tshark, upload

pytestmark = pytest.mark.engine

NAMES = ["http_espn.pcapng", "bro.org.pcap", "dns-udp.pcap", "dns-tcp.pcap"]


@pytest.fixture(scope="module")
def ids(api: httpx.Client) -> dict[str, int]:
    found = {}
    for name in NAMES:
        answer = upload(api, sample_capture(name))
        assert answer.status_code == 201, answer.text
        found[name] = int(answer.json()["id"])
    return found


def get_ok(api: httpx.Client, url: str, **params: str) -> Any:
    response = api.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def fields(name: str, display_filter: str, *names: str) -> list[list[str]]:
    args = ["-2", "-r", str(sample_capture(name)), "-Y", display_filter, "-T", "fields"]
    for field in names:
        args += ["-e", field]
    return [line.split("\t") for line in tshark(*args).splitlines() if line]


def number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


@pytest.mark.parametrize("name", ["http_espn.pcapng", "bro.org.pcap"])
def test_http_requests_match_tshark(api: httpx.Client, ids: dict[str, int], name: str) -> None:
    requests = fields(
        name,
        "http.request",
        "frame.number",
        "http.request.method",
        "http.host",
        "http.request.uri",
        "http.response_in",
    )
    responses = {
        int(frame): (code, request_in, time)
        for frame, code, request_in, time in fields(
            name, "http.response", "frame.number", "http.response.code", "http.request_in", "http.time"
        )
    }
    rows = get_ok(api, f"/api/captures/{ids[name]}/http-requests")
    assert requests
    got = [(r["frame"], r["method"], r["host"], r["uri"], r["response_frame"]) for r in rows]
    want = [(int(f), m, h, u, number(r)) for f, m, h, u, r in requests]
    assert got == want
    answered = 0
    for row in rows:
        if row["response_frame"] is None:
            assert row["status"] is None
            continue
        code, request_in, time = responses[row["response_frame"]]
        assert row["status"] == int(code), row
        assert int(request_in) == row["frame"]
        assert Decimal(str(row["time"])) == Decimal(time)
        answered += 1
    assert answered > 0


def test_http_requests_are_limited_by_a_filter(api: httpx.Client, ids: dict[str, int]) -> None:
    url = f"/api/captures/{ids['http_espn.pcapng']}/http-requests"
    everything = get_ok(api, url)
    wanted = [
        int(f) for (f,) in fields("http_espn.pcapng", "http.request && tcp.stream == 1", "frame.number")
    ]
    limited = get_ok(api, url, filter="tcp.stream == 1")
    assert [r["frame"] for r in limited] == wanted
    assert 0 < len(limited) < len(everything)
    assert all(r["status"] for r in limited if r["response_frame"])
    assert get_ok(api, url, filter="tcp.port == 1") == []


@pytest.mark.parametrize("name", ["http_espn.pcapng", "dns-udp.pcap", "dns-tcp.pcap"])
def test_dns_queries_match_tshark(api: httpx.Client, ids: dict[str, int], name: str) -> None:
    queries = fields(name, "dns.flags.response == 0", "frame.number", "dns.qry.name", "dns.response_in")
    responses = {
        int(frame): (rcode, a, response_to, time)
        for frame, rcode, a, response_to, time in fields(
            name,
            "dns.flags.response == 1",
            "frame.number",
            "dns.flags.rcode",
            "dns.a",
            "dns.response_to",
            "dns.time",
        )
    }
    rows = get_ok(api, f"/api/captures/{ids[name]}/dns-queries")
    assert queries
    got = [(r["frame"], r["name"], r["response_frame"]) for r in rows]
    assert got == [(int(f), q, number(r)) for f, q, r in queries]
    for row in rows:
        if row["response_frame"] is None:
            assert row["answers"] == "" and row["rcode"] == ""
            continue
        rcode, a, response_to, time = responses[row["response_frame"]]
        assert int(response_to) == row["frame"]
        assert row["rcode"] == ("No error" if rcode == "0" else row["rcode"])
        assert row["rcode"]
        if a:
            assert row["answers"].startswith(a), row
        assert Decimal(str(row["time"])) == Decimal(time)
        assert row["type"] and "(" not in row["type"]


def test_a_bad_filter_is_a_400(api: httpx.Client, ids: dict[str, int]) -> None:
    for path in ("http-requests", "dns-queries"):
        response = api.get(
            f"/api/captures/{ids['http_espn.pcapng']}/{path}", params={"filter": "tcp.port =="}
        )
        assert response.status_code == 400
        assert response.json()["error"]
        assert api.get(f"/api/captures/999999/{path}").status_code == 404


def test_the_http_page_sorts_links_packets_and_swaps_the_table(
    api: httpx.Client, ids: dict[str, int]
) -> None:
    ident = ids["http_espn.pcapng"]
    rows = get_ok(api, f"/api/captures/{ident}/http-requests")
    slowest = max((r for r in rows if r["time"] is not None), key=lambda r: r["time"])
    page = api.get(f"/captures/{ident}/http-requests/", params={"sort": "-time"})
    assert page.status_code == 200
    assert 'aria-sort="descending"' in page.text
    first = re.search(r'<tr class="stats-row" data-frame="(\d+)">', page.text)
    assert first and int(first.group(1)) == slowest["frame"]
    assert f'href="/captures/{ident}/?packet={slowest["frame"]}"' in page.text
    assert f'href="/captures/{ident}/?packet={slowest["response_frame"]}"' in page.text
    assert f'href="/captures/{ident}/http-requests/?sort=time"' in page.text
    assert "HTTP Requests" in page.text and "Conversation graph" in page.text
    fragment = api.get(
        f"/captures/{ident}/http-requests/", params={"sort": "frame"}, headers={"HX-Request": "true"}
    )
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="stats-table"')
    assert "<html" not in fragment.text
    dns_page = api.get(f"/captures/{ident}/dns-queries/", params={"sort": "name"})
    assert dns_page.status_code == 200 and 'data-sort-key="answers"' in dns_page.text


def crafted_http_capture(path: Path, uri: str, host: str) -> None:
    """Write a pcap of one TCP segment to port 80 carrying an HTTP request."""
    payload = f"GET {uri} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
    ip_header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(tcp) + len(payload),
        1,
        0,
        64,
        6,
        0,
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )
    frame = (
        b"\x00\x11\x22\x33\x44\x55" + b"\x66\x77\x88\x99\xaa\xbb" + b"\x08\x00" + ip_header + tcp + payload
    )
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    record = struct.pack("<IIII", 1, 0, len(frame), len(frame))
    path.write_bytes(header + record + frame)


def test_payloads_and_filters_are_escaped(api: httpx.Client, tmp_path: Path) -> None:
    capture = tmp_path / "evil-http.pcap"
    crafted_http_capture(capture, "/<script>alert(1)</script>", '<img src=x onerror="alert(2)">')
    answer = upload(api, capture)
    assert answer.status_code == 201, answer.text
    ident = int(answer.json()["id"])
    rows = get_ok(api, f"/api/captures/{ident}/http-requests")
    assert [r["uri"] for r in rows] == ["/<script>alert(1)</script>"]
    page = api.get(f"/captures/{ident}/http-requests/")
    assert page.status_code == 200
    assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
    assert "/&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    evil_filter = 'frame contains "<b>bold</b>"'
    for path in ("http-requests", "dns-queries", "conversation-graph"):
        shown = api.get(f"/captures/{ident}/{path}/", params={"filter": evil_filter})
        assert shown.status_code == 200, shown.text
        assert "<b>bold</b>" not in shown.text
        assert "&lt;b&gt;bold&lt;/b&gt;" in shown.text
        bad = api.get(f"/captures/{ident}/{path}/", params={"filter": "<i>x</i> =="})
        assert bad.status_code == 400 and "<i>x</i>" not in bad.text


def diagram(page: str) -> str:
    match = re.search(r"<svg.*?</svg>", page, re.S)
    assert match, "the page has no diagram"
    return match.group(0)


def test_the_conversation_graph_links_every_ipv4_conversation(api: httpx.Client, ids: dict[str, int]) -> None:
    ident = ids["http_espn.pcapng"]
    conversations = get_ok(api, f"/api/captures/{ident}/conversations", kind="IPv4")
    hosts = {c["address_a"] for c in conversations} | {c["address_b"] for c in conversations}
    assert len(hosts) <= 40
    page = api.get(f"/captures/{ident}/conversation-graph/", params={"kind": "IPv4"})
    assert page.status_code == 200
    edges = re.findall(
        r'<a class="graph-edge" href="([^"]*)"[^>]*data-filter="([^"]*)" data-packets="(\d+)"', page.text
    )
    assert len(edges) == len(conversations)
    assert len(re.findall(r'<g class="graph-node"', page.text)) == len(hosts)
    by_filter = {c["filter"]: c["packets"] for c in conversations}
    for href, row_filter, packets in edges:
        row_filter = html.unescape(row_filter)
        assert (
            html.unescape(href)
            == f"/captures/{ident}/?" + httpx.QueryParams({"filter": row_filter}).__str__()
        )
        assert by_filter[row_filter] == int(packets)
        shown = get_ok(api, f"/api/captures/{ident}/packets", filter=row_filter, limit="1")
        assert shown["displayed"] == int(packets), row_filter
    again = api.get(f"/captures/{ident}/conversation-graph/", params={"kind": "IPv4"})
    # A deterministic layout: the same diagram twice (the page around it carries a fresh CSRF token).
    assert diagram(again.text) == diagram(page.text)
    ipv6 = api.get(f"/captures/{ident}/conversation-graph/", params={"kind": "IPv6"})
    assert ipv6.status_code == 200 and 'aria-current="page">IPv6<' in ipv6.text


def test_the_graph_keeps_the_busiest_hosts() -> None:
    from explorer.engine.stats import Conversation
    from explorer.views.statistics.conversation_graph import conversation_graph

    class FakeCapture:
        def get_absolute_url(self) -> str:
            return "/captures/1/"

    conversations = [
        Conversation(
            f"10.0.0.{i}", "", "10.0.1.1", "", 1, i, 0, 0, 1, i, Decimal(0), Decimal(0), f"ip.addr=={i}"
        )
        for i in range(1, 60)
    ]
    graph = conversation_graph(FakeCapture(), conversations, limit=40)  # type: ignore[arg-type]
    assert graph.truncated and graph.hosts == 60 and len(graph.nodes) == 40
    assert "10.0.0.59" in {n.address for n in graph.nodes}
    assert "10.0.0.1" not in {n.address for n in graph.nodes}
    assert len(graph.edges) == 39
