"""Markup inside packets and file names is shown as text, never run: pages, fragments and the browser."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from .conftest import Server, tshark_rows, upload

pytestmark = pytest.mark.browser

ENGINE_MS = 15_000
expect.set_options(timeout=ENGINE_MS)

# Each payload sets window.__xss (or opens a dialog) if the page ever turns it into markup.
URI = '/<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
HOST = "<b onmouseover=alert(5)>bold</b>"
USER_AGENT = '"><svg onload=window.__xss=6>'
DNS_LABELS = [b"<svg/onload=window", b"__xss=3>", b"example", b"com"]
DNS_NAME = "<svg/onload=window.__xss=3>.example.com"
FILE_NAME = "<img src=x onerror=window.__xss=4>.pcap"
RAW_IMG = "<img src=x onerror"

# Elements a payload would create if it got through, in the parts of the page that show packet data.
INJECTED = ", ".join(
    f"{container} {tag}"
    for container in ("#packet-list", "#detail-tree", "#detail-bytes", "#statusbar", "#filter-history")
    for tag in ("script", "img", "svg", "b", "iframe")
)
INJECTED_COUNT = f"""() => document.querySelectorAll({INJECTED!r}).length
    + document.querySelectorAll('[onerror], [onload], [onmouseover]').length
    + Array.from(document.scripts).filter((script) => script.textContent.includes('__xss')).length"""


# ---- a capture written by hand ----------------------------------------------------------------


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(protocol: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, protocol, 0,
        bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
    )  # fmt: skip
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def ethernet(payload: bytes) -> bytes:
    return bytes.fromhex("020000000002 020000000001 0800") + payload


def tcp(source_port: int, destination_port: int, payload: bytes) -> bytes:
    # PSH/ACK with a zero checksum: tshark does not verify checksums by default.
    return struct.pack("!HHIIBBHHH", source_port, destination_port, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload


def udp(source_port: int, destination_port: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0) + payload


def dns_query(labels: list[bytes]) -> bytes:
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)


def pcap(frames: list[bytes]) -> bytes:
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for index, frame in enumerate(frames):
        data += struct.pack("<IIII", 1_700_000_000 + index, 0, len(frame), len(frame)) + frame
    return data


def hostile_capture() -> bytes:
    request = f"GET {URI} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: {USER_AGENT}\r\n\r\n".encode()
    return pcap(
        [
            ethernet(ipv4(6, tcp(40000, 80, request))),
            ethernet(ipv4(17, udp(40001, 53, dns_query(DNS_LABELS)))),
        ]
    )


@pytest.fixture(scope="module")
def capture_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "hostile.pcap"
    path.write_bytes(hostile_capture())
    return path


@pytest.fixture(scope="module")
def hostile(api: httpx.Client, capture_file: Path) -> dict[str, Any]:
    """Return the API's answer for the hand-written capture, uploaded under a hostile name."""
    answer = upload(api, capture_file, name=FILE_NAME)
    assert answer.status_code == 201, answer.text
    return answer.json()["captures"][0]


# ---- the browser ------------------------------------------------------------------------------


class Watch:
    """What a page did that it should not: console errors, uncaught errors, dialogs."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on(
            "console", lambda message: self.errors.append(message.text) if message.type == "error" else None
        )
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("dialog", self.on_dialog)

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = server.new_context(browser, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(ENGINE_MS)
    page = context.new_page()
    watch = Watch(page)
    yield page
    context.close()
    assert watch.dialogs == []
    assert watch.errors == []


def assert_inert(page: Page) -> None:
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.evaluate(INJECTED_COUNT) == 0


def open_capture(page: Page, ident: int, query: str = "") -> None:
    page.goto(f"/captures/{ident}/{query}")
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    expect(page.locator("#status-displayed")).to_have_attribute("data-value", re.compile(r"^\d+$"))


def select_and_expand(page: Page, number: int) -> None:
    """Select a packet in the list, open every subtree of its details and point at each field."""
    page.locator(f"#packet-list .packet-row[data-number='{number}']").click()
    expect(page.locator("#detail-tree")).to_have_attribute("data-packet", str(number))
    expect(page.locator("#packet-tree .tree-label").first).to_have_text(re.compile(rf"^Frame {number}:"))
    page.evaluate(
        "() => document.querySelectorAll('#packet-tree details').forEach((d) => { d.open = true; })"
    )
    for label in page.locator("#packet-tree .tree-label").all():
        if "<" in (label.text_content() or ""):
            label.hover()
            label.click()


# ---- tests --------------------------------------------------------------------------------------


def test_tshark_reads_the_hand_written_capture_as_intended(capture_file: Path) -> None:
    rows = tshark_rows(capture_file)
    assert [row[4] for row in rows] == ["HTTP", "DNS"]
    assert rows[0][6].startswith(f"GET {URI} HTTP/1.1")
    assert rows[1][6] == f"Standard query 0x1234 A {DNS_NAME}"


def test_packet_text_is_shown_as_text_in_the_list_the_tree_and_the_bytes(
    page: Page, hostile: dict[str, Any], capture_file: Path
) -> None:
    open_capture(page, hostile["id"])
    expected = tshark_rows(capture_file)
    info = page.locator("#packet-list .packet-row .c-info")
    expect(info).to_have_text([row[6] for row in expected])
    assert "<script>window.__xss=1</script>" in (info.first.text_content() or "")
    assert_inert(page)

    select_and_expand(page, 1)
    tree = page.locator("#packet-tree")
    expect(tree).to_contain_text(f"Host: {HOST}\\r\\n")
    expect(tree).to_contain_text(f"User-Agent: {USER_AGENT}\\r\\n")
    expect(tree).to_contain_text(f"GET {URI} HTTP/1.1\\r\\n")
    ascii_text = "".join(page.locator(".hex-dump.active .ascii-byte").all_text_contents())
    assert f"GET {URI} HTTP/1.1" in ascii_text
    assert_inert(page)

    select_and_expand(page, 2)
    expect(page.locator("#packet-tree")).to_contain_text(f"Name: {DNS_NAME}")
    assert_inert(page)


def test_a_filter_built_from_a_hostile_field_stays_text(page: Page, hostile: dict[str, Any]) -> None:
    open_capture(page, hostile["id"], "?packet=1")
    expect(page.locator("#detail-tree")).to_have_attribute("data-packet", "1")
    page.evaluate(
        "() => document.querySelectorAll('#packet-tree details').forEach((d) => { d.open = true; })"
    )
    host = page.locator("#packet-tree .tree-node[data-filter^='http.host']")
    assert host.get_attribute("data-filter") == f'http.host == "{HOST}"'
    host.locator(".tree-label").click(button="right")
    page.locator("#field-menu button[data-action='apply']").click()
    expect(page.locator("#filter")).to_have_value(f'http.host == "{HOST}"')
    expect(page.locator("#status-displayed")).to_have_attribute("data-value", "1")
    assert_inert(page)

    # The filter comes back from the URL into the page's HTML, and from storage into the history.
    page.reload()
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    expect(page.locator("#filter")).to_have_value(f'http.host == "{HOST}"')
    expect(page.locator("#status-displayed")).to_have_attribute("data-value", "1")
    page.locator("#filter-history-button").click()
    expect(page.locator("#filter-history")).to_contain_text(HOST)
    assert_inert(page)


def test_a_hostile_file_name_is_shown_as_text_from_upload_to_delete(page: Page, capture_file: Path) -> None:
    page.goto("/")
    page.set_input_files(
        "#upload-input",
        files=[
            {"name": FILE_NAME, "mimeType": "application/octet-stream", "buffer": capture_file.read_bytes()}
        ],
    )
    item = page.locator("#upload-list li.upload-item")
    expect(item).to_have_attribute("data-state", "done")
    expect(item.locator(".upload-name")).to_have_text(FILE_NAME)
    href = item.locator("a.upload-link").get_attribute("href") or ""
    match = re.fullmatch(r"/captures/(\d+)/", href)
    assert match, href
    ident = int(match.group(1))
    row = page.locator(f"tr.capture-row[data-capture-id='{ident}']")
    expect(row.locator("td.capture-name a")).to_have_text(FILE_NAME)
    assert_inert(page)

    item.locator("a.upload-link").click()
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    expect(page.locator("#capture-name")).to_have_text(FILE_NAME)
    assert page.title() == f"{FILE_NAME} · Capture Explorer"
    assert_inert(page)

    page.locator("#properties-link").click()
    expect(page.locator("body")).to_contain_text(FILE_NAME)
    assert_inert(page)

    page.goto(f"/captures/{ident}/delete/")
    expect(page.locator("h1")).to_have_text(f"Delete {FILE_NAME}?")
    page.locator("#delete-submit").click()
    expect(page.locator("#messages")).to_contain_text(f"Deleted {FILE_NAME}.")
    assert_inert(page)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/captures/{id}/",
        "/captures/{id}/?packet=1",
        "/captures/{id}/?packet=2",
        "/captures/{id}/properties/",
        "/captures/{id}/delete/",
    ],
)
def test_pages_escape_names_and_packet_text(api: httpx.Client, hostile: dict[str, Any], path: str) -> None:
    response = api.get(path.format(id=hostile["id"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    for raw in (RAW_IMG, "<script>window.__xss", "<svg onload", "<svg/onload", "<b onmouseover"):
        assert raw not in html
    assert "&lt;img src=x onerror=window.__xss=4&gt;.pcap" in html
    if "packet=1" in path:
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    if "packet=2" in path:
        assert "&lt;svg/onload=window.__xss=3&gt;.example.com" in html


@pytest.mark.parametrize("number", [1, 2])
def test_the_detail_fragment_escapes_packet_text(
    api: httpx.Client, hostile: dict[str, Any], number: int
) -> None:
    response = api.get(f"/captures/{hostile['id']}/packets/{number}/detail/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="packet-tree"' in response.text
    for raw in (RAW_IMG, "<script>window.__xss", "<svg onload", "<svg/onload", "<b onmouseover"):
        assert raw not in response.text
    assert "&lt;" in response.text


def test_the_api_gives_the_text_as_json_data(api: httpx.Client, hostile: dict[str, Any]) -> None:
    # JSON is not an HTML context: the text comes back exactly, served so that no browser renders it.
    for path in (
        f"/api/captures/{hostile['id']}/",
        "/api/captures/",
        f"/api/captures/{hostile['id']}/packets",
    ):
        response = api.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["x-content-type-options"] == "nosniff"
    assert api.get(f"/api/captures/{hostile['id']}/").json()["name"] == FILE_NAME
    packets = api.get(f"/api/captures/{hostile['id']}/packets").json()["packets"]
    assert packets[0]["info"].startswith(f"GET {URI} HTTP/1.1")
    assert packets[1]["info"].endswith(DNS_NAME)
