"""Expert Information and the I/O Graph equal tshark's own `-z expert` and `-z io,stat` tables.

On captures that span years, where sharkd's own `iograph` stops at 250,000 intervals, the I/O
graph is checked window by window against each frame's `frame.time_epoch` and `frame.len`.
"""

from __future__ import annotations

import re
import struct
import subprocess
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, expect

from explorer.engine.timeline import Unreadable, read_headers

from .conftest import ARTIFACTS, Server, sample_capture, tshark, tshark_numbers, upload

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
        answer = upload(api, sample_capture(name))
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
    for line in tshark("-2", "-q", "-r", str(sample_capture(name)), "-z", argument).splitlines():
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
    for line in tshark("-2", "-q", "-r", str(sample_capture(name)), "-z", argument).splitlines():
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
        assert set(frames) <= set(tshark_numbers(sample_capture(name), display_filter))


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
    assert tshark_numbers(sample_capture("http_espn.pcapng"), expression) == [
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
    assert len(tshark_numbers(sample_capture("bro.org.pcap"), link_filter)) == frames[3]
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


# --- Long, sparse captures -------------------------------------------------------------------

YEAR_NS = 365 * 86_400 * 1_000_000_000
# sharkd's iograph keeps intervals 0..249,999; the windows checked here lie far beyond.
SHARKD_ITEMS = 250_000
ARP = bytes.fromhex("ffffffffffff00112233445508060001080006040001001122334455c0a80001000000000000c0a80002")
BASE_NS = 1_500_000_000_999_999_999


def pcap_bytes(
    stamps_ns: list[int], *, nano: bool, order: str, link_type: int = 1, data: bytes = ARP
) -> bytes:
    """Write a pcap file of one frame per time stamp."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, link_type)
    for stamp in stamps_ns:
        seconds, fraction = divmod(stamp, 1_000_000_000)
        out += struct.pack(
            order + "IIII", seconds, fraction if nano else fraction // 1000, len(data), len(data)
        )
        out += data
    return out


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(kind: int, body: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "II", kind, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))


def section(order: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def interface(order: str = "<", tsresol: int | None = None, tsoffset: int | None = None) -> bytes:
    options = b""
    if tsresol is not None:
        options += struct.pack(order + "HH", 9, 1) + padded(bytes([tsresol]))
    if tsoffset is not None:
        options += struct.pack(order + "HHq", 14, 8, tsoffset)
    if options:
        options += struct.pack(order + "HH", 0, 0)
    return block(1, struct.pack(order + "HHI", 1, 0, 65535) + options, order)


def enhanced(interface_id: int, units: int, order: str = "<", size: int = 0) -> bytes:
    size = size or len(ARP)
    head = struct.pack(order + "IIIII", interface_id, units >> 32, units & 0xFFFFFFFF, len(ARP), size)
    return block(6, head + padded(ARP), order)


def obsolete(interface_id: int, units: int, order: str = "<") -> bytes:
    head = struct.pack(order + "HHIIII", interface_id, 0, units >> 32, units & 0xFFFFFFFF, len(ARP), 64)
    return block(2, head + padded(ARP), order)


def simple(order: str = "<") -> bytes:
    return block(3, struct.pack(order + "I", len(ARP)) + padded(ARP), order)


def pcapng_bytes() -> bytes:
    """Interfaces at micro-, nano- and 2^-20 second resolution and one with an offset, two sections.

    Simple packet blocks carry no time stamp (Wireshark dates them 1970) and one frame is earlier
    than frame 1: neither falls in any interval.
    """
    seconds = 1_500_000_000
    out = section() + interface() + interface(tsresol=9) + interface(tsresol=0x80 | 20)
    out += interface(tsresol=3, tsoffset=2 * 365 * 86_400)
    out += enhanced(0, seconds * 1_000_000 + 999_999)
    out += enhanced(1, (seconds + 1) * 1_000_000_000 + 999_999, size=1500)
    out += simple()
    out += enhanced(2, ((seconds + 3) << 20) + (1 << 19))
    out += obsolete(3, (seconds + 4) * 1000 + 250)  # two years later, through if_tsoffset
    out += enhanced(0, (seconds - 10) * 1_000_000)  # before frame 1
    out += section(">") + interface(">", tsresol=6) + interface(">", tsresol=9)
    out += enhanced(1, (seconds + 3 * 365 * 86_400) * 1_000_000_000 + 1, ">")
    out += enhanced(0, (seconds + 5 * 365 * 86_400) * 1_000_000 + 7, ">")
    return out


def synthetic_stamps() -> list[int]:
    """Frames a nanosecond either side of interval edges, years apart, one before frame 1."""
    return [
        BASE_NS,
        BASE_NS + 999_999,
        BASE_NS + 1_000_000,
        BASE_NS + 1_000_001,
        BASE_NS - 1,
        BASE_NS + 3 * YEAR_NS + 123_456_789,
        BASE_NS + 3 * YEAR_NS + 123_456_789,
        BASE_NS + 7 * YEAR_NS + 1_000_000_000,
    ]


def sparse_pcap(folder: Path) -> Path:
    """Copies of dns-tcp.pcap 2 and 5 years after the first, and one a day before it, appended."""
    source = sample_capture("dns-tcp.pcap")
    parts = [source]
    for index, shift in enumerate(["63072000.25", "157766400.5", "-86400"]):
        part = folder / f"part{index}.pcap"
        subprocess.run(["editcap", "-t", shift, str(source), str(part)], check=True, capture_output=True)
        parts.append(part)
    merged = folder / "sparse-dns-tcp.pcap"
    command = ["mergecap", "-a", "-F", "pcap", "-w", str(merged), *map(str, parts)]
    subprocess.run(command, check=True, capture_output=True)
    return merged


@pytest.fixture(scope="module")
def long_captures(api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, Path]]:
    """Write and upload captures spanning years; map name to (id, path)."""
    folder = tmp_path_factory.mktemp("long")
    files = {
        "sparse-dns-tcp.pcap": sparse_pcap(folder),
        "ndpi-rtp.pcapng": sample_capture("ndpi-rtp.pcapng"),
    }
    for name, content in {
        "nano-le.pcap": pcap_bytes(synthetic_stamps(), nano=True, order="<"),
        "nano-be.pcap": pcap_bytes(synthetic_stamps(), nano=True, order=">"),
        "micro-be.pcap": pcap_bytes(synthetic_stamps(), nano=False, order=">"),
        "resolutions.pcapng": pcapng_bytes(),
        # Bluetooth H4 records start with a 4-byte direction that wiretap takes off frame.len.
        "h4-phdr.pcap": pcap_bytes(synthetic_stamps(), nano=False, order="<", link_type=201),
    }.items():
        files[name] = folder / name
        files[name].write_bytes(content)
    found = {}
    for name, path in files.items():
        answer = upload(api, path)
        assert answer.status_code == 201, answer.text
        found[name] = (int(answer.json()["id"]), path)
    return found


def epoch_ns(text: str) -> int:
    """Parse tshark's frame.time_epoch; a frame without a time stamp shows none and counts as 0."""
    if not text:
        return 0
    sign = -1 if text.startswith("-") else 1
    seconds, _, fraction = text.lstrip("-").partition(".")
    return sign * (int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9]))


def tshark_frames(path: Path) -> list[tuple[int, int]]:
    """Return each frame's offset from frame 1 (ns) and frame.len, as tshark reads them."""
    out = tshark("-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len")
    rows = [line.split("\t") for line in out.splitlines() if line]
    stamps = [epoch_ns(stamp) for stamp, _ in rows]
    return [(stamp - stamps[0], int(size)) for stamp, (_, size) in zip(stamps, rows, strict=True)]


def bucketed(
    frames: list[tuple[int, int]], interval_ms: int, first: int, last: int, numbers: list[int] | None = None
) -> tuple[list[int], list[int]]:
    """Count packets and bytes per interval as Wireshark's I/O graph does: from frame 1, none before it."""
    interval_ns = interval_ms * 1_000_000
    packets, size = [0] * (last - first), [0] * (last - first)
    chosen = range(1, len(frames) + 1) if numbers is None else numbers
    for number in chosen:
        offset, length = frames[number - 1]
        index = offset // interval_ns
        if offset >= 0 and first <= index < last:
            packets[index - first] += 1
            size[index - first] += length
    return packets, size


def seconds_of(index: int, interval_ms: int) -> str:
    return str(Decimal(index * interval_ms) / 1000)


def windows_around(frames: list[tuple[int, int]], interval_ms: int, length: int) -> list[int]:
    """Return the first interval of a window a little before each stretch of frames."""
    starts: list[int] = []
    for offset, _ in sorted(frames):
        index = offset // (interval_ms * 1_000_000)
        if offset >= 0 and (not starts or index >= starts[-1] + length):
            starts.append(max(index - 3, 0))
    return starts


def assert_windows_match(
    api: httpx.Client, ident: int, path: Path, interval_ms: int, length: int, display_filter: str = ""
) -> list[int]:
    """Ask for a window around each stretch of frames; compare it with the frames tshark reads."""
    frames = tshark_frames(path)
    numbers = tshark_numbers(path, display_filter) if display_filter else None
    starts = windows_around(frames, interval_ms, length)
    for first in starts:
        body = get_ok(
            api,
            f"/api/captures/{ident}/iograph",
            interval=interval_ms,
            graph=["packets", "bytes"],
            filter=[display_filter, display_filter],
            start=seconds_of(first, interval_ms),
            end=seconds_of(first + length, interval_ms),
        )
        total = max(offset for offset, _ in frames) // (interval_ms * 1_000_000) + 1
        assert body["first"] == first and body["total"] == total
        last = min(first + length, total)
        packets, size = bucketed(frames, interval_ms, first, last, numbers)
        assert [s["values"] for s in body["series"]] == [packets, size], f"window from {first}"
    return starts


@pytest.mark.parametrize("name", ["nano-le.pcap", "nano-be.pcap", "micro-be.pcap", "resolutions.pcapng"])
def test_it_reads_frame_times_and_lengths_as_wireshark_does(
    long_captures: dict[str, tuple[int, Path]], name: str
) -> None:
    _, path = long_captures[name]
    timeline = read_headers(path)
    assert list(zip(timeline.offsets, timeline.lengths, strict=True)) == tshark_frames(path)


@pytest.mark.parametrize(
    "name", ["pptp.pcap", "tcp-handshake-nano.pcap", "ndpi-rtp.pcapng", "synscan.pcapng"]
)
def test_it_reads_sample_captures_as_wireshark_does(name: str) -> None:
    timeline = read_headers(sample_capture(name))
    assert list(zip(timeline.offsets, timeline.lengths, strict=True)) == tshark_frames(sample_capture(name))


def test_it_leaves_link_types_with_a_pseudo_header_to_the_engine(
    api: httpx.Client, long_captures: dict[str, tuple[int, Path]]
) -> None:
    ident, path = long_captures["h4-phdr.pcap"]
    with pytest.raises(Unreadable):
        read_headers(path)
    assert tshark_frames(path)[0][1] == len(ARP) - 4
    assert assert_windows_match(api, ident, path, 1, 20)


@pytest.mark.parametrize("name", ["nano-le.pcap", "nano-be.pcap", "micro-be.pcap", "resolutions.pcapng"])
def test_it_counts_windows_years_apart_at_1_ms(
    api: httpx.Client, long_captures: dict[str, tuple[int, Path]], name: str
) -> None:
    ident, path = long_captures[name]
    starts = assert_windows_match(api, ident, path, 1, 40)
    assert max(starts) > 1000 * SHARKD_ITEMS


def test_it_counts_every_packet_of_a_sparse_capture_far_beyond_sharkds_limit(
    api: httpx.Client, long_captures: dict[str, tuple[int, Path]], server: Server
) -> None:
    ident, path = long_captures["sparse-dns-tcp.pcap"]
    starts = assert_windows_match(api, ident, path, 1, 1000)
    assert len(starts) == 6 and starts[-1] > 150_000_000_000
    assert assert_windows_match(api, ident, path, 1000, 1000)
    # The copy dated a day before frame 1 is in no interval.
    url = f"/api/captures/{ident}/iograph"
    early = get_ok(api, url, interval=600000, start="0", end="100000000")
    late = get_ok(api, url, interval=600000, start="100000000", end="200000000")
    assert sum(early["series"][0]["values"]) + sum(late["series"][0]["values"]) == 60
    ident, path = long_captures["ndpi-rtp.pcapng"]
    assert assert_windows_match(api, ident, path, 1, 200)[-1] > SHARKD_ITEMS
    assert "disagree with the engine" not in (server.workdir / "server.log").read_text()


def test_it_counts_a_filtered_series_far_beyond_sharkds_limit(
    api: httpx.Client, long_captures: dict[str, tuple[int, Path]]
) -> None:
    ident, path = long_captures["sparse-dns-tcp.pcap"]
    starts = assert_windows_match(api, ident, path, 1, 1000, "tcp.flags.syn == 1")
    assert starts[-1] > SHARKD_ITEMS
    assert assert_windows_match(api, ident, path, 10, 500, "dns")


def test_it_counts_the_same_as_sharkd_within_its_limit(
    api: httpx.Client, long_captures: dict[str, tuple[int, Path]]
) -> None:
    """Near the start, a filtered series comes from sharkd's iograph and every packet from headers."""
    for name in ["resolutions.pcapng", "nano-be.pcap"]:
        ident, _ = long_captures[name]
        body = get_ok(
            api,
            f"/api/captures/{ident}/iograph",
            interval=1,
            graph=["packets", "packets", "bytes", "bytes"],
            filter=["", "frame", "", "frame"],
            start="0",
            end="200",
        )
        values = [s["values"] for s in body["series"]]
        assert values[0] == values[1] and values[2] == values[3] and sum(values[0]) >= 2


def test_it_points_at_the_nearest_activity_outside_the_answer(
    api: httpx.Client, long_captures: dict[str, tuple[int, Path]]
) -> None:
    ident, _ = long_captures["sparse-dns-tcp.pcap"]
    url = f"/api/captures/{ident}/iograph"
    first = get_ok(api, url, interval=1000, start="0", end="1000")
    assert first["previous_active"] is None and first["next_active"] == 63072000
    filtered = get_ok(api, url, interval=1000, filter="tcp.flags.syn == 1", start="0", end="1000")
    assert filtered["next_active"] == 63072000
    middle = get_ok(api, url, interval=1000, start="100000000", end="100001000")
    assert middle["series"][0]["values"] == [0] * 1000
    assert (middle["previous_active"], middle["next_active"]) == (63072001, 157766400)


def test_the_api_refuses_a_range_of_too_many_intervals(
    api: httpx.Client, long_captures: dict[str, tuple[int, Path]]
) -> None:
    ident, _ = long_captures["sparse-dns-tcp.pcap"]
    url = f"/api/captures/{ident}/iograph"
    whole = api.get(url, params={"interval": 1000})
    assert whole.status_code == 400
    assert "choose a longer interval or a shorter range" in whole.json()["error"]
    too_long = api.get(url, params={"interval": 1, "start": "100", "end": "300.0005"})
    assert too_long.status_code == 400
    assert "200,001 intervals, more than 200,000" in too_long.json()["error"]
    assert api.get(url, params={"interval": 1, "start": "100", "end": "300"}).status_code == 200
    assert api.get(url, params={"interval": 1, "start": "5", "end": "5"}).status_code == 400
    assert api.get(url, params={"interval": 1, "start": "-1", "end": "5"}).status_code == 400
    # Five years are more than 200,000 intervals of 10 min too: the API answers a range of them.
    assert api.get(url, params={"interval": 600000}).status_code == 400
    assert get_ok(api, url, interval=600000, start="1e8", end="1e9")["total"] == 262945


def test_the_io_graph_page_shows_a_long_capture_a_window_at_a_time(
    api: httpx.Client, long_captures: dict[str, tuple[int, Path]]
) -> None:
    ident, path = long_captures["sparse-dns-tcp.pcap"]
    page = api.get(f"/captures/{ident}/io-graph/", params={"interval": 1000})
    assert page.status_code == 200
    assert 'id="io-error"' not in page.text and 'id="io-chart"' in page.text
    assert "Intervals 1–1,000 of 157,766,402" in page.text
    assert 'id="io-zoom-reset"' not in page.text and 'id="io-earlier"' not in page.text
    assert [int(n) for n in re.findall(r'data-series="0" data-interval="(\d+)"', page.text)] == [0, 1]
    later = re.search(r'id="io-later" href="([^"]+)"', page.text)
    jump = re.search(r'id="io-next-activity" href="([^"]+)"', page.text)
    assert later and jump
    assert parse_qs(urlsplit(later[1].replace("&amp;", "&")).query)["start"] == ["1000"]
    following = api.get(jump[1].replace("&amp;", "&"))
    assert following.status_code == 200
    shown = [int(n) for n in re.findall(r'data-series="0" data-interval="(\d+)"', following.text)]
    assert shown == [63072000, 63072001]
    assert 'id="io-previous-activity"' in following.text and 'id="io-next-activity"' in following.text
    hrefs = re.findall(r'<a class="io-bar" href="([^"]+)"', following.text)
    link_filter = parse_qs(urlsplit(hrefs[1].replace("&amp;", "&")).query)["filter"][0]
    assert link_filter == "frame.time_relative >= 63072001 && frame.time_relative < 63072002"
    assert len(tshark_numbers(path, link_filter)) == 10


@pytest.mark.browser
def test_it_jumps_to_the_next_activity_of_a_sparse_capture(
    browser: Browser, server: Server, long_captures: dict[str, tuple[int, Path]]
) -> None:
    ident, path = long_captures["sparse-dns-tcp.pcap"]
    context = server.new_context(browser, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"/captures/{ident}/io-graph/?interval=1000")
    expect(page.locator("#io-window")).to_contain_text("of 157,766,402")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "io-graph-sparse-start.png"), full_page=True)
    page.click("#io-next-activity")
    expect(page.locator("#io-window")).to_contain_text("63,072,000 s")
    page.select_option("#io-interval", "10")
    page.fill("#io-start", "63072000.2")
    page.fill("#io-end", "63072001.5")
    page.click("#io-apply")
    bars = page.locator('#io-chart .io-bar[data-series="0"]')
    expect(bars.first).to_be_attached()
    frames = tshark_frames(path)
    first = 6307200020
    packets, _ = bucketed(frames, 10, first, first + 130)
    assert bars.count() == sum(1 for n in packets if n)
    page.screenshot(path=str(ARTIFACTS / "io-graph-sparse.png"), full_page=True)
    bar = bars.last
    interval = int(bar.get_attribute("data-interval") or "0")
    bar.locator("rect").last.click()
    expect(page.locator("#filter")).to_have_value(re.compile(r"^frame\.time_relative >= 63072001\."))
    expect(page.locator("#status-displayed")).to_have_attribute("data-value", str(packets[interval - first]))
    context.close()
    assert errors == []
