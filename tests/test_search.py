"""Finding captures: tags, the hosts and protocols read after an upload, the search box and filters."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, expect

from .conftest import ARTIFACTS, OWNER, Server, sample_capture, tshark, upload

pytestmark = pytest.mark.engine

OTHER = "search-other"
TEAMMATE = "search-teammate"
TEAM = "search-team"
SUMMARY_SECONDS = 60

# Shared captures uploaded under names that hold no protocol or address, so that a match
# on a protocol or an address can only come from the summary.
OWNER_UPLOADS = {
    "voice": ("ndpi-sip.pcap", "voice-trace.pcap"),
    "resolver": ("dns-udp.pcap", "resolver-trace.pcap"),
    "sixes": ("v6-http.pcap", "sixes-trace.pcap"),
    "browser": ("chrome-cloudflare-quic-with-secrets.pcapng", "browser-trace.pcapng"),
    "sports": ("http_espn.pcapng", "sports-trace.pcapng"),
    "nothing": ("empty.pcapng", "nothing-trace.pcapng"),
}
OTHER_UPLOADS = {
    "plant": ("modbus.pcap", "plant-trace.pcap"),
    "other-resolver": ("dns-udp.pcap", "other-resolver-trace.pcap"),
}


@dataclass
class Uploaded:
    ids: dict[str, int]
    other: httpx.Client

    def __getitem__(self, key: str) -> int:
        return self.ids[key]


def summary_of(client: httpx.Client, ident: int) -> dict[str, Any]:
    """Wait until the background summary of a capture has run; return it."""
    deadline = time.monotonic() + SUMMARY_SECONDS
    while True:
        answer = client.get(f"/api/captures/{ident}/summary")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["summarized"]:
            return body
        assert time.monotonic() < deadline, f"capture {ident} was not summarized"
        time.sleep(0.2)


def uploaded_id(client: httpx.Client, path: Path, name: str) -> int:
    answer = upload(client, path, name)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def shell(server: Server, code: str) -> None:
    done = server.manage("shell", "-c", code)
    assert done.returncode == 0, done.stderr


def update_capture(server: Server, ident: int, assignments: str) -> None:
    """Change a capture's row directly, as `Capture.objects.filter(pk=ident).update(assignments)`."""
    shell(
        server,
        "import datetime\nfrom django.contrib.auth.models import Group\nfrom explorer.models import Capture\n"
        f"Capture.objects.filter(pk={ident}).update({assignments})",
    )


@pytest.fixture(scope="module")
def found(server: Server, api: httpx.Client) -> Iterator[Uploaded]:
    """Upload the captures these tests search, as OWNER and as another user; wait for their summaries."""
    server.create_user(OTHER)
    server.create_user(TEAMMATE, teams=(TEAM,))
    ids = {key: uploaded_id(api, sample_capture(file), name) for key, (file, name) in OWNER_UPLOADS.items()}
    with server.client(OTHER) as other:
        ids |= {
            key: uploaded_id(other, sample_capture(file), name) for key, (file, name) in OTHER_UPLOADS.items()
        }
        for key in OWNER_UPLOADS:
            summary_of(api, ids[key])
        for key in OTHER_UPLOADS:
            summary_of(other, ids[key])
        yield Uploaded(ids, other)


def found_ids(client: httpx.Client, **params: str) -> set[int]:
    answer = client.get("/api/captures/", params=params)
    assert answer.status_code == 200, answer.text
    return {capture["id"] for capture in answer.json()}


def mine(uploaded: Uploaded, ids: set[int]) -> set[str]:
    """Return which of this module's captures are among ids, by key (other modules upload too)."""
    return {key for key, ident in uploaded.ids.items() if ident in ids}


def tshark_protocols(path: Path) -> list[str]:
    """Return the protocols of tshark's protocol hierarchy, each once, in its order."""
    out = tshark("-n", "-q", "-r", str(path), "-z", "io,phs")
    names = re.findall(r"^ *(\S+)\s+frames:\d+\s+bytes:\d+\s*$", out, re.MULTILINE)
    return list(dict.fromkeys(names))


def tshark_addresses(path: Path) -> set[str]:
    out = tshark("-n", "-q", "-r", str(path), "-z", "ip_hosts,tree", "-z", "ipv6_hosts,tree")
    return set(re.findall(r"^ ([0-9a-f.:]+)\s+\d+\s", out, re.MULTILINE))


# --- the summary read after an upload ----------------------------------------------------------


@pytest.mark.parametrize("key", ["voice", "resolver", "sixes", "browser", "sports"])
def test_the_protocols_are_those_of_tsharks_protocol_hierarchy(
    api: httpx.Client, found: Uploaded, key: str
) -> None:
    summary = summary_of(api, found[key])
    assert summary["protocols"] == tshark_protocols(sample_capture(OWNER_UPLOADS[key][0]))


@pytest.mark.parametrize("key", ["voice", "resolver", "sixes", "sports"])
def test_the_hosts_are_every_address_tshark_counts(api: httpx.Client, found: Uploaded, key: str) -> None:
    summary = summary_of(api, found[key])
    addresses = tshark_addresses(sample_capture(OWNER_UPLOADS[key][0]))
    assert addresses
    assert addresses <= set(summary["hosts"])


def test_the_hosts_include_the_names_dns_answers_gave(api: httpx.Client, found: Uploaded) -> None:
    out = tshark("-n", "-N", "d", "-q", "-r", str(sample_capture("http_espn.pcapng")), "-z", "hosts")
    names = {line.split("\t")[1] for line in out.splitlines() if "\t" in line and not line.startswith("#")}
    assert "broadband.espn.go.com" in names
    assert names <= set(summary_of(api, found["sports"])["hosts"])


def test_an_empty_capture_is_summarized_with_nothing_in_it(api: httpx.Client, found: Uploaded) -> None:
    assert summary_of(api, found["nothing"]) == {"summarized": True, "protocols": [], "hosts": []}


def test_summarize_captures_fills_captures_stored_before(
    server: Server, api: httpx.Client, found: Uploaded
) -> None:
    ident = found["voice"]
    before = summary_of(api, ident)
    update_capture(server, ident, "hosts='', protocols=''")
    assert api.get(f"/api/captures/{ident}/summary").json()["summarized"] is False
    assert ident not in found_ids(api, q="sip")

    done = server.manage("summarize_captures")
    assert done.returncode == 0, done.stderr
    assert f"{ident} voice-trace.pcap: {len(before['protocols'])} protocols" in done.stdout
    assert summary_of(api, ident) == before
    assert ident in found_ids(api, q="sip")


# --- searching ---------------------------------------------------------------------------------


def test_it_finds_captures_by_name(api: httpx.Client, found: Uploaded) -> None:
    assert mine(found, found_ids(api, q="VOICE-trace")) == {"voice"}
    assert mine(found, found_ids(api, q="-trace")) == set(OWNER_UPLOADS)


def test_it_finds_captures_by_protocol_as_a_whole_word(api: httpx.Client, found: Uploaded) -> None:
    assert mine(found, found_ids(api, q="sip")) == {"voice"}
    # v6-http has mdns but no dns: a protocol is a whole word.
    assert mine(found, found_ids(api, q="dns")) == {"resolver", "sports"}
    assert mine(found, found_ids(api, q="mdns")) == {"sixes"}
    assert mine(found, found_ids(api, q="quic")) == {"browser"}


def test_an_address_matches_only_as_a_whole_word(api: httpx.Client, found: Uploaded) -> None:
    addresses = tshark_addresses(sample_capture("dns-udp.pcap"))
    assert "10.10.10.11" in addresses and "10.10.10.1" not in addresses
    assert mine(found, found_ids(api, q="10.10.10.11")) == {"resolver"}
    assert mine(found, found_ids(api, q="10.10.10.1")) == set()
    assert mine(found, found_ids(api, q="10.10.10")) == set()


def test_an_ipv6_address_is_found_however_it_is_written(api: httpx.Client, found: Uploaded) -> None:
    assert mine(found, found_ids(api, q="2001:6f8:900:7c0::2")) == {"sixes"}
    assert mine(found, found_ids(api, q="2001:06F8:0900:07C0:0:0:0:2")) == {"sixes"}


def test_a_domain_finds_the_names_under_it(api: httpx.Client, found: Uploaded) -> None:
    assert mine(found, found_ids(api, q="broadband.espn.go.com")) == {"sports"}
    assert mine(found, found_ids(api, q="espn.go.com")) == {"sports"}
    assert mine(found, found_ids(api, q="spn.go.com")) == set()


def test_it_finds_a_file_comment(api: httpx.Client, found: Uploaded) -> None:
    assert mine(found, found_ids(api, q='"sanitized by tracewrangler"')) == {"browser"}


def test_it_finds_an_annotation(server: Server, api: httpx.Client, found: Uploaded) -> None:
    ident = found["sixes"]
    shell(
        server,
        "from explorer.models import Annotation\n"
        f"Annotation.objects.create(capture_id={ident}, frame=3, text='Router solicitation looks forged')",
    )
    assert mine(found, found_ids(api, q="forged")) == {"sixes"}
    assert mine(found, found_ids(api, q='"solicitation looks"')) == {"sixes"}


def test_every_word_must_match(api: httpx.Client, found: Uploaded) -> None:
    assert mine(found, found_ids(api, q="dns 10.10.10.11")) == {"resolver"}
    assert mine(found, found_ids(api, q="dns sip")) == set()


def test_another_users_private_capture_is_never_found(api: httpx.Client, found: Uploaded) -> None:
    for query in ["plant", "mbtcp", "modbus", "10.10.10.11", "trace", "other-resolver"]:
        assert mine(found, found_ids(api, q=query)) <= set(OWNER_UPLOADS), query
    assert mine(found, found_ids(found.other, q="mbtcp")) == {"plant"}
    assert mine(found, found_ids(found.other, q="10.10.10.11")) == {"other-resolver"}


def test_the_owner_filter(server: Server, api: httpx.Client, found: Uploaded) -> None:
    assert mine(found, found_ids(api, owner="mine", q="trace")) == set(OWNER_UPLOADS)
    assert mine(found, found_ids(api, owner=OWNER, q="trace")) == set(OWNER_UPLOADS)
    assert found_ids(api, owner=OTHER) == set()
    assert mine(found, found_ids(found.other, owner="mine")) == set(OTHER_UPLOADS)
    server.create_user("search-staff", staff=True)
    with server.client("search-staff") as staff:
        assert mine(found, found_ids(staff, owner=OTHER)) == set(OTHER_UPLOADS)
        assert mine(found, found_ids(staff, q="10.10.10.11")) == {"resolver", "other-resolver"}


def test_the_upload_date_filters(server: Server, api: httpx.Client, found: Uploaded) -> None:
    ident = found["nothing"]
    update_capture(server, ident, "uploaded_at=datetime.datetime(2020, 3, 15, 12, tzinfo=datetime.UTC)")
    everything = set(OWNER_UPLOADS)
    assert mine(found, found_ids(api, uploaded_before="2020-03-15")) == {"nothing"}
    assert mine(found, found_ids(api, uploaded_after="2020-03-15", uploaded_before="2020-03-15")) == {
        "nothing"
    }
    assert mine(found, found_ids(api, uploaded_before="2020-03-14")) == set()
    assert mine(found, found_ids(api, uploaded_after="2020-03-16")) == everything - {"nothing"}
    # A date and time: "after" includes that instant, "before" does not.
    assert "nothing" in mine(found, found_ids(api, uploaded_after="2020-03-15T12:00:00Z"))
    assert mine(found, found_ids(api, uploaded_before="2020-03-15T12:00:00Z")) == set()
    assert mine(found, found_ids(api, uploaded_before="2020-03-15T13:00:00+01:00")) == set()
    assert mine(found, found_ids(api, uploaded_before="2020-03-15T13:00:01+01:00")) == {"nothing"}


def test_a_search_it_cannot_understand_is_refused_with_a_reason(api: httpx.Client) -> None:
    answer = api.get("/api/captures/", params={"uploaded_after": "yesterday"})
    assert answer.status_code == 400
    assert "uploaded_after" in answer.json()["error"] and "2024-05-31" in answer.json()["error"]
    answer = api.get("/api/captures/", params={"q": "x" * 201})
    assert answer.status_code == 400 and "200 characters" in answer.json()["error"]
    answer = api.get("/api/captures/", params={"q": "a b c d e f g h i"})
    assert answer.status_code == 400 and "at most 8 words" in answer.json()["error"]


# --- tags --------------------------------------------------------------------------------------


def test_tags_are_added_found_and_removed(api: httpx.Client, found: Uploaded) -> None:
    ident = found["voice"]
    answer = api.put(f"/api/captures/{ident}/tags/  Incident-42 ")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"tags": ["incident-42"]}
    assert api.put(f"/api/captures/{ident}/tags/voip").json() == {"tags": ["incident-42", "voip"]}
    assert api.put(f"/api/captures/{ident}/tags/VOIP").json() == {"tags": ["incident-42", "voip"]}
    assert api.get(f"/api/captures/{ident}/").json()["tags"] == ["incident-42", "voip"]
    listed = {c["id"]: c for c in api.get("/api/captures/").json()}
    assert listed[ident]["tags"] == ["incident-42", "voip"]

    assert mine(found, found_ids(api, tag="incident-42")) == {"voice"}
    assert mine(found, found_ids(api, tag="Incident-42")) == {"voice"}
    assert mine(found, found_ids(api, q="incident")) == {"voice"}

    assert api.delete(f"/api/captures/{ident}/tags/incident-42").json() == {"tags": ["voip"]}
    assert mine(found, found_ids(api, tag="incident-42")) == set()
    assert api.delete(f"/api/captures/{ident}/tags/incident-42").json() == {"tags": ["voip"]}
    assert api.get(f"/api/captures/{ident}/tags").json() == {"tags": ["voip"]}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("two words", "without spaces"),
        ("-leading", "starting with a letter or a digit"),
        ("a" * 33, "at most 32 characters"),
        ("semi;colon", "without spaces"),
        ("%20", "type a tag name"),
    ],
)
def test_a_bad_tag_name_is_refused_with_the_rule(
    api: httpx.Client, found: Uploaded, name: str, message: str
) -> None:
    answer = api.put(f"/api/captures/{found['resolver']}/tags/{name}")
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert api.get(f"/api/captures/{found['resolver']}/tags").json() == {"tags": []}


def test_a_team_member_may_tag_and_a_stranger_may_not_see(
    server: Server, api: httpx.Client, found: Uploaded
) -> None:
    ident = found["sports"]
    update_capture(server, ident, f"visibility='team', team=Group.objects.get(name={TEAM!r})")
    with server.client(TEAMMATE) as teammate:
        assert teammate.put(f"/api/captures/{ident}/tags/espn").json() == {"tags": ["espn"]}
        assert ident in found_ids(teammate, tag="espn")
    assert found.other.put(f"/api/captures/{ident}/tags/mine").status_code == 404
    assert ident not in found_ids(found.other, tag="espn")
    assert api.delete(f"/api/captures/{ident}/tags/espn").json() == {"tags": []}


def test_the_tag_suggestions_come_only_from_visible_captures(
    server: Server, api: httpx.Client, found: Uploaded
) -> None:
    assert found.other.put(f"/api/captures/{found['plant']}/tags/secret-plant").status_code == 200
    with httpx.Client(base_url=server.url, cookies=server.session_cookies(OWNER), timeout=60) as browser:
        page = browser.get(f"/captures/{found['resolver']}/properties/")
        listing = browser.get("/")
    assert page.status_code == 200 and listing.status_code == 200
    assert 'id="tag-form"' in page.text
    assert "secret-plant" not in page.text and "secret-plant" not in listing.text
    assert OTHER not in listing.text


def test_the_properties_form_tags_without_javascript(
    server: Server, api: httpx.Client, found: Uploaded
) -> None:
    ident = found["resolver"]
    with httpx.Client(base_url=server.url, cookies=server.session_cookies(OWNER), timeout=60) as browser:
        url = f"/captures/{ident}/properties/"
        browser.get(url)
        token = browser.cookies["csrftoken"]
        headers = {"Referer": server.url + url}
        form = {"csrfmiddlewaretoken": token, "action": "add", "name": "Resolver"}
        answer = browser.post(f"/captures/{ident}/tags/", data=form, headers=headers)
        assert answer.status_code == 302 and answer.headers["location"] == url
        assert 'data-tag="resolver"' in browser.get(url).text

        answer = browser.post(f"/captures/{ident}/tags/", data={**form, "name": "no good"}, headers=headers)
        assert "Tag not added: a tag is letters" in browser.get(url).text

        browser.post(
            f"/captures/{ident}/tags/", data={**form, "action": "remove", "name": "resolver"}, headers=headers
        )
        assert 'data-tag="resolver"' not in browser.get(url).text
    assert api.get(f"/api/captures/{ident}/tags").json() == {"tags": []}


def test_the_list_page_searches_without_javascript(server: Server, found: Uploaded) -> None:
    with httpx.Client(base_url=server.url, cookies=server.session_cookies(OWNER), timeout=60) as browser:
        page = browser.get("/", params={"q": "sip", "owner": "mine", "sort": "name"})
        bad = browser.get("/", params={"uploaded_after": "soon"})
    assert page.status_code == 200
    shown = {int(i) for i in re.findall(r'data-capture-id="(\d+)"', page.text)}
    assert mine(found, shown) == {"voice"}
    assert 'value="sip"' in page.text and '<option value="mine" selected>' in page.text
    # The sort links keep the search.
    assert "?sort=-name&amp;q=sip&amp;owner=mine" in page.text
    assert bad.status_code == 200 and "is neither a date" in bad.text


# --- in the browser ----------------------------------------------------------------------------


@pytest.mark.browser
def test_typing_in_the_search_box_narrows_the_table(
    browser: Browser, server: Server, found: Uploaded
) -> None:
    errors: list[str] = []
    context = server.new_context(browser, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/")
    rows = page.locator("#capture-table tr.capture-row")
    row = page.locator(f"#capture-table tr.capture-row[data-capture-id='{found['voice']}']")
    expect(row).to_be_visible()
    assert rows.count() >= len(OWNER_UPLOADS)

    page.locator("#search-q").press_sequentially("trace sip", delay=40)
    expect(rows).to_have_count(1)
    expect(row).to_be_visible()
    expect(page.locator("#search-status")).to_contain_text("1 of")
    # Only the filters that are set are in the URL.
    expect(page).to_have_url(re.compile(r"/\?sort=-uploaded&q=trace(%20|\+)sip$"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "capture-search.png", full_page=True)

    # Sorting keeps the search, and the next search keeps the sort.
    page.locator("#capture-table th[data-sort-key='name'] a").click()
    expect(page).to_have_url(re.compile(r"sort=name.*q=trace"))
    expect(rows).to_have_count(1)
    page.locator("#search-q").fill("dns")
    expect(page).to_have_url(re.compile(r"sort=name.*q=dns"))
    expect(page.locator(f"tr.capture-row[data-capture-id='{found['resolver']}']")).to_be_visible()
    expect(page.locator(f"tr.capture-row[data-capture-id='{found['voice']}']")).to_have_count(0)
    expect(page.locator(f"tr.capture-row[data-capture-id='{found['sixes']}']")).to_have_count(0)

    page.locator("#search-q").fill("nothing of this sort")
    expect(page.locator("#capture-table tr.empty")).to_contain_text("No capture matches this search")
    context.close()
    assert errors == []


@pytest.mark.browser
def test_tags_are_added_and_removed_on_the_properties_page(
    browser: Browser, server: Server, found: Uploaded
) -> None:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    context = server.new_context(browser, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.on("console", on_console)
    ident = found["browser"]
    page.goto(f"/captures/{ident}/properties/")
    expect(page.locator("#no-tags")).to_be_visible()
    page.locator("#tag-input").fill("QUIC-Lab")
    page.locator("#tag-input").press("Enter")
    expect(page.locator("#tag-list li[data-tag='quic-lab']")).to_be_visible()
    page.locator("#tag-input").fill("no spaces please")
    page.locator("#tag-add").click()
    expect(page.locator("#tag-error")).to_contain_text("without spaces")
    expect(page.locator("#tag-input")).to_have_value("no spaces please")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "capture-tags.png", full_page=True)

    page.goto("/")
    tag = page.locator(f"tr.capture-row[data-capture-id='{ident}'] a.tag")
    expect(tag).to_have_text("quic-lab")
    tag.click()
    expect(page).to_have_url(re.compile(r"tag=quic-lab"))
    expect(page.locator("#capture-table tr.capture-row")).to_have_count(1)
    expect(page.locator("#search-tag")).to_have_value("quic-lab")

    page.goto(f"/captures/{ident}/properties/")
    page.locator("#tag-list li[data-tag='quic-lab'] .tag-remove").click()
    expect(page.locator("#no-tags")).to_be_visible()
    context.close()
    assert errors == []
