"""The live capture pages in a real Chromium: start on loopback, watch rows arrive, filter, pause, stop."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import ARTIFACTS, Server
from .test_live_capture import web_server  # noqa: F401 - the fixture

pytestmark = [pytest.mark.browser, pytest.mark.engine]

WATCHER = "livewatcher"
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def page(browser: Browser, server: Server) -> Iterator[Page]:
    server.create_user(WATCHER, staff=True)
    context = server.new_context(browser, WATCHER, viewport={"width": 1400, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    yield page
    context.close()
    assert errors == [], "the page logged errors"


def requests_in_background(port: int, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        index = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as web:
            while not stop.is_set():
                web.get(f"/page{index % 50}.txt")
                index += 1
                time.sleep(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_it_shows_rows_arriving_and_stores_the_capture(page: Page, web_server: int) -> None:  # noqa: F811
    page.goto("/live/")
    page.select_option("#live-interface", "lo")
    page.fill("#live-filter", f"tcp port {web_server}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-start.png"))
    page.click("#live-start")
    expect(page).to_have_url(re.compile(r"/live/\d+/$"))
    stop = threading.Event()
    traffic = requests_in_background(web_server, stop)
    try:
        rows = page.locator("#live-rows tr")
        expect(rows.nth(20)).to_be_attached()
        expect(page.locator("#live-status")).to_contain_text("packets/s")
        first_count = rows.count()
        expect(rows.nth(first_count + 10)).to_be_attached()  # more keep coming

        page.click("#live-follow")
        expect(page.locator("#live-follow")).to_have_text("Resume")
        expect(page.locator("#live-status")).to_contain_text("paused")
        page.click("#live-follow")
        expect(page.locator("#live-follow")).to_have_text("Pause")

        page.fill("#live-display-filter", "http.request")
        page.click("#live-filter-apply")
        expect(rows.nth(3)).to_be_attached()
        infos = page.locator("#live-rows tr td.c-info").all_text_contents()
        assert infos and all(re.match(r"GET /page\d+\.txt HTTP/1\.1", info) for info in infos), infos
        protocols = set(page.locator("#live-rows tr td.c-protocol").all_text_contents())
        assert protocols == {"HTTP"}
        # Wireshark's colouring rule for HTTP (light green) shows on the rows.
        assert page.locator("#live-rows tr").first.evaluate("row => row.style.backgroundColor") != ""

        page.fill("#live-display-filter", "tcp.port ==")
        page.click("#live-filter-apply")
        expect(page.locator("#live-filter-error")).to_be_visible()
        page.fill("#live-display-filter", "http.request")
        page.click("#live-filter-apply")
        expect(rows.nth(3)).to_be_attached()
        page.screenshot(path=str(ARTIFACTS / "live-capture.png"))

        # A clicked row shows its packet's tree and bytes while the capture goes on.
        row = rows.nth(2)
        number = row.get_attribute("data-number")
        page.click("#live-follow")  # paused, so that the clicked row stays in view
        row.click()
        expect(row).to_have_class(re.compile(r"\bselected\b"))
        tree = page.locator("#packet-tree")
        expect(tree).to_have_attribute("aria-label", f"Packet {number}")
        expect(page.locator("#packet-tree .tree-label").first).to_contain_text(f"Frame {number}:")
        expect(tree).to_contain_text("Hypertext Transfer Protocol")
        expect(page.locator("#detail-bytes .hex-line").first).to_contain_text("0000")
        # The tree and the bytes are linked as in the stored view: a field highlights its bytes.
        page.locator("#packet-tree .tree-node", has_text="Hypertext Transfer Protocol").first.click()
        expect(page.locator("#detail-bytes .hex-byte.highlight").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "live-details.png"))
        page.click("#live-follow")
    finally:
        stop.set()
        traffic.join(10)
    page.click("#live-stop")
    link = page.locator("#live-capture-link")
    expect(link).to_be_visible(timeout=30_000)
    expect(page.locator("#live-ended-text")).to_contain_text("Stored")
    link.click()
    expect(page).to_have_url(re.compile(r"/captures/\d+/$"))
    expect(page.locator("#packet-rows .packet-row").first).to_be_visible()
