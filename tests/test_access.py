"""Who may reach what: every page, API operation and websocket of the site against every role.

The routes come from the code: the URL configuration, the API's OpenAPI schema and the
websocket routes. Each must be classified below (PAGES, API, WEBSOCKETS) with the right it needs
and a representative request, or test_every_*_is_classified fails: a new route cannot go
unchecked. Every role then sends every request, to each of three captures when the route names
one, and the answer is compared with what the rules of explorer/access.py (written out in
RIGHTS) give that role. Each answer is also searched for anything of a capture the role may not
read (its name, digest, bytes, tag, annotation) and for the key log, which nobody is served.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import http.cookiejar
import json
import re
import secrets
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx
import pytest
from django.urls import URLResolver, get_resolver, reverse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from explorer.routing import websocket_urlpatterns
from explorer.views.statistics import registry as statistics_registry

from .conftest import OWNER, PASSWORD, Server, sample_capture, upload

pytestmark = pytest.mark.engine

# "capture": record on the server's interfaces (staff, or the start_live_capture permission);
# "live": watch or stop OWNER's live capture (its owner and staff; hidden from everyone else).
# "token": an API token's user, whatever the session (a remote machine's live stream).
Need = Literal["none", "login", "staff", "capture", "live", "token", "read", "write", "manage"]
LEVELS = {"read": 1, "write": 2, "manage": 3}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

KEYS = "tls_nss_example.keys"
# Uploaded by the requests that upload, and thrown away by those that destroy.
SPARE = "tcp_handshake.pcapng"
TEAM = "noc"
TEAMMATE, OUTSIDER, STAFF = "noc-teammate", "outsider", "staffer"
MISSING_ID = 2**31 - 1


@dataclass(frozen=True)
class Probe:
    """A representative request of a route, and the right it needs.

    need: "none" (anyone), "login" (a signed-in user or a token), "token" (a token only), "staff",
    or a right on the capture the route names: "read", "write" or "manage".
    Strings in data and json may name {visibility}, {team} and {url}: the capture's.
    spare: the request changes what the other requests look at, so where it is allowed it goes
    to a spare capture of the same owner and visibility instead: "shared" by the role's other
    such requests, or "own" when it deletes the capture.
    """

    need: Need
    method: str = "GET"
    params: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] | None = None
    json: dict[str, Any] | None = None
    file: str | None = None  # a shared file, posted as the multipart field `file`
    headers: dict[str, str] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)  # path arguments instead of ARGUMENTS'
    ok: int = 200
    spare: Literal["", "shared", "own"] = ""


# Every route of the URL configuration but the API's operations, by name; the admin as one.
PAGES: dict[str, tuple[Probe, ...]] = {
    "login": (Probe("none"),),
    # Signing out takes a POST, refused without a CSRF token (test_unsafe_page_requests_*):
    # a GET signs nobody out, and a POST here would end the sessions the other rows use.
    "logout": (Probe("none", ok=405),),
    "password_change": (Probe("login"),),
    "password_change_done": (Probe("login"),),
    "admin": (Probe("staff"),),
    "api:openapi-json": (Probe("none"),),
    "api:openapi-view": (Probe("none"),),
    "api:api-root": (Probe("none", ok=404),),
    "explorer:capture_list": (Probe("login", params={"q": "access"}),),
    # No file: a message and back to the list.
    "explorer:upload": (Probe("login", "POST", data={}, ok=302),),
    "explorer:capture": (Probe("read"),),
    "explorer:capture_properties": (Probe("read"),),
    "explorer:capture_delete": (
        Probe("manage"),
        Probe("manage", "POST", data={}, ok=302, spare="own"),
    ),
    # No file: a message and back to the properties.
    "explorer:capture_keylog": (Probe("write", "POST", data={}, ok=302),),
    "explorer:capture_tags": (Probe("write", "POST", data={"name": "matrix"}, ok=302),),
    "explorer:export_start": (Probe("read", "POST", data={"filter": "tcp", "range": "all"}, ok=302),),
    "explorer:export_job": (Probe("read"),),
    "explorer:follow": (Probe("read", params={"stream": "0"}),),
    "explorer:packet_detail": (Probe("read", headers={"HX-Request": "true"}),),
    # Every statistic's page (as explorer/views/statistics/ registers them) reads its capture.
    **{f"explorer:{statistic.url_name}": (Probe("read"),) for statistic in statistics_registry.registered()},
    "explorer:export": (Probe("read"),),
    "explorer:sharing": (Probe("write"),),
    # The visibility the capture has already: allowed, it changes nothing.
    "explorer:sharing_update": (
        Probe("manage", "POST", data={"visibility": "{visibility}", "team": "{team}"}, ok=302),
    ),
    "explorer:share": (
        Probe(
            "write",
            "POST",
            data={"view": "{url}", "expires": "1h"},
            headers={"Accept": "application/json"},
            ok=201,
        ),
    ),
    # link_id is a link revoked already: allowed, it changes nothing (test_a_teammate_*).
    "explorer:revoke_link": (Probe("write", "POST", data={}, ok=302),),
    # key is a revoked link's: gone for everyone (valid ones: test_opening_a_link_*).
    "explorer:open_link": (Probe("none", ok=410),),
    "explorer:account": (Probe("login"),),
    "explorer:token_create": (Probe("login", "POST", data={"name": "access matrix"}, ok=302),),
    # token_id is a token revoked already: allowed, it changes nothing (test_nobody_revokes_*).
    "explorer:token_revoke": (Probe("login", "POST", data={}, ok=302),),
    "explorer:live_list": (Probe("login"),),
    # An interface the server does not have: a message and back to the list, nothing recorded.
    "explorer:live_start": (Probe("capture", "POST", data={"interface": "no-such-interface0"}, ok=302),),
    "explorer:live_view": (Probe("live"),),
    # Stored with no capture (made so here): its details are a message.
    "explorer:live_packet_detail": (Probe("live", headers={"HX-Request": "true"}),),
    # The live capture was stored already: allowed, it changes nothing.
    "explorer:live_stop": (Probe("live", "POST", data={}, ok=302),),
}

C = "/api/captures/{capture_id}"
# Every operation of the API's schema, by method and path.
API: dict[tuple[str, str], Probe] = {
    # Lists (or finds) only what the requester may read: every answer is searched for the others.
    ("GET", "/api/captures/"): Probe("none", params={"q": "access"}),
    ("POST", "/api/captures/"): Probe("login", file=SPARE, ok=201),
    ("GET", f"{C}/"): Probe("read"),
    ("DELETE", f"{C}/"): Probe("manage", ok=204, spare="own"),
    ("POST", f"{C}/keylog"): Probe("write", file=KEYS, spare="shared"),
    ("DELETE", f"{C}/keylog"): Probe("write", ok=204, spare="shared"),
    ("GET", f"{C}/download"): Probe("read"),
    ("GET", f"{C}/packets"): Probe("read", params={"limit": "50"}),
    ("GET", f"{C}/packets/{{number}}/"): Probe("read"),
    ("GET", "/api/filters/check"): Probe("none", params={"filter": "tcp.port == 80"}),
    ("GET", "/api/fields/complete"): Probe("none", params={"prefix": "http.req"}),
    ("GET", f"{C}/follow"): Probe("read"),
    ("GET", f"{C}/follow/raw"): Probe("read"),
    ("GET", f"{C}/conversations"): Probe("read"),
    ("GET", f"{C}/endpoints"): Probe("read"),
    ("GET", f"{C}/protocol-hierarchy"): Probe("read"),
    ("GET", f"{C}/flow"): Probe("read"),
    ("GET", f"{C}/expert"): Probe("read"),
    ("GET", f"{C}/iograph"): Probe("read"),
    ("GET", f"{C}/export"): Probe("read", params={"annotations": "true"}),
    ("POST", f"{C}/exports"): Probe("read", json={"filter": "tcp"}, ok=202),
    ("GET", f"{C}/exports/{{export_id}}"): Probe("read"),
    ("GET", f"{C}/exports/{{export_id}}/file"): Probe("read"),
    ("GET", f"{C}/marks"): Probe("read"),
    ("DELETE", f"{C}/marks"): Probe("write", ok=204, spare="shared"),
    # Frame 1 is marked already: allowed, it changes nothing.
    ("PUT", f"{C}/marks/{{number}}"): Probe("write", ok=204),
    # Frame 2 is not marked: allowed, it changes nothing.
    ("DELETE", f"{C}/marks/{{number}}"): Probe("write", ok=204, args={"number": 2}),
    ("GET", f"{C}/http-objects"): Probe("read"),
    ("GET", f"{C}/http-objects.zip"): Probe("read"),
    ("GET", f"{C}/http-objects/{{index}}"): Probe("read"),
    ("GET", f"{C}/http-requests"): Probe("read"),
    ("GET", f"{C}/dns-queries"): Probe("read"),
    ("GET", f"{C}/summary"): Probe("read"),
    ("GET", f"{C}/tags"): Probe("read"),
    ("PUT", f"{C}/tags/{{name}}"): Probe("write", args={"name": "matrix"}),
    # A tag the capture does not have: allowed, it changes nothing.
    ("DELETE", f"{C}/tags/{{name}}"): Probe("write", args={"name": "absent"}),
    ("GET", f"{C}/annotations"): Probe("read"),
    ("POST", f"{C}/annotations"): Probe("write", json={"frame": 1, "text": "seen by the matrix"}, ok=201),
    # annotation_id is the owner's annotation: only its author and staff change it, the same
    # people who manage the capture, and a teammate may read it but not change it (403).
    ("PATCH", f"{C}/annotations/{{annotation_id}}"): Probe("manage", json={"text": "{annotation}"}),
    ("DELETE", f"{C}/annotations/{{annotation_id}}"): Probe("manage", ok=204, spare="shared"),
    # Lists only the live captures the requester may watch: every answer is searched for the others.
    ("GET", "/api/live/"): Probe("login"),
    # A remote machine's live stream, sent with a token. This body is no capture: refused before
    # anything is recorded (allowed, it changes nothing).
    ("PUT", "/api/live/{name}"): Probe("token", data={"stream": "this is not a capture file at all"}, ok=400),
}

# Every websocket route, with the right it needs.
WEBSOCKETS: dict[str, Need] = {
    "ws/captures/<int:capture_id>/": "read",
    "ws/captures/<int:capture_id>/live/": "read",
    "ws/live/<int:live_id>/": "live",
}

# The three captures by visibility, and their files.
CAPTURES = {
    "private": "http_google.pcapng",
    "team": "http-content-gzip.pcap",
    "link": "http_post.pcapng",
}

# What each person may do with each capture: the rules of explorer/access.py, written out.
# All three captures are OWNER's. A token has its user's rights. The link holder opened a
# link of each capture, and only the one whose owner allows links ("link") opens to it.
RIGHTS: dict[str, dict[str, Need]] = {
    "owner": {"private": "manage", "team": "manage", "link": "manage"},
    "teammate": {"team": "write"},
    "other user": {},
    "staff": {"private": "manage", "team": "manage", "link": "manage"},
    "anonymous": {},
    "link holder": {"link": "read"},
    "revoked link holder": {},
    "expired link holder": {},
}
USERS = {"owner": OWNER, "teammate": TEAMMATE, "other user": OUTSIDER, "staff": STAFF}
ROLES = [*RIGHTS, *(f"{person}'s token" for person in USERS), "revoked token"]
# Roles whose answers cannot depend on the capture are sent to one only, to keep the run
# short: the holders of a dead link held one of the "link" capture, and elsewhere are anonymous;
# a revoked token is refused before any route is looked at.
ONE_CAPTURE = {"revoked link holder": "link", "expired link holder": "link", "revoked token": "private"}
# The roles whose 404 for a hidden capture is compared with that for one that does not exist.
HIDDEN_COMPARED = ("other user", "other user's token")


class KeepNoCookies(http.cookiejar.DefaultCookiePolicy):
    """Send the cookies a role starts with and keep none it is sent: each request is the role's."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False


@dataclass
class Capture:
    kind: str
    id: int
    name: str
    annotation: str
    markers: list[bytes]  # in no answer to a role that may not read the capture

    @property
    def url(self) -> str:
        return f"/captures/{self.id}/"


@dataclass
class Role:
    name: str
    client: httpx.Client
    rights: dict[str, Need]
    signed_in: bool = False
    staff: bool = False
    revoked: bool = False
    token: bool = False
    ws_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class World:
    server: Server
    captures: dict[str, Capture]
    roles: dict[str, Role]
    team_id: int
    tokens: dict[str, Any]  # as SETUP prints them
    links: dict[str, str]  # what for → key
    link_ids: dict[str, int]  # key → id
    key_markers: list[bytes]  # the key log's secrets, as hex and as bytes
    sessions: dict[str, str]  # person → session cookie
    annotations: dict[int, int] = field(default_factory=dict)  # capture id → the owner's annotation
    exports: dict[int, int] = field(default_factory=dict)  # capture id → the owner's finished export
    spares: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    live_id: int = 0

    def live_capture(self) -> int:
        """Return the id of a live capture of OWNER (stored already), made the first time."""
        with self.lock:
            if not self.live_id:
                self.live_id = shell(self.server, LIVE_CAPTURE.format(owner=OWNER))["id"]
            return self.live_id

    def owner(self) -> httpx.Client:
        return self.roles["owner's token"].client

    def capture(self, capture_id: int | None) -> Capture | None:
        return next((c for c in self.captures.values() if c.id == capture_id), None)

    def spare(self, kind: str, role: str = "") -> int:
        """Return a spare capture of OWNER with the visibility of the capture `kind`.

        With a role, the one spare of that role and visibility; else a new one.
        """
        if not role:
            return upload_capture(self.owner(), SPARE, f"spare-{kind}.pcapng", kind, self.team_id)["id"]
        with self.lock:
            if (kind, role) not in self.spares:
                self.spares[(kind, role)] = self.spare(kind)
            return self.spares[(kind, role)]

    def annotation(self, capture_id: int) -> int:
        """Return the id of an annotation of OWNER on the capture, made the first time."""
        if capture_id == MISSING_ID:
            return 1
        with self.lock:
            if capture_id in self.annotations:
                return self.annotations[capture_id]
            made = self.owner().post(
                f"/api/captures/{capture_id}/annotations", json={"frame": None, "text": "the owner's note"}
            )
            assert made.status_code == 201, made.text
            self.annotations[capture_id] = int(made.json()["id"])
            return self.annotations[capture_id]

    def export(self, capture_id: int) -> int:
        """Return the id of a finished export of the capture by OWNER, made the first time."""
        if capture_id == MISSING_ID:
            return 1
        with self.lock:
            if capture_id in self.exports:
                return self.exports[capture_id]
            made = self.owner().post(f"/api/captures/{capture_id}/exports", json={})
            assert made.status_code == 202, made.text
            deadline = time.monotonic() + 60
            while (state := self.owner().get(made.json()["url"]).json()["state"]) != "done":
                assert state in ("queued", "running") and time.monotonic() < deadline, state
                time.sleep(0.1)
            self.exports[capture_id] = int(made.json()["id"])
            return self.exports[capture_id]


# Path arguments: every route's, filled from the capture the request goes to.
ARGUMENTS: dict[str, Callable[[World, int], Any]] = {
    "capture_id": lambda world, capture_id: capture_id,
    "number": lambda world, capture_id: 1,
    "index": lambda world, capture_id: 0,
    "name": lambda world, capture_id: "matrix",
    "link_id": lambda world, capture_id: world.link_ids[world.links["revoked"]],
    "key": lambda world, capture_id: world.links["revoked"],
    "token_id": lambda world, capture_id: world.tokens["revoked_id"],
    "annotation_id": lambda world, capture_id: world.annotation(capture_id),
    "export_id": lambda world, capture_id: world.export(capture_id),
    "live_id": lambda world, capture_id: world.live_capture(),
}


def upload_capture(owner: httpx.Client, file_name: str, name: str, visibility: str, team_id: int) -> Any:
    """Upload a shared file under a name, give it a visibility; return the API's capture."""
    answer = upload(owner, sample_capture(file_name), name)
    assert answer.status_code == 201, answer.text
    capture = answer.json()["captures"][0]
    if visibility != "private":
        changed = owner.post(
            f"/captures/{capture['id']}/sharing/visibility/", data={"visibility": visibility, "team": team_id}
        )
        assert changed.status_code == 302, changed.text
    return capture


SETUP = """
import json
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group, User
from explorer.models import ApiToken
from explorer.tokens import create_token

team, _ = Group.objects.get_or_create(name={team!r})
User.objects.get(username={owner!r}).groups.add(team)
for name, staff, member in {users!r}:
    user = User.objects.create_user(name, password={password!r}, is_staff=staff)
    if member:
        user.groups.add(team)
def token(name):
    key = async_to_sync(create_token)(User.objects.get(username=name), "access matrix")
    return key, ApiToken.objects.get(lookup=key[:12]).pk
keys = {{name: token(name) for name in {names!r}}}
revoked, revoked_id = token({owner!r})
print(json.dumps({{
    "team": team.pk,
    "keys": {{name: key for name, (key, _) in keys.items()}},
    "ids": {{name: pk for name, (_, pk) in keys.items()}},
    "revoked": revoked,
    "revoked_id": revoked_id,
}}))
"""

LIVE_CAPTURE = """
import json
from django.contrib.auth.models import User
from explorer.models import LiveCapture

live = LiveCapture.objects.create(
    owner=User.objects.get(username={owner!r}), name="matrix", source="stream", state="stored"
)
print(json.dumps({{"id": live.pk}}))
"""

EXPIRE = """
import json
from datetime import timedelta
from django.utils import timezone
from explorer.models import ShareLink

ShareLink.objects.filter(key={key!r}).update(expires_at=timezone.now() - timedelta(minutes=1))
print(json.dumps({{link.key: link.pk for link in ShareLink.objects.filter(key__in={keys!r})}}))
"""


def shell(server: Server, code: str) -> Any:
    done = server.manage("shell", "-c", code)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def sign_in(server: Server, username: str) -> httpx.Response:
    """Sign in through the login form; return the answer that sets the session cookie."""
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        browser.get("/accounts/login/")
        token = browser.cookies["csrftoken"]
        answer = browser.post(
            "/accounts/login/",
            data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
        assert answer.status_code == 302, f"sign-in of {username} failed"
        return answer


def browser(server: Server, session: str | None = None, csrf: bool = True) -> httpx.Client:
    """Return a client with a session (or none) and a CSRF token sent as a page's scripts send it."""
    cookies = httpx.Cookies(http.cookiejar.CookieJar(KeepNoCookies()))
    headers = {}
    if session:
        cookies.set("sessionid", session)
    if csrf:
        token = secrets.token_hex(16)
        cookies.set("csrftoken", token)
        headers["X-CSRFToken"] = token
    return httpx.Client(base_url=server.url, timeout=120, cookies=cookies, headers=headers)


def token_client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        timeout=120,
        cookies=httpx.Cookies(http.cookiejar.CookieJar(KeepNoCookies())),
        headers={"Authorization": f"Token {key}"},
    )


def share(client: httpx.Client, capture: Capture, expires: str = "never") -> str:
    """Create a share link of the capture's packet list; return its key."""
    answer = client.post(
        f"/captures/{capture.id}/share/",
        data={"view": capture.url, "expires": expires},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["url"]).rstrip("/").rsplit("/", 1)[-1]


def open_links(server: Server, *keys: str) -> str:
    """Open share links as someone not signed in; return the session that remembers them."""
    with httpx.Client(base_url=server.url, timeout=60) as stranger:
        for key in keys:
            opened = stranger.get(f"/s/{key}/")
            assert opened.status_code == 302, opened.text
        return stranger.cookies["sessionid"]


def key_log_markers() -> list[bytes]:
    """Return the key log's secrets (its third column) as hex, either case, and as bytes."""
    markers = []
    for line in sample_capture(KEYS).read_text().splitlines():
        fields = line.split()
        if len(fields) == 3 and not line.startswith("#"):
            markers += [fields[2].lower().encode(), fields[2].upper().encode(), bytes.fromhex(fields[2])]
    assert markers
    return markers


def our_captures(owner: httpx.Client, team_id: int) -> dict[str, Capture]:
    """Upload the three captures with a key log, a mark, a tag and an annotation each."""
    captures = {}
    for kind, file_name in CAPTURES.items():
        tag = f"access-{kind}-{uuid.uuid4().hex[:8]}"
        stored = upload_capture(owner, file_name, tag + sample_capture(file_name).suffix, kind, team_id)
        data = sample_capture(file_name).read_bytes()
        middle = data[len(data) // 2 : len(data) // 2 + 24]
        note = f"note-{uuid.uuid4().hex}"
        markers = [stored["name"].encode(), stored["sha256"].encode(), middle, note.encode(), tag.encode()]
        capture = captures[kind] = Capture(kind, stored["id"], stored["name"], note, markers)
        with open(sample_capture(KEYS), "rb") as log:
            attached = owner.post(f"/api/captures/{capture.id}/keylog", files={"file": (KEYS, log)})
        assert attached.status_code == 200, attached.text
        assert owner.put(f"/api/captures/{capture.id}/marks/1").status_code == 204
        assert owner.put(f"/api/captures/{capture.id}/tags/{tag}").status_code == 200
        noted = owner.post(f"/api/captures/{capture.id}/annotations", json={"frame": 1, "text": note})
        assert noted.status_code == 201, noted.text
    return captures


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    users = [(TEAMMATE, False, True), (OUTSIDER, False, False), (STAFF, True, False)]
    made = shell(
        server,
        SETUP.format(team=TEAM, owner=OWNER, users=users, password=PASSWORD, names=list(USERS.values())),
    )
    team_id = int(made["team"])
    keys = {person: made["keys"][username] for person, username in USERS.items()}
    with token_client(server, keys["owner"]) as owner:
        captures = our_captures(owner, team_id)
        # A link of each capture, opened while valid; then one is revoked and one expires.
        links = {kind: share(owner, capture) for kind, capture in captures.items()}
        links["revoked"] = share(owner, captures["link"])
        links["expired"] = share(owner, captures["link"], "1h")
        sessions = {
            "link holder": open_links(server, links["private"], links["team"], links["link"]),
            "revoked link holder": open_links(server, links["revoked"]),
            "expired link holder": open_links(server, links["expired"]),
        }
        link_ids = shell(server, EXPIRE.format(key=links["expired"], keys=list(links.values())))
        revoked = owner.post(f"/captures/{captures['link'].id}/share/{link_ids[links['revoked']]}/revoke/")
        assert revoked.status_code == 302, revoked.text

    for person, username in USERS.items():
        sessions[person] = sign_in(server, username).cookies["sessionid"]
    with browser(server, sessions["owner"]) as signed_in:
        revoked = signed_in.post(f"/account/tokens/{made['revoked_id']}/revoke/")
    assert revoked.status_code == 302, revoked.text

    roles: dict[str, Role] = {}
    for person, rights in RIGHTS.items():
        session = sessions.get(person)
        roles[person] = Role(
            person,
            browser(server, session),
            rights,
            signed_in=person in USERS,
            staff=person == "staff",
            ws_headers={"Cookie": f"sessionid={session}"} if session else {},
        )
    for person, key in [*keys.items(), ("revoked", made["revoked"])]:
        name = f"{person}'s token" if person in USERS else "revoked token"
        roles[name] = Role(
            name,
            token_client(server, key),
            RIGHTS.get(person, {}),
            signed_in=person in USERS,
            staff=person == "staff",
            revoked=person not in USERS,
            token=True,
            ws_headers={"Authorization": f"Token {key}"},
        )
    assert list(roles) == ROLES

    yield World(
        server=server,
        captures=captures,
        roles=roles,
        team_id=team_id,
        tokens=made,
        links=links,
        link_ids=link_ids,
        key_markers=key_log_markers(),
        sessions=sessions,
    )
    for role in roles.values():
        role.client.close()


# The routes, from the code


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name"; every route of the admin is "admin"
    path: str  # the pattern, as the URL configuration has it
    arguments: tuple[str, ...]


def site_routes() -> dict[str, Route]:
    """Return every route of the URL configuration by name.

    The admin counts as one route: it checks staff itself, for all of its pages alike.
    """
    routes: dict[str, Route] = {}

    def walk(patterns: list[Any], prefix: str, namespace: str | None) -> None:
        for pattern in patterns:
            path = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, path, pattern.namespace or namespace)
            elif namespace == "admin":
                routes["admin"] = Route("admin", "admin/", ())
            else:
                name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name or path
                routes[name] = Route(name, path, tuple(pattern.pattern.regex.groupindex))

    walk(get_resolver().url_patterns, "", None)
    return routes


def api_operations(world: World) -> set[tuple[str, str]]:
    schema = world.owner().get("/api/schema/").json()
    return {(method.upper(), path) for path, methods in schema["paths"].items() for method in methods}


def page_routes(api_paths: set[str]) -> dict[str, Route]:
    """Return the routes that are no operation of the API's schema (those are in API)."""
    return {
        name: route
        for name, route in site_routes().items()
        if "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.path) not in api_paths
    }


def unclassified(kind: str, table: str, missing: set[Any], stale: set[Any]) -> str:
    lines = []
    if missing:
        lines.append(
            f"{kind} not classified in {table} of tests/test_access.py: "
            + ", ".join(sorted(map(str, missing)))
            + f". Add each to {table} with the right it needs (none, login, staff, read, write or "
            "manage) and a representative request, so that every role is checked against it."
        )
    if stale:
        lines.append(f"{table} lists {kind} that no longer exist: " + ", ".join(sorted(map(str, stale))))
    return "\n".join(lines)


def test_every_page_route_is_classified(world: World) -> None:
    routes = set(page_routes({path for _, path in api_operations(world)}))
    missing, stale = routes - set(PAGES), set(PAGES) - routes
    assert not missing and not stale, unclassified("page routes", "PAGES", missing, stale)


def test_every_api_operation_is_classified(world: World) -> None:
    operations = api_operations(world)
    missing, stale = operations - set(API), set(API) - operations
    assert not missing and not stale, unclassified("API operations", "API", missing, stale)


def test_every_websocket_route_is_classified() -> None:
    routes = {str(pattern.pattern) for pattern in websocket_urlpatterns}
    missing, stale = routes - set(WEBSOCKETS), set(WEBSOCKETS) - routes
    assert not missing and not stale, unclassified("websocket routes", "WEBSOCKETS", missing, stale)


# What each role is answered


def expected(probe: Probe, role: Role, kind: str | None, api: bool) -> str:
    """Return the outcome the rules give this role for this request, as `outcome` writes it."""
    if role.revoked:
        return "401"
    if probe.need == "none":
        return str(probe.ok)
    if probe.need == "login":
        return str(probe.ok) if role.signed_in else "401" if api else "302 to sign-in"
    if probe.need == "staff":
        return str(probe.ok) if role.staff else "302 to the admin's sign-in"
    if probe.need == "token":
        return str(probe.ok) if role.token else "401"
    if probe.need == "capture":
        return str(probe.ok) if role.staff else "403" if role.signed_in else "302 to sign-in"
    if probe.need == "live":
        if role.staff or role.name in ("owner", "owner's token"):
            return str(probe.ok)
        return "404" if api or role.signed_in else "302 to sign-in"
    assert kind is not None
    level = role.rights.get(kind)
    if level is None:
        # Hidden: as if it did not exist. Pages first ask whoever is not signed in to sign in.
        return "404" if api or role.signed_in else "302 to sign-in"
    return str(probe.ok) if LEVELS[level] >= LEVELS[probe.need] else "403"


def outcome(response: httpx.Response) -> str:
    if response.is_redirect:
        location = response.headers.get("location", "")
        if location.startswith("/accounts/login/"):
            return "302 to sign-in"
        if location.startswith("/admin/login/"):
            return "302 to the admin's sign-in"
    return str(response.status_code)


BASE64 = re.compile(rb'"([A-Za-z0-9+/]{16,}={0,2})"')


def readings(text: bytes) -> list[bytes]:
    """Return the text, and what each base64 string in it decodes to (packet and stream bytes)."""
    found = [text]
    for match in BASE64.finditer(text):
        try:
            found.append(base64.b64decode(match.group(1), validate=True))
        except binascii.Error:
            pass
    return found


def leaks(world: World, rights: dict[str, Need], text: bytes) -> list[str]:
    """Return what a text shows that its reader may not see: the key log, unreadable captures."""
    texts = readings(text)
    lowered = text.lower()
    problems = []
    if any(marker in lowered or any(marker in each for each in texts) for marker in world.key_markers):
        problems.append("the key log")
    for kind, capture in world.captures.items():
        if kind not in rights and any(marker in each for marker in capture.markers for each in texts):
            problems.append(f"something of the {kind} capture")
    return problems


CSRF_VALUE = re.compile(rb'(name="csrfmiddlewaretoken" value=")[^"]*')


def same_page(one: httpx.Response, other: httpx.Response) -> bool:
    return CSRF_VALUE.sub(rb"\1", one.content) == CSRF_VALUE.sub(rb"\1", other.content)


def send(
    world: World, client: httpx.Client, probe: Probe, path: str, capture_id: int | None
) -> httpx.Response:
    capture = world.capture(capture_id)
    values = {
        "visibility": capture.kind if capture else "",
        "team": world.team_id if capture else "",
        "url": capture.url if capture else "/",
        "annotation": "the owner's note",
    }
    data = {key: value.format_map(values) for key, value in probe.data.items()} if probe.data else None
    body = None
    if probe.json is not None:
        body = {key: v.format_map(values) if isinstance(v, str) else v for key, v in probe.json.items()}
    files = {"file": (probe.file, sample_capture(probe.file).read_bytes())} if probe.file else None
    return client.request(
        probe.method, path, params=probe.params, data=data, json=body, files=files, headers=probe.headers
    )


def check(
    world: World,
    probe: Probe,
    label: str,
    path_for: Callable[[int | None], str],
    *,
    api: bool,
    names_capture: bool,
) -> list[str]:
    """Send the probe as every role, to every capture when the route names one; return problems."""
    kinds: list[str | None] = list(world.captures) if names_capture else [None]
    calls = [
        (role, kind)
        for role in world.roles.values()
        for kind in kinds
        if kind is None or ONE_CAPTURE.get(role.name, kind) == kind
    ]

    def missing(role: Role) -> httpx.Response:
        return send(world, role.client, probe, path_for(MISSING_ID), MISSING_ID)

    def one(call: tuple[Role, str | None], nothing: dict[str, httpx.Response]) -> list[str]:
        role, kind = call
        want = expected(probe, role, kind, api)
        capture_id = world.captures[kind].id if kind else None
        if probe.spare and kind is not None and want == str(probe.ok):
            capture_id = world.spare(kind, role.name if probe.spare == "shared" else "")
        path = path_for(capture_id)
        response = send(world, role.client, probe, path, capture_id)
        got = outcome(response)
        where = f"{role.name}{f' on the {kind} capture' if kind else ''}: {probe.method} {path} ({label})"
        problems = []
        if got != want:
            problems.append(f"{where} was answered {got}, expected {want}: {response.text[:300]!r}")
        shown = response.content + response.headers.get("content-disposition", "").encode()
        problems += [f"{where} showed {leak}" for leak in leaks(world, role.rights, shown)]
        if role.name in nothing and want == "404" and not same_page(response, nothing[role.name]):
            problems.append(f"{where} was answered unlike for a capture that does not exist")
        return problems

    with ThreadPoolExecutor(4) as pool:
        # What a capture that does not exist is answered, to which a hidden one's answer must be
        # the same: for the roles told 404 on pages and on the API (a few: each costs requests).
        compared = [world.roles[name] for name in HIDDEN_COMPARED] if names_capture else []
        nothing = dict(zip(HIDDEN_COMPARED, pool.map(missing, compared), strict=False))
        found = pool.map(lambda call: one(call, nothing), calls)
        return [problem for problems in found for problem in problems]


def fill(
    world: World, route: str, names: tuple[str, ...], probe: Probe, capture_id: int | None
) -> dict[str, Any]:
    unknown = [name for name in names if name not in ARGUMENTS and name not in probe.args]
    assert not unknown, f"{route}: say in ARGUMENTS which value stands for {unknown}"
    return {
        name: probe.args[name] if name in probe.args else ARGUMENTS[name](world, capture_id or 0)
        for name in names
    }


@pytest.mark.parametrize("name", sorted(PAGES))
def test_pages_answer_every_role_as_the_rules_say(world: World, name: str) -> None:
    route = site_routes().get(name)
    assert route is not None, f"PAGES lists {name}, which no longer exists"
    problems = []
    for probe in PAGES[name]:

        def path_for(capture_id: int | None, probe: Probe = probe) -> str:
            if name == "admin":
                return reverse("admin:index")
            return reverse(name, kwargs=fill(world, name, route.arguments, probe, capture_id))

        names_capture = "capture_id" in route.arguments
        problems += check(world, probe, name, path_for, api=False, names_capture=names_capture)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("method", "path"), sorted(API), ids=[f"{m} {p}" for m, p in sorted(API)])
def test_the_api_answers_every_role_as_the_rules_say(world: World, method: str, path: str) -> None:
    probe = replace(API[(method, path)], method=method)
    names = tuple(re.findall(r"{(\w+)}", path))

    def path_for(capture_id: int | None) -> str:
        return path.format_map(fill(world, path, names, probe, capture_id))

    label = f"{method} {path}"
    problems = check(world, probe, label, path_for, api=True, names_capture="capture_id" in names)
    assert not problems, "\n".join(problems)


async def websocket_problems(world: World, route: str, role: Role, kind: str) -> list[str]:
    """Open the websocket as the role; return what went against the rules."""
    capture_id = world.captures[kind].id
    path = re.sub(r"<(?:\w+:)?capture_id>", str(capture_id), route)
    path = re.sub(r"<(?:\w+:)?live_id>", str(world.live_capture()), path)
    allowed = expected(Probe(WEBSOCKETS[route]), role, kind, api=True) == "200"
    where = f"{role.name} on the {kind} capture: /{path}"
    url = f"ws://127.0.0.1:{world.server.port}/{path}"
    try:
        async with connect(url, origin=Origin(world.server.url), additional_headers=role.ws_headers) as ws:
            try:
                async with asyncio.timeout(30 if allowed else 3):
                    message = await ws.recv()
            except ConnectionClosed:
                return [f"{where} was closed before any message"] if allowed else []
            except TimeoutError:
                return [f"{where} was sent nothing" if allowed else f"{where} was left open"]
    except InvalidStatus as refused:
        return [f"{where} was refused ({refused.response.status_code})"] if allowed else []
    text = message.encode() if isinstance(message, str) else message
    problems = [f"{where} was sent {leak}" for leak in leaks(world, role.rights, text)]
    return problems if allowed else [f"{where} was sent {text[:200]!r}", *problems]


@pytest.mark.parametrize("route", sorted(WEBSOCKETS))
async def test_websockets_open_to_readers_only(world: World, route: str) -> None:
    found = await asyncio.gather(
        *(
            websocket_problems(world, route, role, kind)
            for role in world.roles.values()
            for kind in world.captures
        )
    )
    problems = [problem for each in found for problem in each]
    assert not problems, "\n".join(problems)


# CSRF, cookies and keys


def unsafe_requests(world: World, capture_id: int) -> list[tuple[Probe, str]]:
    """Return every unsafe request of the tables (and signing out), to the capture if named."""
    found = [(Probe("none", "POST"), reverse("logout"))]
    routes = site_routes()
    for name, probes in PAGES.items():
        for probe in probes:
            if probe.method not in SAFE_METHODS:
                arguments = fill(world, name, routes[name].arguments, probe, capture_id)
                found.append((probe, reverse(name, kwargs=arguments)))
    for (method, path), probe in API.items():
        if method not in SAFE_METHODS:
            names = tuple(re.findall(r"{(\w+)}", path))
            found.append(
                (replace(probe, method=method), path.format_map(fill(world, path, names, probe, capture_id)))
            )
    return found


def test_unsafe_requests_of_a_session_need_its_csrf_token(world: World) -> None:
    # A capture of its own: were a check missing, these requests of its owner would delete it.
    capture_id = world.spare("private")
    session = world.sessions["owner"]
    problems = []
    with browser(world.server, session, csrf=False) as forged, browser(world.server, session) as page:
        for probe, path in unsafe_requests(world, capture_id):
            for client, probe_as, how in (
                (forged, probe, "without a CSRF token"),
                (
                    page,
                    replace(probe, headers={**probe.headers, "X-CSRFToken": "x" * 32}),
                    "with another token",
                ),
            ):
                answer = send(world, client, probe_as, path, capture_id)
                # A route for tokens only refuses the session whatever its CSRF token.
                refused = 401 if probe.need == "token" else 403
                if answer.status_code != refused:
                    problems.append(f"{probe.method} {path} {how}: {answer.status_code}")
                elif refused == 403 and path.startswith("/api/") and "CSRF" not in answer.json()["error"]:
                    problems.append(f"{probe.method} {path} {how}: {answer.text}")
        assert page.get("/account/").status_code == 200, "the session was signed out"
    assert world.owner().get(f"/api/captures/{capture_id}/marks").json() == {"frames": []}
    assert not problems, "\n".join(problems)


def test_a_token_needs_no_csrf_token_even_beside_a_session_cookie(world: World) -> None:
    """Scripts that keep cookies send a session along with their token."""
    capture_id = world.spare("private")
    session = world.sessions["other user"]
    with browser(world.server, session, csrf=False) as script:
        script.headers["Authorization"] = f"Token {world.tokens['keys'][OWNER]}"
        assert script.put(f"/api/captures/{capture_id}/marks/2").status_code == 204
        assert script.get(f"/api/captures/{capture_id}/marks").json() == {"frames": [2]}
        assert script.post("/account/tokens/", data={"name": "beside a session"}).status_code == 302
        listed = script.get("/api/captures/", params={"q": "access"})
        assert listed.status_code == 200
        assert {c["id"] for c in listed.json()} >= {c.id for c in world.captures.values()}
        script.headers["Authorization"] = f"Token {world.tokens['keys'][OUTSIDER]}"
        for capture in world.captures.values():
            assert script.get(f"/api/captures/{capture.id}/").status_code == 404
        assert script.get("/api/captures/", params={"q": "access"}).json() == []


def set_cookie(response: httpx.Response, name: str) -> dict[str, str]:
    """Return the attributes of the Set-Cookie header for the cookie, lowercase names."""
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}="))
    parts = [part.strip() for part in header.split(";")[1:]]
    return {key.lower(): value for key, _, value in (part.partition("=") for part in parts)}


def test_session_cookies_are_http_only_and_same_site_lax(world: World) -> None:
    signed_in = set_cookie(sign_in(world.server, TEAMMATE), "sessionid")
    with httpx.Client(base_url=world.server.url) as stranger:
        opened = set_cookie(stranger.get(f"/s/{world.links['link']}/"), "sessionid")
        csrf = set_cookie(stranger.get("/accounts/login/"), "csrftoken")
    for attributes in (signed_in, opened):
        assert "httponly" in attributes
        assert attributes["samesite"] == "Lax"
    assert csrf["samesite"] == "Lax"


def test_share_keys_are_long_random_and_url_safe(world: World) -> None:
    keys = [*world.links.values(), share(world.owner(), world.captures["link"])]
    for key in keys:
        assert len(key) >= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", key), key
    assert len(set(keys)) == len(keys)
    assert len({key[:12] for key in keys}) == len(keys)


# Share links and tokens


def test_opening_a_link_shows_its_view_while_it_is_valid(world: World) -> None:
    capture = world.captures["link"]
    with httpx.Client(base_url=world.server.url, timeout=60) as stranger:
        assert stranger.get(capture.url).headers["location"].startswith("/accounts/login/")
        opened = stranger.get(f"/s/{world.links['link']}/")
        assert opened.status_code == 302 and opened.headers["location"] == capture.url
        assert stranger.get(capture.url).status_code == 200
        for gone in ("revoked", "expired"):
            closed = stranger.get(f"/s/{world.links[gone]}/")
            assert closed.status_code == 410, gone
            assert capture.name not in closed.text
        key = world.links["link"]
        for wrong in (
            secrets.token_urlsafe(32),
            key[:12] + secrets.token_urlsafe(32)[: len(key) - 12],
            key[:-1],
        ):
            assert stranger.get(f"/s/{wrong}/").status_code == 404


def link_rows(client: httpx.Client, capture: Capture) -> dict[str, int]:
    """Return the active links the sharing page lists, key → id."""
    page = client.get(f"{capture.url}sharing/").text
    rows = re.findall(r'data-link-id="(\d+)">\s*<td><input class="link-url" value="([^"]+)"', page)
    return {url.rstrip("/").rsplit("/", 1)[-1]: int(link_id) for link_id, url in rows}


def test_a_teammate_revokes_their_own_links_only(world: World) -> None:
    capture = world.captures["team"]
    teammate = world.roles["teammate"].client
    theirs = share(teammate, capture)
    links = link_rows(world.owner(), capture)
    for key in (world.links["team"], theirs):
        revoked = teammate.post(f"{capture.url}share/{links[key]}/revoke/")
        assert revoked.status_code == 302
    still = link_rows(world.owner(), capture)
    assert world.links["team"] in still and theirs not in still


def test_nobody_revokes_another_users_token(world: World) -> None:
    owners = world.tokens["ids"][OWNER]
    for person in ("other user", "teammate", "other user's token"):
        assert world.roles[person].client.post(f"/account/tokens/{owners}/revoke/").status_code == 302
    assert world.owner().get("/api/captures/").status_code == 200


def test_a_revoked_token_is_refused_everywhere_with_401(world: World) -> None:
    revoked = world.roles["revoked token"].client
    for path in ("/api/captures/", "/", "/accounts/login/", f"/s/{world.links['link']}/"):
        answer = revoked.get(path)
        assert answer.status_code == 401, path
        assert answer.json() == {"error": "invalid or revoked API token"}
    assert revoked.get("/api/captures/", headers={"Authorization": "Token short"}).status_code == 401


def test_the_matrix_left_the_captures_as_they_were(world: World) -> None:
    owner = world.owner()
    for kind, capture in world.captures.items():
        detail = owner.get(f"/api/captures/{capture.id}/").json()
        assert detail["keylog_secrets"] == len(world.key_markers) // 3, kind
        assert owner.get(f"/api/captures/{capture.id}/marks").json() == {"frames": [1]}, kind
        notes = [a["text"] for a in owner.get(f"/api/captures/{capture.id}/annotations").json()]
        assert capture.annotation in notes, kind
        for role in world.roles.values():
            want = expected(Probe("read"), role, kind, api=True)
            assert outcome(role.client.get(f"/api/captures/{capture.id}/")) == want, (role.name, kind)
