"""Marked packets: kept with the capture, shown in the list, and exported as "marked packets only"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import ARTIFACTS, Server, sample_capture, tshark, tshark_numbers, upload

CAPTURE = "http_espn.pcapng"


@pytest.fixture(scope="module")
def espn(api: httpx.Client) -> int:
    answer = upload(api, sample_capture(CAPTURE))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def marked(api: httpx.Client, capture_id: int) -> list[int]:
    response = api.get(f"/api/captures/{capture_id}/marks")
    assert response.status_code == 200, response.text
    return list(response.json()["frames"])


def exported_numbers(api: httpx.Client, capture_id: int, tmp_path: Path, **params: str) -> list[str]:
    """Return (epoch time, length) lines of the frames an export wrote, as tshark reads them."""
    response = api.get(f"/api/captures/{capture_id}/export", params=params)
    assert response.status_code == 200, response.text
    path = tmp_path / "marked.pcapng"
    path.write_bytes(response.content)
    return tshark("-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len").splitlines()


def frames_of(numbers: list[int]) -> list[str]:
    selection = " || ".join(f"frame.number == {n}" for n in numbers)
    return tshark(
        "-r",
        str(sample_capture(CAPTURE)),
        "-Y",
        selection,
        "-T",
        "fields",
        "-e",
        "frame.time_epoch",
        "-e",
        "frame.len",
    ).splitlines()


@pytest.mark.engine
def test_marks_are_kept_and_export_the_marked_displayed_frames(
    api: httpx.Client, espn: int, tmp_path: Path
) -> None:
    api.delete(f"/api/captures/{espn}/marks")
    requests = tshark_numbers(sample_capture(CAPTURE), "http.request")
    chosen = [1, requests[0], requests[3], 900]
    for number in reversed(chosen):
        assert api.put(f"/api/captures/{espn}/marks/{number}").status_code == 204
    assert api.put(f"/api/captures/{espn}/marks/{chosen[0]}").status_code == 204  # twice: still one mark
    assert marked(api, espn) == sorted(chosen)

    # Marked only: every marked frame; with a filter, the marked frames it displays.
    assert exported_numbers(api, espn, tmp_path, range="marked") == frames_of(sorted(chosen))
    shown = exported_numbers(api, espn, tmp_path, range="marked", filter="http.request")
    assert shown == frames_of([requests[0], requests[3]])

    assert api.delete(f"/api/captures/{espn}/marks/{requests[0]}").status_code == 204
    assert marked(api, espn) == sorted(n for n in chosen if n != requests[0])
    assert api.delete(f"/api/captures/{espn}/marks").status_code == 204
    assert marked(api, espn) == []
    # Nothing marked exports a valid file without packets.
    assert exported_numbers(api, espn, tmp_path, range="marked") == []


def test_marking_a_frame_the_capture_lacks_is_refused(api: httpx.Client, espn: int) -> None:
    for number in (0, 957, 10**12):
        response = api.put(f"/api/captures/{espn}/marks/{number}")
        assert response.status_code == 400, number
        assert "the capture has frames 1 to 956" in response.json()["error"]
    assert api.get("/api/captures/999999/marks").status_code == 404
    assert api.put("/api/captures/999999/marks/1").status_code == 404


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = server.new_context(browser, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], "the page logged errors"


def row(page: Page, number: int):  # type: ignore[no-untyped-def]
    return page.locator(f"#packet-list .packet-row[data-number='{number}']")


@pytest.mark.browser
def test_the_packet_menu_marks_packets_and_opens_the_views_of_a_packet(
    page: Page, api: httpx.Client, espn: int
) -> None:
    api.delete(f"/api/captures/{espn}/marks")
    request = tshark_numbers(sample_capture(CAPTURE), "http.request")[0]
    page.goto(f"/captures/{espn}/")
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready", timeout=15_000)
    expect(page.locator("#packet-list")).not_to_have_class(re.compile(r"\bprovisional\b"))

    # Right-click selects the packet and opens its menu; Mark Packet paints it as Wireshark does.
    row(page, 3).click(button="right")
    menu = page.locator("#packet-menu")
    expect(menu).to_be_visible()
    expect(row(page, 3)).to_have_class(re.compile(r"\bselected\b"))
    menu.get_by_role("menuitem", name="Mark Packet").click()
    expect(menu).to_be_hidden()
    expect(row(page, 3)).to_have_class(re.compile(r"\bmarked\b"))
    expect(page.locator("#status-marked")).to_have_text("· Marked: 1")
    assert marked(api, espn) == [3]

    # Ctrl+M marks the selected packet; Ctrl+Shift+B and N move between marked packets.
    row(page, request).click()
    page.keyboard.press("Control+m")
    expect(row(page, request)).to_have_class(re.compile(r"\bmarked\b"))
    expect(page.locator("#status-marked")).to_have_text("· Marked: 2")
    page.keyboard.press("Control+Shift+B")
    expect(page.locator("#detail-tree")).to_have_attribute("data-packet", "3")
    page.keyboard.press("Control+Shift+N")
    expect(page.locator("#detail-tree")).to_have_attribute("data-packet", str(request))

    # The menu lists the views that start from this packet, once its details are in.
    row(page, request).click(button="right")
    follow = menu.get_by_role("menuitem", name="Follow TCP Stream", exact=True)
    expect(follow).to_be_visible()
    expect(menu.get_by_role("menuitem", name="Unmark Packet")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "packet-menu.png")
    follow.click()
    expect(page).to_have_url(re.compile(r"/follow/\?kind=TCP&stream=\d+"))

    # The marks stay with the capture: another visit shows them, and the export page offers them.
    page.goto(f"/captures/{espn}/export/")
    expect(page.locator("#export-range-marked")).to_be_enabled()
    expect(page.locator("#export-marked-count")).to_contain_text("2 marked")

    # Exporting them runs in the background: the page shows its progress, then the file.
    page.locator("#export-range-marked").check()
    page.locator("#export-submit").click()
    link = page.locator("#export-download")
    expect(link).to_be_visible()
    page.screenshot(path=ARTIFACTS / "export-done.png")
    with page.expect_download() as download:
        link.click()
    exported = download.value.path()
    assert tshark_numbers(exported, "frame") == [1, 2]
    lengths = tshark("-r", str(exported), "-T", "fields", "-e", "frame.len").split()
    expected = tshark(
        "-r",
        str(sample_capture(CAPTURE)),
        "-Y",
        f"frame.number == 3 || frame.number == {request}",
        "-T",
        "fields",
        "-e",
        "frame.len",
    ).split()
    assert lengths == expected

    # A filter the engine refuses is said so, and nothing is queued.
    page.locator("#export-filter").fill("tcp.port ==")
    page.locator("#export-range-all").check()
    page.locator("#export-submit").click()
    expect(page.locator("#export-error")).to_have_text("Not exported: Unexpected end of filter expression.")
