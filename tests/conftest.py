"""Fixtures: a real daphne server on a free port, the sample captures, and tshark's reference output."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

if TYPE_CHECKING:
    from tests.services import Services

pytest_plugins = ["tests.services"]

ROOT = Path(__file__).resolve().parent.parent
# Real third-party captures kept with the tests; MANIFEST.tsv gives each one's source and licence.
SAMPLE_CAPTURES = ROOT / "tests" / "captures"
ARTIFACTS = ROOT / "test-artifacts"
# Small enough that a test can exceed it cheaply; every sample capture is below it.
TEST_UPLOAD_LIMIT_MB = 8

logging.getLogger("httpx").setLevel(logging.WARNING)


def sample_capture(name: str) -> Path:
    path = SAMPLE_CAPTURES / name
    assert path.exists(), f"missing sample capture {path}"
    return path


def repeated_synscan(folder: Path, copies: int) -> Path:
    """Write the sample SYN scan `copies` times over as one pcap (about 2,000 packets a copy)."""
    path = folder / f"synscan-x{copies}.pcap"
    source = str(sample_capture("synscan.pcapng"))
    subprocess.run(["mergecap", "-F", "pcap", "-a", "-w", str(path)] + [source] * copies, check=True)
    return path


def sample_capture_names() -> list[str]:
    """Return every sample capture file (everything but the manifest and key logs)."""
    return sorted(p.name for p in SAMPLE_CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Most tests act as this user; test_access.py adds the other roles.
OWNER = "owner"
PASSWORD = "a long test password"  # noqa: S105


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--services",
        action="store_true",
        help="serve every test server from PostgreSQL and Redis (tests/services.py) instead of SQLite",
    )


class Server:
    """A daphne process serving the explorer with its own database and capture folder."""

    # With --services: PostgreSQL and Redis, where each server gets databases of its own.
    services: Services | None = None
    # The engine service the server sends its engine work to (ENGINE_URL), if any.
    engine: EngineService | None = None

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.captures_dir = Path(env.get("CAPTURES_DIR", workdir / "captures"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if "DATABASE_URL" in env or self.services is None:
            backing = {"DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}"}
        else:
            backing = self.services.new_server_env()
        self.env = {
            **os.environ,
            **backing,
            "CAPTURES_DIR": str(self.captures_dir),
            "MAX_UPLOAD_MB": str(TEST_UPLOAD_LIMIT_MB),
            "ENGINE_IDLE_SECONDS": "120",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.owner_token: str | None = None
        # A command that runs the server, such as unshare or prlimit (it must exec the server).
        self.command_prefix: list[str] = []

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def create_user(self, username: str, *, staff: bool = False, teams: tuple[str, ...] = ()) -> None:
        """Create a user with PASSWORD, staff or not, member of these teams (groups)."""
        code = (
            "from django.contrib.auth.models import Group, User\n"
            f"user = User.objects.create_user({username!r}, password={PASSWORD!r}, is_staff={staff!r})\n"
            f"for name in {list(teams)!r}:\n"
            "    user.groups.add(Group.objects.get_or_create(name=name)[0])\n"
        )
        created = self.manage("shell", "-c", code)
        assert created.returncode == 0, created.stderr

    def token(self, username: str) -> str:
        """Return a new API token of the user, as `create_api_token` prints it."""
        made = self.manage("create_api_token", username)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    def owner_headers(self) -> dict[str, str]:
        """Headers with an API token of OWNER, made once per server."""
        if self.owner_token is None:
            self.owner_token = self.token(OWNER)
        return {"Authorization": f"Token {self.owner_token}"}

    def client(self, username: str | None = None) -> httpx.Client:
        """Return an API client with a token of username, or an anonymous one."""
        headers = {"Authorization": f"Token {self.token(username)}"} if username else {}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers)

    def session_cookies(self, username: str) -> dict[str, str]:
        """Sign in through the login form; return the session cookie (pages set their own CSRF cookie)."""
        with httpx.Client(base_url=self.url, timeout=60) as browser:
            browser.get("/accounts/login/")
            token = browser.cookies["csrftoken"]
            answer = browser.post(
                "/accounts/login/",
                data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
                headers={"Referer": self.url + "/accounts/login/"},
            )
            assert answer.status_code == 302, f"sign-in of {username} failed"
            return {"sessionid": browser.cookies["sessionid"]}

    def new_context(self, browser: Browser, username: str | None = OWNER, **options: Any) -> BrowserContext:
        """Return a browser context signed in as username (None: not signed in)."""
        context = browser.new_context(base_url=self.url, **options)
        if username:
            cookies = self.session_cookies(username)
            context.add_cookies([{"name": n, "value": v, "url": self.url} for n, v in cookies.items()])
        return context

    def start(self, *, new_database: bool = True) -> None:
        """Migrate the database and create OWNER (unless another server did), then serve."""
        if new_database:
            migrated = self.manage("migrate", "--noinput")
            assert migrated.returncode == 0, migrated.stderr
            self.create_user(OWNER)
        self.log = open(self.workdir / "server.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                *self.command_prefix,
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "explorer_site.asgi:application",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/api/captures/", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start: " + (self.workdir / "server.log").read_text())

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.log.close()
            escaped = self.escaped_exceptions()
            assert not escaped, "exceptions escaped the application:\n" + "\n".join(escaped)

    def escaped_exceptions(self) -> list[str]:
        """Return the exceptions the server logged as escaping the application (it answered 500)."""
        log = (self.workdir / "server.log").read_text(errors="replace")
        entries = log.split("Exception inside application: ")[1:]
        # The message, and the end of the traceback: where it was raised.
        return [entry if len(entry) < 4000 else f"{entry[:500]}\n...\n{entry[-3000:]}" for entry in entries]

    def children(self) -> list[int]:
        """Return the pids of the server's child processes (sharkd sessions, tshark)."""
        assert self.process is not None
        return children_of(self.process.pid)


class EngineService:
    """A `manage.py run_engine` process: the sharkd sessions of the servers given its ENGINE_URL."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.env = {**os.environ, **env, "ENGINE_URL": self.url}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = open(self.workdir / "engine.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "run_engine"],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        port = int(self.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("engine service did not start: " + (self.workdir / "engine.log").read_text())

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            self.log.close()
            self.process = None

    def children(self) -> list[int]:
        """Return the pids of the service's sharkd processes."""
        assert self.process is not None
        return children_of(self.process.pid)


def commands_of(pids: list[int]) -> list[str]:
    """Return the command names of the processes that are still there."""
    if not pids:
        return []
    listed = ["ps", "-o", "comm=", "-p", ",".join(map(str, pids))]
    return subprocess.run(listed, capture_output=True, text=True).stdout.split()


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(child) for child in out.stdout.split()]


@pytest.fixture(scope="session", autouse=True)
def server_services(request: pytest.FixtureRequest) -> Iterator[None]:
    """With --services, start PostgreSQL and Redis for every Server of the session."""
    if request.config.getoption("--services"):
        Server.services = request.getfixturevalue("services")
    yield
    Server.services = None


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def api(server: Server) -> Iterator[httpx.Client]:
    """An API client of OWNER, who uploads the captures most tests look at."""
    with server.client(OWNER) as client:
        yield client


# Debian's Chromium; Playwright's own browser download is not used.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


# Module-scoped: while Playwright's sync API is running it holds an event loop in this
# thread, which pytest-asyncio's tests in other modules could not start their own beside.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def upload(client: httpx.Client, path: Path, name: str | None = None) -> httpx.Response:
    with open(path, "rb") as handle:
        return client.post("/api/captures/", files={"file": (name or path.name, handle)})


@pytest.fixture(scope="session")
def uploaded(api: httpx.Client) -> dict[str, dict[str, Any]]:
    """Upload every sample capture once; map file name to the API's answer (or its errors)."""
    answers = {}
    for name in sample_capture_names():
        body = upload(api, sample_capture(name)).json()
        answers[name] = body["captures"][0] if body.get("captures") else body
    return answers


def tshark(*args: str) -> str:
    result = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=300, errors="replace")
    return result.stdout


COLUMN_FIELDS = [
    "_ws.col.No.",
    "_ws.col.Time",
    "_ws.col.Source",
    "_ws.col.Destination",
    "_ws.col.Protocol",
    "_ws.col.Length",
    "_ws.col.Info",
]


def tshark_rows(path: Path, display_filter: str = "", *options: str) -> list[list[str]]:
    """Return tshark's two-pass packet list (the seven default columns) for a file and filter."""
    args = ["-2", "-r", str(path), "-T", "fields", "-E", "separator=/t", *options]
    if display_filter:
        args += ["-Y", display_filter]
    for field in COLUMN_FIELDS:
        args += ["-e", field]
    return [line.split("\t", 6) for line in tshark(*args).splitlines() if line]


def tshark_numbers(path: Path, display_filter: str) -> list[int]:
    """Return the frame numbers tshark -2 -Y displays for a filter."""
    out = tshark("-2", "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", "frame.number")
    return [int(line) for line in out.split()]


def all_packets(client: httpx.Client, capture_id: int, **params: str) -> list[dict[str, Any]]:
    """Fetch every displayed packet of a capture through the API, page by page."""
    rows: list[dict[str, Any]] = []
    while True:
        page = client.get(
            f"/api/captures/{capture_id}/packets", params={**params, "offset": len(rows), "limit": 1000}
        )
        assert page.status_code == 200, page.text
        body = page.json()
        rows += body["packets"]
        if not body["packets"] or len(rows) >= body["displayed"]:
            return rows


def tshark_follow(
    path: Path, kind: str, stream: int, substream: int | None = None
) -> tuple[list[str], list[tuple[str, bytes]]]:
    """Return tshark's two nodes (client first) and its payloads as (side, bytes), in order."""
    selector = f"{stream},{substream}" if substream is not None else str(stream)
    out = tshark("-2", "-q", "-r", str(path), "-z", f"follow,{kind.lower()},raw,{selector}")
    lines = out.splitlines()
    rules = [index for index, line in enumerate(lines) if line.startswith("=====")]
    block = lines[rules[0] + 1 : rules[1]]
    nodes = [line.split(": ", 1)[1] for line in block if line.startswith("Node ")]
    data = [line for line in block if not line.startswith(("Follow:", "Filter:", "Node "))]
    # Raw output: one line of hex per payload; the server's lines are indented with a tab.
    segments = [
        ("server" if line.startswith("\t") else "client", bytes.fromhex(line.strip()))
        for line in data
        if line.strip()
    ]
    return nodes, segments
