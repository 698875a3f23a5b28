"""Conversations, endpoints and the protocol hierarchy equal tshark's own -z tables."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from .conftest import ARTIFACTS, Server, sample_capture, tshark, tshark_numbers, upload

pytestmark = pytest.mark.engine

NAMES = [
    "http_espn.pcapng",
    "bro.org.pcap",
    "synscan.pcapng",
    "dns-udp.pcap",
    "v6-http.pcap",
    "arppoison.pcapng",
]

# The explorer's kind and tshark's name for the same table.
TSHARK_KINDS = {"Ethernet": "eth", "IPv4": "ip", "IPv6": "ipv6", "TCP": "tcp", "UDP": "udp"}
PORT_KINDS = {"TCP", "UDP"}

# (capture, kind, display filter): every table the sample captures fill, whole and limited.
CASES = [
    ("http_espn.pcapng", "TCP", ""),
    ("http_espn.pcapng", "TCP", "http"),
    ("http_espn.pcapng", "UDP", ""),
    ("http_espn.pcapng", "IPv4", ""),
    ("http_espn.pcapng", "IPv4", "tcp.len > 0"),
    ("http_espn.pcapng", "Ethernet", ""),
    ("bro.org.pcap", "TCP", ""),
    ("bro.org.pcap", "TCP", "http.request"),
    ("bro.org.pcap", "IPv4", ""),
    ("synscan.pcapng", "TCP", ""),
    ("synscan.pcapng", "TCP", "tcp.flags.syn == 1 && tcp.flags.ack == 1"),
    ("synscan.pcapng", "IPv4", ""),
    ("dns-udp.pcap", "UDP", ""),
    ("dns-udp.pcap", "UDP", "dns.flags.response == 1"),
    ("dns-udp.pcap", "IPv4", ""),
    ("v6-http.pcap", "IPv6", ""),
    ("v6-http.pcap", "IPv6", "icmpv6"),
    ("v6-http.pcap", "TCP", ""),
    ("v6-http.pcap", "UDP", ""),
    ("arppoison.pcapng", "Ethernet", ""),
    ("arppoison.pcapng", "Ethernet", "arp"),
    ("arppoison.pcapng", "IPv4", "dns"),
    ("arppoison.pcapng", "UDP", ""),
]

PHS_CASES = [(name, "") for name in NAMES] + [
    ("http_espn.pcapng", "http"),
    ("arppoison.pcapng", "tcp || arp"),
    ("bro.org.pcap", "tcp.len > 0"),
]


@pytest.fixture(scope="module")
def ids(api: httpx.Client) -> dict[str, int]:
    """Upload the captures the statistics are compared on; map file name to id."""
    found = {}
    for name in NAMES:
        answer = upload(api, sample_capture(name))
        assert answer.status_code == 201, answer.text
        found[name] = int(answer.json()["id"])
    return found


def tshark_size(size: int) -> str:
    """Return a byte count as tshark 4.0's conversation table prints it (format_size, SI, truncated)."""
    for unit, scale in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size // scale >= 10:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def z_table(statistic: str, name: str, display_filter: str) -> list[str]:
    """Return the data lines of one of tshark's -z tables (two-pass, as the explorer)."""
    argument = f"{statistic},{display_filter}" if display_filter else statistic
    out = tshark("-2", "-q", "-r", str(sample_capture(name)), "-z", argument)
    lines = []
    for line in out.splitlines():
        if not line.strip() or line.startswith(("=", "Filter:", " ")) or "|" in line:
            continue
        if line.rstrip().endswith(("Conversations", "Endpoints")):
            continue
        lines.append(line)
    return lines


def tshark_conversations(name: str, kind: str, display_filter: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Parse `tshark -z conv,KIND[,FILTER]`: "A <-> B  ← frames bytes  → frames bytes  total  start  dur"."""
    rows = {}
    for line in z_table(f"conv,{TSHARK_KINDS[kind]}", name, display_filter):
        left, right = line.split(" <-> ")
        tokens = right.split()
        assert len(tokens) == 12, line
        rows[(left.strip(), tokens[0])] = {
            "packets_ba": int(tokens[1]),
            "bytes_ba": f"{tokens[2]} {tokens[3]}",
            "packets_ab": int(tokens[4]),
            "bytes_ab": f"{tokens[5]} {tokens[6]}",
            "packets": int(tokens[7]),
            "bytes": f"{tokens[8]} {tokens[9]}",
            "rel_start": Decimal(tokens[10]),
            "duration": Decimal(tokens[11]),
        }
    return rows


def tshark_endpoints(name: str, kind: str, display_filter: str) -> dict[tuple[str, str], list[int]]:
    """Parse `tshark -z endpoints,KIND[,FILTER]`: address, [port,] packets, bytes, tx and rx of each."""
    rows = {}
    for line in z_table(f"endpoints,{TSHARK_KINDS[kind]}", name, display_filter):
        tokens = line.split()
        port = tokens.pop(1) if kind in PORT_KINDS else ""
        assert len(tokens) == 7, line
        rows[(tokens[0], port)] = [int(token) for token in tokens[1:]]
    return rows


def side(address: str, port: str) -> str:
    return f"{address}:{port}" if port else address


def get_ok(api: httpx.Client, url: str, **params: str) -> Any:
    response = api.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("name", "kind", "display_filter"), CASES)
def test_conversations_match_tsharks_table(
    api: httpx.Client, ids: dict[str, int], name: str, kind: str, display_filter: str
) -> None:
    expected = tshark_conversations(name, kind, display_filter)
    rows = get_ok(api, f"/api/captures/{ids[name]}/conversations", kind=kind, filter=display_filter)
    shown = {(side(r["address_a"], r["port_a"]), side(r["address_b"], r["port_b"])): r for r in rows}
    assert expected, "a case should have rows to compare"
    assert shown.keys() == expected.keys()
    for key, want in expected.items():
        got = shown[key]
        for count in ("packets_ab", "packets_ba", "packets"):
            assert got[count] == want[count], (key, count)
        for size in ("bytes_ab", "bytes_ba", "bytes"):
            assert tshark_size(got[size]) == want[size], (key, size)
        assert got["packets"] == got["packets_ab"] + got["packets_ba"]
        assert abs(Decimal(str(got["rel_start"])) - want["rel_start"]) < Decimal("0.000001"), key
        assert abs(Decimal(str(got["duration"])) - want["duration"]) <= Decimal("0.00005"), key
        assert got["filter"], key


@pytest.mark.parametrize(("name", "kind", "display_filter"), CASES)
def test_endpoints_match_tsharks_table(
    api: httpx.Client, ids: dict[str, int], name: str, kind: str, display_filter: str
) -> None:
    expected = tshark_endpoints(name, kind, display_filter)
    rows = get_ok(api, f"/api/captures/{ids[name]}/endpoints", kind=kind, filter=display_filter)
    shown = {
        (r["address"], r["port"]): [
            r["packets"],
            r["bytes"],
            r["tx_packets"],
            r["tx_bytes"],
            r["rx_packets"],
            r["rx_bytes"],
        ]
        for r in rows
    }
    assert expected
    assert shown == expected


@pytest.mark.parametrize(("name", "kind", "display_filter"), CASES)
def test_conversation_bytes_add_up_to_the_endpoints_exactly(
    api: httpx.Client, ids: dict[str, int], name: str, kind: str, display_filter: str
) -> None:
    """tshark prints conversation bytes rounded ("176 kB"); its endpoint bytes are exact."""
    url = f"/api/captures/{ids[name]}"
    conversations = get_ok(api, f"{url}/conversations", kind=kind, filter=display_filter)
    sent: Counter[tuple[str, str]] = Counter()
    received: Counter[tuple[str, str]] = Counter()
    for row in conversations:
        a, b = (row["address_a"], row["port_a"]), (row["address_b"], row["port_b"])
        sent[a] += row["bytes_ab"]
        received[b] += row["bytes_ab"]
        sent[b] += row["bytes_ba"]
        received[a] += row["bytes_ba"]
    expected = tshark_endpoints(name, kind, display_filter)
    for key, (_, _, _, tx_bytes, _, rx_bytes) in expected.items():
        assert (sent[key], received[key]) == (tx_bytes, rx_bytes), key


def tshark_hierarchy(name: str, display_filter: str) -> list[tuple[int, str, int, int]]:
    argument = f"io,phs,{display_filter}" if display_filter else "io,phs"
    out = tshark("-2", "-q", "-r", str(sample_capture(name)), "-z", argument)
    lines = []
    for line in out.splitlines():
        match = re.fullmatch(r"( *)(\S+) +frames:(\d+) bytes:(\d+)\s*", line)
        if match:
            lines.append((len(match[1]) // 2, match[2], int(match[3]), int(match[4])))
    return lines


def flatten(nodes: list[dict[str, Any]], depth: int = 0) -> list[tuple[int, str, int, int]]:
    lines = []
    for node in nodes:
        lines.append((depth, node["protocol"], node["packets"], node["bytes"]))
        lines += flatten(node["children"], depth + 1)
    return lines


@pytest.mark.parametrize(("name", "display_filter"), PHS_CASES)
def test_protocol_hierarchy_matches_tshark(
    api: httpx.Client, ids: dict[str, int], name: str, display_filter: str
) -> None:
    tree = get_ok(api, f"/api/captures/{ids[name]}/protocol-hierarchy", filter=display_filter)
    expected = tshark_hierarchy(name, display_filter)
    assert expected
    assert flatten(tree) == expected
    displayed = len(tshark_numbers(sample_capture(name), display_filter or "frame"))
    for node in tree:
        assert node["percent_packets"] == pytest.approx(100 * node["packets"] / displayed)
    assert tree[0]["percent_bytes"] <= 100


def test_the_hierarchy_of_a_file_cut_short_counts_the_packets_read(api: httpx.Client, tmp_path: Path) -> None:
    # Cut mid-packet: the list shows the whole packets before the cut, and so does the table,
    # as tshark's (which exits with an error after printing it).
    whole = sample_capture("http_espn.pcapng").read_bytes()
    cut = tmp_path / "cut-short.pcapng"
    cut.write_bytes(whole[: len(whole) // 2 + 7])
    ident = upload(api, cut).json()["captures"][0]["id"]
    tree = get_ok(api, f"/api/captures/{ident}/protocol-hierarchy")
    out = tshark("-2", "-q", "-r", str(cut), "-z", "io,phs")
    expected = [
        (len(m[1]) // 2, m[2], int(m[3]), int(m[4]))
        for m in re.finditer(r"(?m)^( *)(\S+) +frames:(\d+) bytes:(\d+)\s*$", out)
    ]
    assert expected and flatten(tree) == expected
    shown = get_ok(api, f"/api/captures/{ident}/packets", limit="1")
    assert tree[0]["packets"] == shown["total"] == len(tshark_numbers(cut, "frame"))


def test_a_bad_filter_or_kind_is_a_400_with_the_engines_message(
    api: httpx.Client, ids: dict[str, int]
) -> None:
    url = f"/api/captures/{ids['dns-udp.pcap']}"
    for path in ("conversations", "endpoints", "protocol-hierarchy"):
        response = api.get(f"{url}/{path}", params={"filter": "tcp.port =="})
        assert response.status_code == 400
        assert response.json() == {"error": "Unexpected end of filter expression."}
    unknown = api.get(f"{url}/conversations", params={"kind": "Token-Ring"})
    assert unknown.status_code == 400 and "unknown kind" in unknown.json()["error"]
    assert api.get("/api/captures/999999/conversations").status_code == 404


def test_a_filter_nothing_matches_gives_empty_tables(api: httpx.Client, ids: dict[str, int]) -> None:
    url = f"/api/captures/{ids['dns-udp.pcap']}"
    assert get_ok(api, f"{url}/conversations", kind="TCP", filter="tcp") == []
    assert get_ok(api, f"{url}/endpoints", kind="UDP", filter="http") == []
    assert get_ok(api, f"{url}/protocol-hierarchy", filter="http") == []


def test_the_page_shows_the_rows_sorted_and_escaped(api: httpx.Client, ids: dict[str, int]) -> None:
    ident = ids["http_espn.pcapng"]
    rows = get_ok(api, f"/api/captures/{ident}/conversations", kind="TCP")
    page = api.get(
        f"/captures/{ident}/statistics/", params={"view": "conversations", "kind": "TCP", "sort": "-bytes"}
    )
    assert page.status_code == 200
    html = page.text
    biggest = max(rows, key=lambda r: r["bytes"])
    # Every row is there, its filter escaped in the attribute and encoded in the link.
    for row in rows:
        assert f'data-filter="{row["filter"].replace("&", "&amp;")}"' in html
    first_row = html.index('class="stats-row"')
    assert html.index(biggest["filter"].replace("&", "&amp;")) < html.index(
        'class="stats-row"', first_row + 1
    )
    assert 'aria-sort="descending" data-sort-key="bytes"' in html
    assert f"/captures/{ident}/?filter=ip.addr%3D%3D" in html
    assert f'<td class="num">{biggest["bytes"]:,}</td>' in html


def test_the_page_escapes_a_bad_filter_and_says_why(api: httpx.Client, ids: dict[str, int]) -> None:
    ident = ids["http_espn.pcapng"]
    page = api.get(f"/captures/{ident}/statistics/", params={"view": "endpoints", "filter": "<b>x</b> =="})
    assert page.status_code == 400
    assert "<b>x" not in page.text
    assert 'value="&lt;b&gt;x&lt;/b&gt; =="' in page.text
    assert 'id="stats-error"' in page.text


def test_htmx_gets_only_the_table(api: httpx.Client, ids: dict[str, int]) -> None:
    ident = ids["v6-http.pcap"]
    url = f"/captures/{ident}/statistics/?view=hierarchy"
    fragment = api.get(url, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert fragment.text.strip().startswith('<div id="stats-table"')
    assert "<html" not in fragment.text and "icmpv6" in fragment.text
    assert "HX-Request" in fragment.headers["Vary"]
    assert "<html" in api.get(url).text


@pytest.mark.browser
def test_it_sorts_conversations_by_bytes_and_applies_one_as_the_capture_filter(
    browser: Browser, server: Server, ids: dict[str, int]
) -> None:
    name = "http_espn.pcapng"
    context = server.new_context(browser, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"/captures/{ids[name]}/")
    page.click("#statistics-link")
    expect(page.locator("#stats-grid tbody tr.stats-row").first).to_be_visible()

    page.click('#stats-grid th[data-sort-key="bytes"] a')
    expect(page.locator('#stats-grid th[data-sort-key="bytes"]')).to_have_attribute("aria-sort", "descending")
    expect(page).to_have_url(re.compile(r"sort=-bytes"))
    sizes = page.evaluate(
        """() => {
            const column = [...document.querySelectorAll('#stats-grid thead th')]
                .findIndex((th) => th.dataset.sortKey === 'bytes');
            return [...document.querySelectorAll('#stats-grid tbody tr.stats-row')]
                .map((row) => Number(row.cells[column].textContent.replaceAll(',', '')));
        }"""
    )
    assert len(sizes) > 1 and sizes == sorted(sizes, reverse=True)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "statistics.png"), full_page=True)

    top = page.locator("#stats-grid tbody tr.stats-row").first
    row_filter = top.get_attribute("data-filter")
    assert row_filter
    top.locator("a.apply-filter").click()
    expect(page.locator("#filter")).to_have_value(row_filter)
    displayed = len(tshark_numbers(sample_capture(name), row_filter))
    expect(page.locator("#status-displayed")).to_have_attribute("data-value", str(displayed))
    context.close()
    assert errors == []
