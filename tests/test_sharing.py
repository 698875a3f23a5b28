"""Share links reproduce a view for another user and for an anonymous holder, read-only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from .conftest import ARTIFACTS, Server, sample_capture, tshark_numbers, upload

pytestmark = pytest.mark.browser

ESPN = "http_espn.pcapng"
OTHER = "alice"
ENGINE_MS = 15_000
expect.set_options(timeout=ENGINE_MS)


@pytest.fixture(scope="module")
def espn(api: httpx.Client, server: Server) -> int:
    answer = upload(api, sample_capture(ESPN))
    assert answer.status_code == 201, answer.text
    server.create_user(OTHER)
    return int(answer.json()["id"])


@pytest.fixture
def contexts(browser: Browser, server: Server) -> Iterator[dict[str, BrowserContext]]:
    """The owner's, another user's and an anonymous browser, each a separate context."""
    options = {"viewport": {"width": 1400, "height": 900}}
    made = {
        "owner": server.new_context(browser, **options),
        "other": server.new_context(browser, OTHER, **options),
        "anonymous": server.new_context(browser, None, **options),
    }
    for context in made.values():
        context.set_default_timeout(ENGINE_MS)
    yield made
    for context in made.values():
        context.close()


def open_ready(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")


def copy_link(page: Page) -> str:
    page.locator("#copy-link").click()
    expect(page.locator("#share-popover")).to_be_visible()
    expect(page.locator("#share-url")).to_have_value(re.compile(r"/s/[A-Za-z0-9_-]{40,}/$"))
    return page.locator("#share-url").input_value()


def show_annotations(page: Page) -> None:
    if page.locator("#annotations-panel").is_hidden():
        page.locator("#annotations-toggle").click()
    expect(page.locator("#annotations-panel")).to_be_visible()


def set_visibility(page: Page, capture_id: int, visibility: str) -> None:
    page.goto(f"/captures/{capture_id}/sharing/")
    page.locator(f"#visibility-{visibility}").check()
    page.locator("#visibility-save").click()
    expect(page.locator(f"#visibility-{visibility}")).to_be_checked()


def test_a_link_reproduces_the_view_for_another_user_and_an_anonymous_holder(
    contexts: dict[str, BrowserContext], espn: int
) -> None:
    requests = tshark_numbers(sample_capture(ESPN), "http.request")
    packet = requests[2]
    owner = contexts["owner"].new_page()
    set_visibility(owner, espn, "link")

    # The owner filters, selects a packet and a field in its tree, then copies a link.
    open_ready(owner, f"/captures/{espn}/?filter=http.request&packet={packet}")
    owner.locator("#packet-tree summary.tree-node[data-filter='ip'] .tree-toggle").click()
    owner.locator("#packet-tree .tree-node[data-filter^='ip.dst ==']").click()
    expect(owner).to_have_url(re.compile(r"field=ip\.dst"))
    link = copy_link(owner)
    owner.screenshot(path=ARTIFACTS / "share-link.png")

    for role in ("other", "anonymous"):
        viewer = contexts[role].new_page()
        viewer.goto(link)
        expect(viewer.locator("#status-load")).to_have_attribute("data-state", "ready")
        query = parse_qs(urlsplit(viewer.url).query)
        assert query["filter"] == ["http.request"] and query["packet"] == [str(packet)], role
        expect(viewer.locator("#filter")).to_have_value("http.request")
        expect(viewer.locator("#status-displayed")).to_have_attribute("data-value", str(len(requests)))
        expect(viewer.locator("#packet-list .packet-row.selected")).to_have_attribute(
            "data-number", str(packet)
        )
        selected = viewer.locator("#packet-tree .tree-node.selected")
        expect(selected).to_have_attribute("data-filter", re.compile(r"^ip\.dst == "))
        expect(selected).to_be_visible()
        # Read-only: the link holder cannot change the capture.
        expect(viewer.locator("#copy-link")).to_have_count(1 if role == "other" else 0)
        if role == "anonymous":
            expect(viewer.locator("#read-only-badge")).to_be_visible()
            viewer.screenshot(path=ARTIFACTS / "share-link-anonymous.png")
        answer = viewer.request.put(f"/api/captures/{espn}/marks/1")
        assert answer.status == 403, (role, answer.status)

        # The owner annotates the shared packet; the holder sees it appear without reloading.
        text = f"Look here, {role}: this request waits 200 ms"
        show_annotations(owner)
        show_annotations(viewer)
        expect(owner.locator("#annotation-packet-label")).to_have_text(f"Packet {packet}")
        owner.locator("#annotation-text").fill(text)
        owner.locator("#annotation-add").click()
        pushed = viewer.locator(f"#annotation-list .annotation[data-frame='{packet}']", has_text=text)
        expect(pushed).to_have_count(1, timeout=2_000)
        expect(pushed.locator(".annotation-author")).to_have_text("owner")
        expect(pushed.locator(".annotation-edit")).to_have_count(0)


def test_a_link_to_a_follow_view_opens_that_stream(contexts: dict[str, BrowserContext], espn: int) -> None:
    owner = contexts["owner"].new_page()
    set_visibility(owner, espn, "link")
    owner.goto(f"/captures/{espn}/follow/?kind=TCP&stream=1&view=hex")
    expect(owner.locator("#follow-peers")).to_be_visible()
    link = copy_link(owner)
    viewer = contexts["anonymous"].new_page()
    viewer.goto(link)
    expect(viewer).to_have_url(re.compile(r"/follow/\?kind=TCP&stream=1&view=hex$"))
    expect(viewer.locator("#follow-peers")).to_be_visible()


def test_revoked_and_private_links_stop_working(
    contexts: dict[str, BrowserContext], espn: int, server: Server
) -> None:
    owner = contexts["owner"].new_page()
    set_visibility(owner, espn, "link")
    open_ready(owner, f"/captures/{espn}/")
    link = copy_link(owner)
    viewer = contexts["anonymous"].new_page()
    viewer.goto(link)
    expect(viewer.locator("#status-load")).to_have_attribute("data-state", "ready")

    # Private again: the link no longer lets an anonymous holder in.
    set_visibility(owner, espn, "private")
    viewer.goto(f"/captures/{espn}/")
    expect(viewer).to_have_url(re.compile(r"/accounts/login/"))
    set_visibility(owner, espn, "link")

    # Revoked: the link answers 410 and its view is closed.
    owner.goto(f"/captures/{espn}/sharing/")
    key = urlsplit(link).path.split("/")[2]
    row = owner.locator(".link-row", has=owner.locator(f"input[value$='/s/{key}/']"))
    row.locator(".revoke-link").click()
    expect(owner.locator(f".link-row input[value$='/s/{key}/']")).to_have_count(0)
    assert viewer.goto(link).status == 410  # type: ignore[union-attr]
    expect(viewer.locator("#link-closed")).to_contain_text("revoked")
    viewer.goto(f"/captures/{espn}/")
    expect(viewer).to_have_url(re.compile(r"/accounts/login/"))
