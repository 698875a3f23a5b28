"""Expert Information and the I/O Graph equal tshark's own `-z expert` and `-z io,stat` tables."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, expect

from .conftest import ARTIFACTS, Server, shared_capture, tshark, tshark_numbers, upload

pytestmark = pytest.mark.engine

NAMES = [
    "tcp_retransmissions.pcapng",
    "tcp_dupack.pcapng",
    "tcp_zerowindowrecovery.pcapng",
    "http_espn.pcapng",
    "bro.org.pcap",
]

# tshark's section titles and the severities sharkd names.
SECTIONS = {"Errors": "Error", "Warns": "Warning", "Notes": "Note", "Chats": "Chat", "Comments": "Comment"}
SECTION_LINE = re.compile(r"^(Errors|Warns|Notes|Chats|Comments) \((\d+)\)$")
# "%12u   %10s %18s  %s": a group may hold a space ("Response Code"), a summary starts after two.
EXPERT_LINE = re.compile(r"^ *(\d+) +(.+?) +(\S+)  (?! )(.*)$")
IO_LINE = re.compile(r"^\|\s*[\d.]+ <> *(?:[\d.]+|Dur)\s*\|\s*(\d+) \|\s*(\d+) \|$")


@pytest.fixture(scope="module")
def ids(api: httpx.Client) -> dict[str, int]:
    """Upload the captures compared here; map file name to id."""
    found = {}
    for name in NAMES:
        answer = upload(api, shared_capture(name))
        assert answer.status_code == 201, answer.text
        found[name] = int(answer.json()["id"])
    return found


def get_ok(api: httpx.Client, url: str, **params: Any) -> Any:
    response = api.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def tshark_expert(name: str, display_filter: str = "") -> Counter[tuple[str, str, str, str]]:
    """Parse `tshark -2 -z expert[,FILTER]` into counts per (severity, group, protocol, summary)."""
    argument = f"expert,{display_filter}" if display_filter else "expert"
    counts: Counter[tuple[str, str, str, str]] = Counter()
    severity = ""
    totals: dict[str, int] = {}
    for line in tshark("-2", "-q", "-r", str(shared_capture(name)), "-z", argument).splitlines():
        section = SECTION_LINE.match(line)
        if section:
            severity = SECTIONS[section[1]]
            totals[severity] = int(section[2])
            continue
        row = EXPERT_LINE.match(line)
        if row and severity and not line.strip().startswith("Frequency"):
            counts[(severity, row[2], row[3], row[4])] += int(row[1])
    for severity, total in totals.items():
        assert sum(n for key, n in counts.items() if key[0] == severity) == total, severity
    return counts


def tshark_io(name: str, seconds: str, display_filter: str = "") -> tuple[list[int], list[int]]:
    """Parse `tshark -2 -z io,stat,SECONDS[,FILTER]` into frames and bytes per interval."""
    argument = f"io,stat,{seconds},{display_filter}" if display_filter else f"io,stat,{seconds}"
    frames, sizes = [], []
    for line in tshark("-2", "-q", "-r", str(shared_capture(name)), "-z", argument).splitlines():
        row = IO_LINE.match(line)
        if row:
            frames.append(int(row[1]))
            sizes.append(int(row[2]))
    return frames, sizes


@pytest.mark.parametrize(
    ("name", "display_filter"),
    [(name, "") for name in NAMES[:4]] + [("http_espn.pcapng", "http"), ("tcp_dupack.pcapng", "tcp.len > 0")],
)
def test_expert_counts_match_tsharks_table(
    api: httpx.Client, ids: dict[str, int], name: str, display_filter: str
) -> None:
    expected = tshark_expert(name, display_filter)
    body = get_ok(api, f"/api/captures/{ids[name]}/expert", filter=display_filter)
    shown = Counter(
        {(s["severity"], s["group"], s["protocol"], s["message"]): s["count"] for s in body["summary"]}
    )
    assert expected, "a case should have expert items to compare"
    assert shown == expected
    items = Counter((i["severity"], i["group"], i["protocol"], i["message"]) for i in body["items"])
    assert items == expected
    frames = [item["frame"] for item in body["items"]]
    assert frames == sorted(frames)
    if display_filter:
        assert set(frames) <= set(tshark_numbers(shared_capture(name), display_filter))


def test_the_summary_lists_the_most_severe_first(api: httpx.Client, ids: dict[str, int]) -> None:
    body = get_ok(api, f"/api/captures/{ids['http_espn.pcapng']}/expert")
    order = ["Error", "Warning", "Note", "Chat", "Comment"]
    ranks = [order.index(s["severity"]) for s in body["summary"]]
    assert ranks == sorted(ranks) and ranks[0] == 1


def test_io_graph_of_every_packet_matches_tshark_at_100_ms(api: httpx.Client, ids: dict[str, int]) -> None:
    frames, sizes = tshark_io("http_espn.pcapng", "0.1")
    body = get_ok(
        api,
        f"/api/captures/{ids['http_espn.pcapng']}/iograph",
        interval=100,
        graph=["packets", "bytes"],
        filter=["", ""],
    )
    assert body["interval_ms"] == 100
    assert len(frames) > 10
    assert [s["unit"] for s in body["series"]] == ["packets", "bytes"]
    assert body["series"][0]["values"] == frames
    assert body["series"][1]["values"] == sizes


def test_io_graph_of_a_filter_matches_tshark_at_1_s(api: httpx.Client, ids: dict[str, int]) -> None:
    frames, sizes = tshark_io("bro.org.pcap", "1", "http")
    url = f"/api/captures/{ids['bro.org.pcap']}/iograph"
    packets = get_ok(api, url, interval=1000, graph="packets", filter="http")
    size = get_ok(api, url, interval=1000, graph="bytes", filter="http")
    assert sum(frames) > 0 and 0 in frames, "a case with empty intervals between busy ones"
    assert packets["series"] == [{"filter": "http", "unit": "packets", "values": frames}]
    assert size["series"][0]["values"] == sizes


def test_io_graph_series_default_to_every_packet(api: httpx.Client, ids: dict[str, int]) -> None:
    frames, _ = tshark_io("bro.org.pcap", "10")
    body = get_ok(api, f"/api/captures/{ids['bro.org.pcap']}/iograph", interval=10000)
    assert body["series"] == [{"filter": "", "unit": "packets", "values": frames}]


def test_bad_requests_are_400s_with_the_reason(api: httpx.Client, ids: dict[str, int]) -> None:
    url = f"/api/captures/{ids['tcp_dupack.pcapng']}"
    bad_filter = api.get(f"{url}/expert", params={"filter": "tcp.port =="})
    assert bad_filter.status_code == 400
    assert bad_filter.json() == {"error": "Unexpected end of filter expression."}
    series_filter = api.get(f"{url}/iograph", params={"filter": ["", "tcp.port =="]})
    assert series_filter.status_code == 400
    assert api.get(f"{url}/iograph", params={"interval": 7}).status_code == 400
    assert api.get(f"{url}/iograph", params={"graph": "bits"}).status_code == 400
    too_many = api.get(f"{url}/iograph", params={"filter": ["a", "b", "c", "d", "e"]})
    assert too_many.status_code == 400  # only four are kept, and "a" is no filter
    assert api.get("/api/captures/999999/expert").status_code == 404
    assert api.get("/api/captures/999999/iograph").status_code == 404


def test_the_expert_page_groups_escapes_and_links(api: httpx.Client, ids: dict[str, int]) -> None:
    ident = ids["http_espn.pcapng"]
    page = api.get(f"/captures/{ident}/expert/", params={"sort": "-count"})
    assert page.status_code == 200
    html = page.text
    assert html.index('data-severity="Warning"') < html.index('data-severity="Chat"')
    # A summary with backslashes and ampersands: its filter is a quoted literal, escaped in HTML.
    assert 'data-filter="_ws.expert.message == &quot;HTTP/1.1 200 OK\\\\r\\\\n&quot;"' in html
    assert "GET /combiner/c?v=201004021838&amp;js=jquery" in html
    assert f'href="/captures/{ident}/?packet=955"' in html
    assert "_ws.expert.severity+%3D%3D+warning" in html
    assert 'aria-sort="descending" data-sort-key="count"' in html
    chats = html[html.index('data-severity="Chat"') :]
    counts = [int(n) for n in re.findall(r'class="expert-row" data-filter="[^"]*" data-count="(\d+)"', chats)]
    assert counts == sorted(counts, reverse=True) and counts[0] == 58
    fragment = api.get(f"/captures/{ident}/expert/", headers={"HX-Request": "true"})
    assert fragment.text.strip().startswith('<div id="expert-table"')


def test_the_expert_filter_on_a_message_finds_its_packets(api: httpx.Client, ids: dict[str, int]) -> None:
    """The "filter on this" expression of a message matches exactly the frames listed under it."""
    ident = ids["http_espn.pcapng"]
    html = api.get(f"/captures/{ident}/expert/").text
    match = re.search(r'class="expert-row" data-filter="([^"]*)" data-count="58"', html)
    assert match
    expression = match[1].replace("&quot;", '"')
    assert tshark_numbers(shared_capture("http_espn.pcapng"), expression) == [
        item["frame"]
        for item in get_ok(api, f"/api/captures/{ident}/expert")["items"]
        if item["message"] == "HTTP/1.1 200 OK\\r\\n"
    ]


def test_the_expert_page_escapes_a_bad_filter(api: httpx.Client, ids: dict[str, int]) -> None:
    page = api.get(f"/captures/{ids['tcp_dupack.pcapng']}/expert/", params={"filter": "<b>x</b> =="})
    assert page.status_code == 400
    assert "<b>x" not in page.text and 'id="expert-error"' in page.text


def test_the_io_graph_page_draws_bars_that_link_to_their_packets(
    api: httpx.Client, ids: dict[str, int]
) -> None:
    ident = ids["bro.org.pcap"]
    page = api.get(
        f"/captures/{ident}/io-graph/", params={"interval": 1000, "graph": "packets", "filter": "http"}
    )
    assert page.status_code == 200
    hrefs = re.findall(r'<a class="io-bar" href="([^"]+)" data-series="0" data-interval="3"', page.text)
    assert len(hrefs) == 1
    link_filter = parse_qs(urlsplit(hrefs[0].replace("&amp;", "&")).query)["filter"][0]
    assert link_filter == "(http) && frame.time_relative >= 3 && frame.time_relative < 4"
    frames, _ = tshark_io("bro.org.pcap", "1", "http")
    assert len(tshark_numbers(shared_capture("bro.org.pcap"), link_filter)) == frames[3]
    assert page.text.count('class="io-bar"') == sum(1 for n in frames if n)
    # Zooming in keeps the series and narrows the bars to the range.
    zoomed = api.get(
        f"/captures/{ident}/io-graph/",
        params={"interval": 1000, "graph": "packets", "filter": "http", "start": "2", "end": "9"},
    )
    assert zoomed.status_code == 200
    shown = [int(n) for n in re.findall(r'data-series="0" data-interval="(\d+)"', zoomed.text)]
    assert shown == [3, 8]
    assert 'id="io-zoom-out"' in zoomed.text and 'id="io-zoom-reset"' in zoomed.text


def test_the_io_graph_page_marks_a_bad_series_filter(api: httpx.Client, ids: dict[str, int]) -> None:
    ident = ids["tcp_dupack.pcapng"]
    page = api.get(f"/captures/{ident}/io-graph/", params={"filter": ["", '"<script>'], "graph": "packets"})
    assert page.status_code == 400
    assert "<script>" not in page.text
    assert 'id="io-error-2"' in page.text and 'id="io-chart"' not in page.text
    fragment = api.get(f"/captures/{ident}/io-graph/", headers={"HX-Request": "true"})
    assert fragment.text.strip().startswith('<div id="io-body"')


def test_the_statistics_page_links_both_new_tabs(api: httpx.Client, ids: dict[str, int]) -> None:
    ident = ids["tcp_dupack.pcapng"]
    html = api.get(f"/captures/{ident}/statistics/", params={"filter": "tcp"}).text
    assert f'href="/captures/{ident}/expert/?filter=tcp"' in html
    assert f'href="/captures/{ident}/io-graph/?filter=tcp"' in html


@pytest.mark.browser
def test_it_adds_a_dns_series_and_opens_a_bars_packets(
    browser: Browser, server: Server, ids: dict[str, int]
) -> None:
    name = "http_espn.pcapng"
    context = server.new_context(browser, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"/captures/{ids[name]}/statistics/")
    page.click('#stats-views a[data-view="iograph"]')
    expect(page.locator("#io-chart .io-bar").first).to_be_attached()

    page.select_option("#io-interval", "100")
    page.click("#io-apply")
    expect(page).to_have_url(re.compile(r"interval=100"))
    page.click("#io-add-series")
    expect(page.locator("#io-filter-2")).to_be_visible()
    page.fill("#io-filter-2", "dns")
    page.click("#io-apply")
    expect(page).to_have_url(re.compile(r"filter=dns"))
    dns_bars = page.locator('#io-chart .io-bar[data-series="1"]')
    expect(dns_bars.first).to_be_attached()
    frames, _ = tshark_io(name, "0.1", "dns")
    assert dns_bars.count() == sum(1 for n in frames if n)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "io-graph.png"), full_page=True)

    bar = dns_bars.nth(2)
    interval = int(bar.get_attribute("data-interval") or "0")
    bar.locator("rect").last.click()
    expect(page.locator("#filter")).to_have_value(re.compile(r"^\(dns\) && frame\.time_relative >= "))
    expect(page.locator("#status-displayed")).to_have_attribute("data-value", str(frames[interval]))
    assert frames[interval] > 0
    context.close()
    assert errors == []
