"""Annotations: the file's own comments, people's comments by their authors, export and live updates."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from .conftest import ARTIFACTS, OWNER, Server, sample_capture, tshark, upload

SOURCE = "http_google.pcapng"  # 12 frames
TEAM = "notes-team"
TEAMMATE = "notes-teammate"
OUTSIDER = "notes-outsider"
MODERATOR = "notes-staff"
FILE_COMMENTS = {2: ["Handshake done\nthe request follows"], 5: ["First data from the server"]}
FILE_CAPTURE_COMMENT = "Captured on the office uplink"


@pytest.fixture(scope="module")
def commented_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pcapng with two packet comments and a file comment, written by editcap."""
    path = tmp_path_factory.mktemp("annotations") / "commented.pcapng"
    options = [f"-a{frame}:{text}" for frame, texts in FILE_COMMENTS.items() for text in texts]
    comment = ["--capture-comment", FILE_CAPTURE_COMMENT]
    command = ["editcap", *options, *comment, str(sample_capture(SOURCE)), str(path)]
    subprocess.run(command, check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def people(server: Server) -> dict[str, httpx.Client]:
    """API clients of a teammate of the owner's, someone outside the team, and a staff member."""
    server.create_user(TEAMMATE, teams=(TEAM,))
    server.create_user(OUTSIDER)
    server.create_user(MODERATOR, staff=True)
    return {name: server.client(name) for name in (TEAMMATE, OUTSIDER, MODERATOR)}


def team_capture(server: Server, api: httpx.Client, path: Path, name: str = "commented.pcapng") -> int:
    """Upload a file as the owner and let the team see it."""
    answer = upload(api, path, name)
    assert answer.status_code == 201, answer.text
    capture_id = int(answer.json()["id"])
    shared = server.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import Group\n"
        "from explorer.models import Capture\n"
        f"team = Group.objects.get_or_create(name={TEAM!r})[0]\n"
        f"Capture.objects.filter(pk={capture_id}).update(visibility='team', team=team)\n",
    )
    assert shared.returncode == 0, shared.stderr
    return capture_id


@pytest.fixture(scope="module")
def capture_id(
    server: Server, api: httpx.Client, commented_file: Path, people: dict[str, httpx.Client]
) -> int:
    return team_capture(server, api, commented_file)


def listed(client: httpx.Client, capture_id: int) -> list[dict[str, Any]]:
    answer = client.get(f"/api/captures/{capture_id}/annotations")
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def annotate(client: httpx.Client, capture_id: int, frame: int | None, text: str) -> dict[str, Any]:
    answer = client.post(f"/api/captures/{capture_id}/annotations", json={"frame": frame, "text": text})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def share_link(api: httpx.Client, capture_id: int) -> str:
    """Let link holders see the capture; return the key of a new share link."""
    made = api.post(f"/captures/{capture_id}/sharing/visibility/", data={"visibility": "link"})
    assert made.status_code == 302
    json_please = {"Accept": "application/json"}
    view = {"view": f"/captures/{capture_id}/"}
    link = api.post(f"/captures/{capture_id}/share/", data=view, headers=json_please)
    assert link.status_code == 201, link.text
    return str(link.json()["url"]).rstrip("/").rsplit("/", 1)[-1]


def tshark_comments(path: Path) -> dict[int, list[str]]:
    """Return tshark's packet comments by frame; it escapes newlines and tabs, which the tests avoid."""
    out = tshark(
        "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "frame.comment", "-E", "occurrence=a",
        "-E", "aggregator=\x1f",
    )  # fmt: skip
    found = {}
    for line in out.splitlines():
        number, _, texts = line.partition("\t")
        if texts:
            found[int(number)] = [text.replace("\\n", "\n") for text in texts.split("\x1f")]
    return found


def capinfos_comments(path: Path) -> list[str]:
    out = subprocess.run(["capinfos", "-k", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Capture comment:")]


@pytest.mark.engine
def test_it_lists_the_files_comments_as_read_only_annotations(
    api: httpx.Client, capture_id: int, commented_file: Path, people: dict[str, httpx.Client]
) -> None:
    first = listed(api, capture_id)
    from_file = [(a["frame"], a["text"]) for a in first if a["from_file"]]
    assert from_file == [(None, FILE_CAPTURE_COMMENT)] + [
        (frame, text) for frame, texts in tshark_comments(commented_file).items() for text in texts
    ]
    assert tshark_comments(commented_file) == FILE_COMMENTS
    assert all(a["author"] is None for a in first if a["from_file"])
    # Listed once: a second listing does not read the file's comments again.
    assert listed(people[TEAMMATE], capture_id) == first

    file_comment = next(a for a in first if a["frame"] == 5)
    for client in (api, people[MODERATOR]):
        url = f"/api/captures/{capture_id}/annotations/{file_comment['id']}"
        changed = client.patch(url, json={"text": "rewritten"})
        assert changed.status_code == 403, changed.text
        assert changed.json()["error"] == "comments read from the capture file cannot be changed"
        assert client.delete(url).status_code == 403


def test_only_its_author_changes_an_annotation(
    api: httpx.Client, capture_id: int, people: dict[str, httpx.Client]
) -> None:
    teammate, moderator = people[TEAMMATE], people[MODERATOR]
    mine = annotate(api, capture_id, 3, "SYN/ACK <b>late</b> & slow")
    overall = annotate(api, capture_id, None, "Whole capture: one page load")
    assert (mine["frame"], mine["author"], mine["from_file"]) == (3, OWNER, False)
    assert overall["frame"] is None

    # A teammate sees them, adds their own, and cannot change the owner's.
    seen = listed(teammate, capture_id)
    assert [a["id"] for a in seen if not a["from_file"]] == [overall["id"], mine["id"]]
    theirs = annotate(teammate, capture_id, 3, "Agreed")
    assert theirs["author"] == TEAMMATE
    url = f"/api/captures/{capture_id}/annotations/{mine['id']}"
    refused = teammate.patch(url, json={"text": "changed by someone else"})
    assert refused.status_code == 403
    assert refused.json()["error"] == "only its author can change or delete an annotation"
    assert teammate.delete(url).status_code == 403

    # The author edits; the owner of the capture is not the teammate's author either.
    edited = api.patch(url, json={"text": "  SYN/ACK late  "})
    assert edited.status_code == 200, edited.text
    assert edited.json()["text"] == "SYN/ACK late"
    assert edited.json()["updated_at"] > mine["updated_at"]
    assert edited.json()["created_at"] == mine["created_at"]
    theirs_url = f"/api/captures/{capture_id}/annotations/{theirs['id']}"
    assert api.patch(theirs_url, json={"text": "no"}).status_code == 403

    # Staff may remove anyone's; then it is gone for everyone.
    assert moderator.delete(theirs_url).status_code == 204
    assert teammate.delete(theirs_url).status_code == 404
    assert api.delete(url).status_code == 204
    left = [a["id"] for a in listed(api, capture_id) if not a["from_file"]]
    assert left == [overall["id"]]
    assert api.delete(f"/api/captures/{capture_id}/annotations/{overall['id']}").status_code == 204


def test_it_refuses_frames_the_capture_lacks_and_texts_it_cannot_hold(
    api: httpx.Client, capture_id: int
) -> None:
    url = f"/api/captures/{capture_id}/annotations"
    for frame in (0, 13, -1):
        refused = api.post(url, json={"frame": frame, "text": "where?"})
        assert refused.status_code == 400, frame
        assert refused.json()["error"] == f"there is no frame {frame}: the capture has frames 1 to 12"
    empty = api.post(url, json={"frame": 1, "text": " \n "})
    assert empty.json() == {"error": "an annotation needs some text"}
    long = api.post(url, json={"frame": 1, "text": "x" * 10_001})
    assert long.status_code == 400
    assert long.json()["error"] == "an annotation holds at most 10,000 characters; this one has 10,001"
    longest = annotate(api, capture_id, 1, "y" * 10_000)
    assert api.delete(f"{url}/{longest['id']}").status_code == 204
    assert api.post(url, json={"frame": 1}).status_code == 422


def test_outsiders_see_nothing_and_link_holders_cannot_annotate(
    server: Server, api: httpx.Client, capture_id: int, commented_file: Path, people: dict[str, httpx.Client]
) -> None:
    outsider = people[OUTSIDER]
    assert outsider.get(f"/api/captures/{capture_id}/annotations").status_code == 404
    assert outsider.post(f"/api/captures/{capture_id}/annotations", json={"text": "hi"}).status_code == 404

    linked = int(upload(api, commented_file, "linked.pcapng").json()["id"])
    key = share_link(api, linked)
    note = annotate(api, linked, 4, "for the link holder")
    with httpx.Client(base_url=server.url, timeout=60) as holder:
        assert holder.get(f"/s/{key}/").status_code == 302
        holder.get("/accounts/login/")  # sets the CSRF cookie a page's script would send back
        headers = {"X-CSRFToken": holder.cookies["csrftoken"]}
        assert note in listed(holder, linked)
        refused = holder.post(f"/api/captures/{linked}/annotations", json={"text": "me too"}, headers=headers)
        assert refused.status_code == 403, refused.text
        url = f"/api/captures/{linked}/annotations/{note['id']}"
        assert holder.patch(url, json={"text": "mine now"}, headers=headers).status_code == 403


@pytest.mark.engine
def test_an_export_writes_the_annotations_as_pcapng_comments(
    api: httpx.Client, server: Server, commented_file: Path, tmp_path: Path
) -> None:
    capture_id = team_capture(server, api, commented_file, "to-export.pcapng")
    annotate(api, capture_id, 5, "Second comment on frame 5")
    annotate(api, capture_id, 7, "Tab\there, backslash \\ there")
    annotate(api, capture_id, 7, "Another on 7")
    annotate(api, capture_id, 10, "Last one kept")
    annotate(api, capture_id, 11, "Outside the range")
    annotate(api, capture_id, None, "Seen by the whole team")
    annotate(api, capture_id, 2, "Outside the range too")

    def export(**params: str) -> Path:
        answer = api.get(f"/api/captures/{capture_id}/export", params=params)
        assert answer.status_code == 200, answer.text
        path = tmp_path / f"export-{len(list(tmp_path.iterdir()))}.pcapng"
        path.write_bytes(answer.content)
        return path

    # Frames 4..10 become frames 1..7 of the export: 5 is 2, 7 is 4, 10 is 7.
    exported = export(first="4", last="10", annotations="1")
    assert tshark_comments(exported) == {
        2: ["First data from the server", "Second comment on frame 5"],
        4: ["Tab\\there, backslash \\ there", "Another on 7"],  # tshark prints a tab as \t
        7: ["Last one kept"],
    }
    assert capinfos_comments(exported) == [FILE_CAPTURE_COMMENT, "Seen by the whole team"]
    lengths = ["-T", "fields", "-e", "frame.len"]
    kept = ["-Y", "frame.number >= 4 && frame.number <= 10"]
    expected = tshark("-r", str(commented_file), *kept, *lengths).split()
    assert tshark("-r", str(exported), *lengths).split() == expected

    # Without the option an export carries the file's own comments only.
    plain = export()
    assert tshark_comments(plain) == FILE_COMMENTS
    assert capinfos_comments(plain) == [FILE_CAPTURE_COMMENT]

    # The exported file, uploaded again, lists every comment as the file's own.
    again = upload(api, exported, "exported.pcapng")
    reread = listed(api, int(again.json()["id"]))
    assert [(a["frame"], a["text"], a["from_file"]) for a in reread] == [
        (None, FILE_CAPTURE_COMMENT, True),
        (None, "Seen by the whole team", True),
        (2, "First data from the server", True),
        (2, "Second comment on frame 5", True),
        (4, "Tab\there, backslash \\ there", True),
        (4, "Another on 7", True),
        (7, "Last one kept", True),
    ]


# ---- live updates -------------------------------------------------------------------------


def live_url(server: Server, capture_id: int) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/captures/{capture_id}/live/"


async def next_event(ws: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    """Return the next message of this type, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return dict(message)


async def presence_until(ws: ClientConnection, names: list[str]) -> dict[str, Any]:
    while True:
        message = await next_event(ws, "presence")
        if sorted(viewer["name"] for viewer in message["viewers"]) == sorted(names):
            return message


async def test_viewers_see_each_other_and_each_others_changes_live(
    server: Server, api: httpx.Client, capture_id: int, people: dict[str, httpx.Client]
) -> None:
    teammate = people[TEAMMATE]
    owner_headers = {"Authorization": api.headers["Authorization"]}
    teammate_headers = {"Authorization": teammate.headers["Authorization"]}
    url = live_url(server, capture_id)
    async with connect(url, origin=server.url, additional_headers=owner_headers) as first:
        alone = await next_event(first, "presence")
        assert [viewer["name"] for viewer in alone["viewers"]] == [OWNER]
        assert alone["viewers"][0]["id"] == alone["you"]
        async with connect(url, origin=server.url, additional_headers=teammate_headers) as second:
            both = await presence_until(first, [OWNER, TEAMMATE])
            seen_by_second = await presence_until(second, [OWNER, TEAMMATE])
            assert {v["id"] for v in both["viewers"]} == {v["id"] for v in seen_by_second["viewers"]}
            assert seen_by_second["you"] != both["you"]

            # One connection each: the owner opening a second tab is a third viewer.
            async with connect(url, origin=server.url, additional_headers=owner_headers):
                await presence_until(second, [OWNER, OWNER, TEAMMATE])
            await presence_until(second, [OWNER, TEAMMATE])

            created = await asyncio.to_thread(annotate, api, capture_id, 8, "Pushed to the team")
            pushed = await next_event(second, "annotation.created")
            assert pushed["annotation"] == created
            assert (await next_event(first, "annotation.created"))["annotation"] == created

            edited = await asyncio.to_thread(
                api.patch, f"/api/captures/{capture_id}/annotations/{created['id']}", json={"text": "Edited"}
            )
            assert (await next_event(second, "annotation.updated"))["annotation"] == edited.json()
            await asyncio.to_thread(api.delete, f"/api/captures/{capture_id}/annotations/{created['id']}")
            assert (await next_event(second, "annotation.deleted"))["annotation"]["id"] == created["id"]

            await asyncio.to_thread(teammate.put, f"/api/captures/{capture_id}/marks/6")
            assert (await next_event(first, "marks.changed"))["frames"] == [6]
            await asyncio.to_thread(teammate.delete, f"/api/captures/{capture_id}/marks")
            assert (await next_event(first, "marks.changed"))["frames"] == []
        await presence_until(first, [OWNER])


async def test_the_live_socket_of_a_capture_one_may_not_read_is_refused(
    server: Server, capture_id: int, people: dict[str, httpx.Client]
) -> None:
    headers = {"Authorization": people[OUTSIDER].headers["Authorization"]}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(live_url(server, capture_id), origin=server.url, additional_headers=headers) as ws:
            await ws.recv()
    assert refused.value.response.status_code == 403


# ---- the capture page ---------------------------------------------------------------------


@pytest.fixture
def pages(browser: Browser, server: Server, people: dict[str, httpx.Client]) -> Iterator[dict[str, Page]]:
    """The owner's page and a teammate's, each in a browser context of its own."""
    opened: dict[str, Page] = {}
    errors: list[str] = []
    contexts = []
    for name in (OWNER, TEAMMATE):
        context = server.new_context(browser, username=name, viewport={"width": 1400, "height": 800})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        opened[name] = page
    yield opened
    for context in contexts:
        context.close()
    assert errors == [], "the pages logged errors"


def row(page: Page, number: int):  # type: ignore[no-untyped-def]
    return page.locator(f"#packet-list .packet-row[data-number='{number}']")


def open_capture(page: Page, capture_id: int) -> None:
    page.goto(f"/captures/{capture_id}/")
    expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
    expect(page.locator("#annotations-toggle")).to_have_text(re.compile(r"Annotations: \d+"))
    if page.locator("#annotations-panel").is_hidden():
        page.locator("#annotations-toggle").click()
    expect(page.locator("#annotations-panel")).to_be_visible()


@pytest.mark.browser
def test_a_teammate_sees_an_annotation_appear_without_reloading(
    pages: dict[str, Page], server: Server, api: httpx.Client, commented_file: Path
) -> None:
    capture_id = team_capture(server, api, commented_file, "browser.pcapng")
    mine, theirs = pages[OWNER], pages[TEAMMATE]
    for page in (mine, theirs):
        open_capture(page, capture_id)
    expect(mine.locator("#status-presence")).to_have_text(f"Also here: {TEAMMATE}")
    expect(theirs.locator("#status-presence")).to_have_text(f"Also here: {OWNER}")
    # The file's comments are there from the start, and their packets carry the glyph.
    expect(theirs.locator("#annotation-list .annotation.from-file")).to_have_count(3)
    expect(row(theirs, 2)).to_have_class(re.compile(r"\bannotated\b"))
    expect(row(theirs, 3)).not_to_have_class(re.compile(r"\bannotated\b"))

    # The owner comments on packet 3; the teammate's list shows it within two seconds.
    text = "Slow SYN/ACK <img src=x onerror=alert(1)> & co"
    row(mine, 3).click()
    expect(mine.locator("#annotation-packet-label")).to_have_text("Packet 3")
    mine.locator("#annotation-text").fill(text)
    mine.locator("#annotation-add").click()
    pushed = theirs.locator("#annotation-list .annotation[data-frame='3']")
    expect(pushed.locator(".annotation-text")).to_have_text(text, timeout=2_000)
    expect(pushed.locator(".annotation-author")).to_have_text(OWNER)
    expect(row(theirs, 3)).to_have_class(re.compile(r"\bannotated\b"), timeout=2_000)
    expect(theirs.locator("#annotation-list img")).to_have_count(0)
    # Only the author has the controls to change it.
    expect(pushed.locator(".annotation-edit")).to_have_count(0)
    expect(mine.locator(".annotation[data-frame='3'] .annotation-edit")).to_be_visible()

    # An edit and a mark travel the same way.
    mine.locator(".annotation[data-frame='3'] .annotation-edit").click()
    mine.locator(".annotation-editor").fill("Slow SYN/ACK: 130 ms")
    mine.locator(".annotation-save").click()
    expect(pushed.locator(".annotation-text")).to_have_text("Slow SYN/ACK: 130 ms", timeout=2_000)
    row(theirs, 4).click()
    theirs.keyboard.press("Control+m")
    expect(row(mine, 4)).to_have_class(re.compile(r"\bmarked\b"), timeout=2_000)

    # The teammate's jump link selects the packet.
    theirs.locator(".annotation[data-frame='3'] .annotation-jump").click()
    expect(theirs.locator("#detail-tree")).to_have_attribute("data-packet", "3")
    expect(pushed).to_have_class(re.compile(r"\bcurrent\b"))
    ARTIFACTS.mkdir(exist_ok=True)
    theirs.screenshot(path=ARTIFACTS / "annotations-live.png")

    mine.close()
    expect(theirs.locator("#status-presence")).to_be_hidden(timeout=5_000)


@pytest.mark.browser
def test_a_link_holder_sees_the_annotations_but_no_controls(
    browser: Browser, server: Server, api: httpx.Client, commented_file: Path
) -> None:
    capture_id = int(upload(api, commented_file, "read-only.pcapng").json()["id"])
    annotate(api, capture_id, 6, "Look here")
    key = share_link(api, capture_id)
    context = server.new_context(browser, username=None, viewport={"width": 1400, "height": 800})
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        page.goto(f"/s/{key}/")
        expect(page.locator("#status-load")).to_have_attribute("data-state", "ready")
        expect(page.locator("#annotations-panel")).to_be_visible()
        expect(page.locator(".annotation[data-frame='6'] .annotation-text")).to_have_text("Look here")
        expect(page.locator("#annotation-form")).to_have_count(0)
        expect(page.locator(".annotation-edit, .annotation-delete")).to_have_count(0)
    finally:
        context.close()
