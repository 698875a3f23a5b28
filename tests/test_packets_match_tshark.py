"""What the explorer shows equals what tshark -2 prints, for every sample capture."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import all_packets, sample_capture, sample_capture_names, tshark, tshark_numbers, tshark_rows

pytestmark = pytest.mark.engine

# Captures that tshark cannot read at all are rejected at upload (see test_uploads).
READABLE = [name for name in sample_capture_names() if name not in ("empty.pcap", "empty.pcapng")]

FILTERS = [
    "tcp",
    "udp && !dns",
    "http.request",
    "http || http2",
    "dns.flags.response == 1",
    "tcp.analysis.flags",
    "tcp.flags.syn == 1 && tcp.flags.ack == 0",
    "frame.len > 1000",
    "ip.src == 172.16.16.128 or ipv6",
    "tls.handshake.type == 1",
    "arp || icmp || icmpv6",
    "_ws.expert.severity >= warning",
    'frame contains "GET"',
    "ip.flags.mf == 1 || ipv6.fragment",
]

COLUMNS = ["number", "time", "source", "destination", "protocol", "length", "info"]


def capture_id(uploaded: dict[str, dict[str, Any]], name: str) -> int:
    answer = uploaded[name]
    assert answer.get("id"), answer
    return int(answer["id"])


def as_columns(row: dict[str, Any]) -> list[str]:
    return [str(row[column]) for column in COLUMNS]


def sample(rows: list[Any], most: int = 400) -> list[Any]:
    """Keep every row of a small capture; an even spread plus both ends of a large one."""
    if len(rows) <= most:
        return rows
    step = len(rows) // most + 1
    return rows[::step] + rows[-5:]


@pytest.mark.parametrize("name", READABLE)
def test_it_shows_the_columns_tshark_prints(api: httpx.Client, uploaded: dict[str, Any], name: str) -> None:
    expected = tshark_rows(sample_capture(name))
    shown = all_packets(api, capture_id(uploaded, name))
    assert len(shown) == len(expected)
    assert uploaded[name]["packets"] == len(expected)
    for want, got in zip(sample(expected), sample(shown), strict=True):
        assert as_columns(got) == want


def colouring_rules() -> dict[str, tuple[str, str]]:
    """Return Wireshark's default rules as name -> (bg, fg), converted as sharkd converts them."""
    rules = {}
    for line in Path("/usr/share/wireshark/colorfilters").read_text().splitlines():
        if line.startswith("@"):
            _, name, _, colours = line.split("@", 3)
            bg, fg = (
                "".join(f"{int(c) >> 8:02x}" for c in part.split(","))
                for part in colours.strip("[]").split("][")
            )
            rules[name] = (bg, fg)
    return rules


@pytest.mark.parametrize("name", READABLE)
def test_it_colours_rows_with_wiresharks_rules(
    api: httpx.Client, uploaded: dict[str, Any], name: str
) -> None:
    rules = colouring_rules()
    out = tshark(
        "-2", "-r", str(sample_capture(name)), "--color", "-T", "fields", "-e", "frame.coloring_rule.name"
    )
    expected = [rules.get(rule, (None, None)) for rule in out.split("\n")[:-1]]
    rows = all_packets(api, capture_id(uploaded, name))
    assert [(row["bg"], row["fg"]) for row in rows] == expected


@pytest.mark.parametrize("display_filter", FILTERS)
def test_filters_display_the_frames_tshark_displays(
    api: httpx.Client, uploaded: dict[str, Any], display_filter: str
) -> None:
    def compare(name: str) -> tuple[str, list[int], list[int]]:
        expected = tshark_numbers(sample_capture(name), display_filter)
        shown = all_packets(api, capture_id(uploaded, name), filter=display_filter)
        return name, expected, [row["number"] for row in shown]

    # tshark's start-up dominates on small files: run the references side by side.
    with ThreadPoolExecutor(4) as pool:
        for name, expected, shown in pool.map(compare, READABLE):
            assert shown == expected, f"{name}: {display_filter}"


@pytest.mark.parametrize(
    ("time_format", "tshark_format", "display_filter"),
    [
        ("relative", "r", ""),
        ("absolute", "ad", ""),
        ("utc", "ud", ""),
        ("delta", "d", ""),
        ("epoch", "e", ""),
        ("delta_displayed", "dd", "tcp.len > 0"),
        ("relative", "r", "dns"),
    ],
)
@pytest.mark.parametrize("name", ["http_espn.pcapng", "tcp-handshake-nano.pcap", "dns-tcp.pcap"])
def test_time_formats_match_tshark(
    api: httpx.Client,
    uploaded: dict[str, Any],
    name: str,
    time_format: str,
    tshark_format: str,
    display_filter: str,
) -> None:
    expected = [row[1] for row in tshark_rows(sample_capture(name), display_filter, "-t", tshark_format)]
    shown = all_packets(api, capture_id(uploaded, name), filter=display_filter, time_format=time_format)
    assert [row["time"] for row in shown] == expected


def walk(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for node in nodes:
        found.append(node)
        found += walk(node["children"])
    return found


@pytest.mark.parametrize("name", READABLE)
def test_detail_tree_byte_ranges_fall_inside_the_packet(
    api: httpx.Client, uploaded: dict[str, Any], name: str
) -> None:
    ident = capture_id(uploaded, name)
    total = uploaded[name]["packets"]
    for number in sorted({1, (total + 1) // 2, total}):
        detail = api.get(f"/api/captures/{ident}/packets/{number}/").json()
        sources = [base64.b64decode(source["bytes"]) for source in detail["sources"]]
        assert detail["tree"][0]["label"].startswith(f"Frame {number}:")
        assert len(sources[0]) == len(base64.b64decode(detail["bytes"]))
        for node in walk(detail["tree"]):
            if node["start"] is None:
                continue
            assert 0 <= node["source"] < len(sources), node
            assert node["start"] >= 0 and node["length"] >= 0, node
            assert node["start"] + node["length"] <= len(sources[node["source"]]), node


def test_the_tree_carries_generated_fields_and_expert_severity(
    api: httpx.Client, uploaded: dict[str, Any]
) -> None:
    ident = capture_id(uploaded, "tcp_retransmissions.pcapng")
    retransmission = tshark_numbers(
        sample_capture("tcp_retransmissions.pcapng"), "tcp.analysis.retransmission"
    )[0]
    nodes = walk(api.get(f"/api/captures/{ident}/packets/{retransmission}/").json()["tree"])
    assert any(node["generated"] for node in nodes)
    assert any(node["severity"] == "note" and node["filter"] == "tcp.analysis.flags" for node in nodes)
    assert any(node["filter"] == "_ws.expert" and "retransmission" in node["label"] for node in nodes)


def test_reassembled_and_decompressed_bytes_are_extra_sources(
    api: httpx.Client, uploaded: dict[str, Any]
) -> None:
    ident = capture_id(uploaded, "http-content-gzip.pcap")
    response = tshark_numbers(sample_capture("http-content-gzip.pcap"), "http.content_encoding")
    detail = api.get(f"/api/captures/{ident}/packets/{response[-1]}/").json()
    names = [source["name"] for source in detail["sources"]]
    assert names[0] == "Frame"
    assert any(
        "Uncompressed" in name or "Dechunked" in name or "Reassembled" in name for name in names[1:]
    ), names


def test_a_bad_filter_gets_the_engines_message(api: httpx.Client, uploaded: dict[str, Any]) -> None:
    ident = capture_id(uploaded, "http_google.pcapng")
    response = api.get(f"/api/captures/{ident}/packets", params={"filter": "tcp.port =="})
    assert response.status_code == 400
    assert response.json() == {"error": "Unexpected end of filter expression."}
    unknown = api.get(f"/api/captures/{ident}/packets", params={"filter": "nosuch.field == 1"})
    assert unknown.status_code == 400
    assert "nosuch.field" in unknown.json()["error"]


def test_a_filter_longer_than_the_engine_accepts_is_refused_clearly(
    api: httpx.Client, uploaded: dict[str, Any]
) -> None:
    ident = capture_id(uploaded, "http_google.pcapng")
    long_filter = " || ".join(f"tcp.port == {port}" for port in range(400))
    response = api.get(f"/api/captures/{ident}/packets", params={"filter": long_filter})
    assert response.status_code == 400
    assert "too long" in response.json()["error"]


def test_filter_check_and_completion(api: httpx.Client) -> None:
    assert api.get("/api/filters/check", params={"filter": "tcp.port == 80"}).json() == {
        "valid": True,
        "error": None,
    }
    bad = api.get("/api/filters/check", params={"filter": "tcp.port = = 80"}).json()
    assert bad["valid"] is False and bad["error"]
    fields = [item["field"] for item in api.get("/api/fields/complete", params={"prefix": "http.req"}).json()]
    assert "http.request.method" in fields
    assert all(field.startswith("http.req") for field in fields)
