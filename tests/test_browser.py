"""The pages in a real Chromium: uploads, the packet list, filters, details and bytes, against tshark."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import APIResponse, Browser, ConsoleMessage, Page, Route, expect

from .conftest import ARTIFACTS, Server, sample_capture, tshark, tshark_numbers, tshark_rows, upload

pytestmark = pytest.mark.browser

# Engine work (loading, filtering, dissecting) gets this long before a wait gives up.
ENGINE_MS = 15_000
ESPN = "http_espn.pcapng"
expect.set_options(timeout=ENGINE_MS)


class ConsoleLog:
    """Errors a page reported on the console or threw; some may be expected by a test."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected: list[str] = []

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def expect(self, text: str) -> None:
        self.expected.append(text)

    def unexpected(self) -> list[str]:
        return [error for error in self.errors if not any(text in error for text in self.expected)]


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(browser: Browser, server: Server, console: ConsoleLog) -> Iterator[Page]:
    """A page in a fresh context (no remembered subtrees or filters) that must log no errors."""
    context = server.new_context(browser, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(ENGINE_MS)
    page = context.new_page()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    yield page
    context.close()
    assert console.unexpected() == [], "the page logged errors"


@pytest.fixture(scope="module")
def espn(api: httpx.Client) -> int:
    """Return the id of http_espn.pcapng, uploaded through the API."""
    answer = upload(api, sample_capture(ESPN))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def open_capture(page: Page, ident: int, query: str = "") -> None:
    """Open a capture page and wait until the engine has loaded it and the list is final."""
    page.goto(f"/captures/{ident}/{query}")
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    expect(page.locator("#packet-list")).not_to_have_class(re.compile(r"\bprovisional\b"))
    expect(page.locator("#status-displayed")).to_have_attribute("data-value", re.compile(r"^\d+$"))


def shown_rows(page: Page) -> list[list[str]]:
    """Return the cells of the rows the list shows, top to bottom, as text."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#packet-list .packet-row:not([hidden])'))
                .filter((row) => row.dataset.number)
                .map((row) => Array.from(row.querySelectorAll('.cell'), (cell) => cell.textContent))"""
    )


def selected_number(page: Page) -> str | None:
    return page.locator("#packet-list .packet-row.selected").get_attribute("data-number")


def expect_selected(page: Page, number: int) -> None:
    expect(page.locator("#packet-list .packet-row.selected")).to_have_attribute("data-number", str(number))
    expect(page.locator("#detail-tree")).to_have_attribute("data-packet", str(number))
    expect(page.locator("#packet-tree .tree-node .tree-label").first).to_have_text(
        re.compile(rf"^Frame {number}:")
    )


def pdml_field(path: Path, number: int, name: str) -> dict[str, Any]:
    """Return the attributes of the first field called name in tshark's PDML for one frame."""
    out = tshark("-2", "-r", str(path), "-Y", f"frame.number == {number}", "-T", "pdml")
    field = ET.fromstring(out).find(f".//field[@name='{name}']")
    assert field is not None, f"no {name} in frame {number}"
    return dict(field.attrib)


def highlighted_offsets(page: Page) -> list[int]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.hex-dump.active .hex-byte.highlight'),
                            (byte) => Number(byte.dataset.offset))"""
    )


def test_it_uploads_files_from_the_page_and_shows_the_capture_as_tshark_does(
    page: Page, console: ConsoleLog
) -> None:
    # The non-capture is refused by the API with a 400, which Chromium reports on the console.
    console.expect("status of 400")
    path = sample_capture(ESPN)
    page.goto("/")
    page.set_input_files("#upload-input", [str(path), str(sample_capture("MANIFEST.tsv"))])

    stored = page.locator("#upload-list li.upload-item", has=page.locator(".upload-name", has_text=ESPN))
    refused = page.locator(
        "#upload-list li.upload-item", has=page.locator(".upload-name", has_text="MANIFEST")
    )
    expect(stored).to_have_attribute("data-state", "done", timeout=30_000)
    expect(refused).to_have_attribute("data-state", "error", timeout=30_000)
    expect(refused.locator(".upload-status")).to_contain_text("not a capture file")
    link = stored.locator("a.upload-link")
    expect(link).to_be_visible()
    href = link.get_attribute("href") or ""
    match = re.fullmatch(r"/captures/(\d+)/", href)
    assert match, href
    ident = int(match.group(1))

    # The table fetches itself again after an upload; the new capture is in it.
    row = page.locator(f"#capture-table tr.capture-row[data-capture-id='{ident}']")
    expect(row.locator("td.capture-name a")).to_have_text(ESPN)
    page.screenshot(path=artifact("capture-list.png"), full_page=True)

    link.click()
    page.wait_for_url(f"**/captures/{ident}/")
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    expected = tshark_rows(path)
    expect(page.locator("#status-packets")).to_have_attribute("data-value", str(len(expected)))
    expect(page.locator("#status-packets")).to_have_text(f"Packets: {len(expected)}")
    expect(page.locator("#status-displayed")).to_have_text(f"Displayed: {len(expected)} (100.0%)")
    rows = shown_rows(page)
    assert len(rows) >= 10
    assert rows == expected[: len(rows)]


def test_it_checks_filters_while_typing_and_applies_them_as_tshark_does(page: Page, espn: int) -> None:
    path = sample_capture(ESPN)
    open_capture(page, espn)
    box = page.locator("#filter")
    error = page.locator("#filter-error")
    expect(error).to_be_hidden()

    box.fill("tcp.port ==")
    expect(box).to_have_class(re.compile(r"\bfilter-invalid\b"))
    expect(error).to_be_visible()
    expect(error).to_have_text("Unexpected end of filter expression.")
    page.screenshot(path=artifact("filter-error.png"))

    box.fill("http.request")
    expect(box).to_have_class(re.compile(r"\bfilter-valid\b"))
    expect(error).to_be_hidden()
    box.press("Enter")
    expected = tshark_numbers(path, "http.request")
    assert expected
    displayed = page.locator("#status-displayed")
    expect(displayed).to_have_attribute("data-value", str(len(expected)))
    expect(displayed).to_have_text(re.compile(rf"^Displayed: {len(expected)} \(\d+\.\d%\)$"))
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    page.wait_for_url(re.compile(r"[?&]filter=http\.request(&|$)"))
    numbers = [int(row[0]) for row in shown_rows(page)]
    assert numbers and numbers == expected[: len(numbers)]


def test_it_links_the_list_the_tree_and_the_bytes(page: Page, espn: int) -> None:
    path = sample_capture(ESPN)
    number = tshark_numbers(path, "http.request")[0]
    open_capture(page, espn)
    page.locator(f"#packet-list .packet-row[data-number='{number}']").click()
    expect_selected(page, number)
    frame_line = tshark("-2", "-r", str(path), "-Y", f"frame.number == {number}", "-V").splitlines()[0]
    expect(page.locator("#packet-tree .tree-node .tree-label").first).to_have_text(frame_line)

    # A field selected in the tree highlights exactly its bytes, where tshark says they are.
    page.locator("#packet-tree summary.tree-node[data-filter='ip'] .tree-toggle").click()
    source = page.locator("#packet-tree .tree-node[data-filter^='ip.src ==']")
    expect(source).to_be_visible()
    source.locator(".tree-label").click()
    expect(source).to_have_class(re.compile(r"\bselected\b"))
    field = pdml_field(path, number, "ip.src")
    start, length = int(field["pos"]), int(field["size"])
    assert (source.get_attribute("data-start"), source.get_attribute("data-length")) == (
        str(start),
        str(length),
    )
    expect(page.locator(".hex-dump.active .hex-byte.highlight")).to_have_count(length)
    assert highlighted_offsets(page) == list(range(start, start + length))
    expect(page.locator(".hex-dump.active .ascii-byte.highlight")).to_have_count(length)
    page.screenshot(path=artifact("main-view.png"))

    # A byte clicked in the dump selects the field covering it, opening its collapsed subtree.
    port = pdml_field(path, number, "tcp.dstport")
    page.locator(f".hex-dump.active .hex-byte[data-offset='{port['pos']}']").click()
    chosen = page.locator("#packet-tree .tree-node.selected")
    expect(chosen).to_have_attribute("data-filter", re.compile(r"^tcp\.dstport == "))
    expect(chosen).to_be_visible()
    assert chosen.get_attribute("data-start") == port["pos"]
    assert highlighted_offsets(page) == list(range(int(port["pos"]), int(port["pos"]) + int(port["size"])))

    # The keyboard moves through the list as in Wireshark.
    total = len(tshark_rows(path))
    page.locator("#packet-list").focus()
    page.keyboard.press("ArrowDown")
    expect_selected(page, number + 1)
    page.keyboard.press("ArrowUp")
    expect_selected(page, number)
    page.keyboard.press("End")
    expect_selected(page, total)
    page.keyboard.press("Home")
    expect_selected(page, 1)
    expect(page.locator("#status-selected")).to_have_text("· Selected: 1")


def test_it_applies_a_tree_field_as_a_filter_from_its_menu(page: Page, espn: int) -> None:
    path = sample_capture(ESPN)
    open_capture(page, espn, "?packet=1")
    expect_selected(page, 1)
    page.locator("#packet-tree summary.tree-node[data-filter='ip'] .tree-toggle").click()
    destination = page.locator("#packet-tree .tree-node[data-filter^='ip.dst ==']")
    destination.locator(".tree-label").click(button="right")
    expect(page.locator("#field-menu")).to_be_visible()
    page.locator("#field-menu button[data-action='apply']").click()
    text = destination.get_attribute("data-filter") or ""
    expect(page.locator("#filter")).to_have_value(text)
    expected = tshark_numbers(path, text)
    expect(page.locator("#status-displayed")).to_have_attribute("data-value", str(len(expected)))
    numbers = [int(row[0]) for row in shown_rows(page)]
    assert numbers and numbers == expected[: len(numbers)]
    # Packet 1 still shows under the new filter, so it stays selected.
    expect_selected(page, 1)


def test_a_link_with_a_filter_and_a_packet_restores_both(page: Page, espn: int) -> None:
    path = sample_capture(ESPN)
    expected = tshark_numbers(path, "http.request")
    number = expected[len(expected) // 2]
    open_capture(page, espn, f"?filter=http.request&packet={number}")
    expect(page.locator("#filter")).to_have_value("http.request")
    expect(page.locator("#filter")).to_have_class(re.compile(r"\bfilter-valid\b"))
    expect(page.locator("#status-displayed")).to_have_attribute("data-value", str(len(expected)))
    expect_selected(page, number)
    numbers = [int(row[0]) for row in shown_rows(page)]
    assert number in numbers
    assert numbers == [n for n in expected if numbers[0] <= n <= numbers[-1]]

    # And a reload of the URL the page keeps gives the same view.
    page.reload()
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    expect(page.locator("#filter")).to_have_value("http.request")
    expect_selected(page, number)


@pytest.mark.parametrize(("time_format", "tshark_format"), [("utc", "ud"), ("epoch", "e"), ("delta", "d")])
def test_the_time_format_menu_shows_tshark_times(
    page: Page, espn: int, time_format: str, tshark_format: str
) -> None:
    path = sample_capture(ESPN)
    expected = tshark_rows(path, "", "-t", tshark_format)
    relative = tshark_rows(path)
    # Wait on the first row whose time the new format writes differently.
    index = next(i for i, (new, old) in enumerate(zip(expected, relative, strict=True)) if new[1] != old[1])
    open_capture(page, espn)
    time_cell = page.locator(f"#packet-list .packet-row[data-index='{index}'] .c-time")
    expect(time_cell).to_have_text(relative[index][1])
    page.select_option("#time-format", time_format)
    expect(time_cell).to_have_text(expected[index][1])
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    rows = shown_rows(page)
    assert len(rows) >= 10
    assert rows == expected[: len(rows)]
    page.wait_for_url(re.compile(rf"[?&]time={time_format}(&|$)"))


def test_a_truncated_capture_shows_its_warning(page: Page, api: httpx.Client) -> None:
    path = sample_capture("truncated_dns_2.pcap")
    answer = upload(api, path)
    assert answer.status_code == 201, answer.text
    capture = answer.json()["captures"][0]
    assert "truncated" in capture["warning"]

    page.goto("/")
    row = page.locator(f"tr.capture-row[data-capture-id='{capture['id']}']")
    expect(row.locator(".badge.badge-warning")).to_contain_text("truncated")

    open_capture(page, capture["id"])
    expect(page.locator("#status-warning")).to_contain_text("truncated")
    rows = shown_rows(page)
    assert rows == tshark_rows(path)


def test_it_deletes_a_capture_from_the_list(page: Page, api: httpx.Client) -> None:
    answer = upload(api, sample_capture("tcp_handshake.pcapng"))
    ident = answer.json()["id"]
    page.goto("/")
    page.locator(f"tr.capture-row[data-capture-id='{ident}'] a.delete-link").click()
    expect(page.locator("#delete-form")).to_be_visible()
    page.locator("#delete-submit").click()
    page.wait_for_url(re.compile(r"/$"))
    expect(page.locator("#messages")).to_contain_text("Deleted tcp_handshake.pcapng")
    expect(page.locator(f"tr.capture-row[data-capture-id='{ident}']")).to_have_count(0)
    assert api.get(f"/api/captures/{ident}/").status_code == 404


def test_the_list_shows_a_capture_stored_while_it_was_refreshing(page: Page, api: httpx.Client) -> None:
    # Hold the answer to the first refresh of the table, ask for a second refresh meanwhile,
    # then let the first answer (read before the upload) through: the second must still come.
    held: list[tuple[Route, APIResponse]] = []

    def hold_the_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))

    page.goto("/")
    page.route(re.compile(r"/\?sort="), hold_the_first)
    refresh = "() => window.htmx.trigger(document.body, 'captures-changed')"
    page.evaluate(refresh)
    deadline = time.monotonic() + ENGINE_MS / 1000
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert held, "the table did not ask for a refresh"
    answer = upload(api, sample_capture("tcp_teardown.pcapng"))
    assert answer.status_code == 201, answer.text
    page.evaluate(refresh)
    route, response = held[0]
    route.fulfill(response=response)
    row = page.locator(f"#capture-table tr.capture-row[data-capture-id='{answer.json()['id']}']")
    expect(row.locator("td.capture-name a")).to_have_text("tcp_teardown.pcapng")
