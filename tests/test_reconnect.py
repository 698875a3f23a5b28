"""A dropped websocket: the page opens it again and catches up, losing and doubling nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from .conftest import ARTIFACTS, Server, sample_capture, tshark_rows, upload

pytestmark = pytest.mark.browser

CAPTURE = "http_google.pcapng"


@pytest.fixture(scope="module")
def capture_id(api: httpx.Client) -> int:
    answer = upload(api, sample_capture(CAPTURE))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = server.new_context(browser, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def test_the_load_socket_is_opened_again_when_it_drops(page: Page, capture_id: int) -> None:
    attempts: list[WebSocketRoute] = []

    def hold_the_first(ws: WebSocketRoute) -> None:
        attempts.append(ws)
        if len(attempts) > 1:
            ws.connect_to_server()

    page.route_web_socket(re.compile(rf"/ws/captures/{capture_id}/$"), hold_the_first)
    page.goto(f"/captures/{capture_id}/")
    for _ in range(100):
        if attempts:
            break
        page.wait_for_timeout(50)
    attempts[0].close()  # dropped before the server said anything
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    assert len(attempts) >= 2
    rows = page.locator("#packet-list .packet-row:not([hidden])[data-number]")
    expect(rows).to_have_count(len(tshark_rows(sample_capture(CAPTURE))))


def test_the_live_socket_catches_up_after_a_drop(page: Page, api: httpx.Client, capture_id: int) -> None:
    sockets: list[WebSocketRoute] = []

    def through(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.connect_to_server()

    page.route_web_socket(re.compile(rf"/ws/captures/{capture_id}/live/$"), through)
    page.goto(f"/captures/{capture_id}/")
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    if page.locator("#annotations-panel").is_hidden():
        page.locator("#annotations-toggle").click()
    expect(page.locator("#annotations-panel")).to_be_visible()
    assert len(sockets) == 1

    # The connection drops; while it is down, someone annotates packet 2 and marks packet 3.
    sockets[0].close()
    note = api.post(
        f"/api/captures/{capture_id}/annotations", json={"frame": 2, "text": "while you were away"}
    )
    assert note.status_code in (200, 201), note.text
    assert api.put(f"/api/captures/{capture_id}/marks/3").status_code == 204

    # Back within a few seconds: caught up, each change shown once.
    missed = page.locator("#annotation-list .annotation[data-frame='2']", has_text="while you were away")
    expect(missed).to_have_count(1, timeout=10_000)
    expect(page.locator("#packet-list .packet-row[data-number='3']")).to_have_class(re.compile(r"\bmarked\b"))
    assert len(sockets) == 2

    # And live again: a change made now arrives by itself, once.
    later = api.post(f"/api/captures/{capture_id}/annotations", json={"frame": 4, "text": "and now"})
    assert later.status_code in (200, 201), later.text
    expect(page.locator("#annotation-list .annotation", has_text="and now")).to_have_count(1, timeout=2_000)
    expect(missed).to_have_count(1)
    page.screenshot(path=ARTIFACTS / "reconnected.png")
