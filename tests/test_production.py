"""The production profile: DEBUG=0 with a key of its own, static files served by the app, and
the reference deployment (Dockerfile, docker-compose.yml) on PostgreSQL and Redis."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from django.core import checks

from .conftest import ROOT, Server
from .services import PostgresServer, RedisServer

PRODUCTION_KEY = "a production key that is long and not the development one"


def production_env(tmp: Path) -> dict[str, str]:
    return {"DEBUG": "0", "SECRET_KEY": PRODUCTION_KEY, "STATIC_ROOT": str(tmp / "static")}


def test_it_refuses_to_start_with_debug_off_and_the_development_key(tmp_path: Path) -> None:
    server = Server(tmp_path, DEBUG="0")
    server.env.pop("SECRET_KEY", None)
    refused = server.manage("check")
    assert refused.returncode != 0
    assert "DEBUG=0 needs a SECRET_KEY of its own" in refused.stderr
    daphne = subprocess.run(
        [sys.executable, "-m", "daphne", "-p", str(server.port), "explorer_site.asgi:application"],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert daphne.returncode != 0
    assert "DEBUG=0 needs a SECRET_KEY of its own" in daphne.stderr


def deploy_warnings(server: Server) -> set[str]:
    checked = server.manage("check", "--deploy")
    assert checked.returncode == 0, checked.stderr
    return set(re.findall(r"\((security\.W\d+)\)", checked.stdout + checked.stderr))


def test_the_deploy_checks_find_the_middleware_and_ask_for_https(tmp_path: Path) -> None:
    warnings = deploy_warnings(Server(tmp_path, **production_env(tmp_path)))
    # Django's checks find its security, CSRF and clickjacking middleware in the project's
    # subclasses of them...
    assert not warnings & {"security.W001", "security.W002", "security.W003"}, warnings
    # ...and so check the settings those apply: HSTS, the HTTPS redirect, secure cookies.
    assert {"security.W004", "security.W008", "security.W012", "security.W016"} <= warnings


def test_https_behind_a_proxy_passes_the_deploy_checks(tmp_path: Path) -> None:
    server = Server(tmp_path, **production_env(tmp_path), HTTPS="1", SECURE_HSTS_SECONDS="31536000")
    # Left to each site: HSTS for every subdomain, and the browsers' preload list.
    assert deploy_warnings(server) <= {"security.W005", "security.W021"}


def test_a_middleware_left_out_is_still_reported(settings: Any) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != "explorer.middleware.SecurityMiddleware"]
    found = {message.id for message in checks.run_checks(include_deployment_checks=True, tags=["security"])}
    assert "security.W001" in found


def test_https_behind_a_proxy_redirects_plain_http_and_keeps_cookies_to_https(tmp_path: Path) -> None:
    server = Server(tmp_path, **production_env(tmp_path), HTTPS="1", SECURE_HSTS_SECONDS="3600")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as browser:
            plain = browser.get("/accounts/login/")
            assert plain.status_code == 301
            assert plain.headers["location"] == f"https://127.0.0.1:{server.port}/accounts/login/"
            # What the proxy passes on from an HTTPS request.
            secure = browser.get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
            assert secure.status_code == 200
            assert secure.headers["strict-transport-security"] == "max-age=3600"
            cookies = secure.headers.get_list("set-cookie")
            assert cookies and all("; Secure" in cookie for cookie in cookies), cookies
    finally:
        server.stop()


@pytest.fixture(scope="module")
def production(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, redis_server: RedisServer
) -> Iterator[Server]:
    """A server as deployed: DEBUG=0, PostgreSQL, Redis, and static files collected first."""
    workdir = tmp_path_factory.mktemp("production")
    server = Server(
        workdir,
        **production_env(workdir),
        DATABASE_URL=postgres_server.create_database("production"),
        REDIS_URL=redis_server.new_database_url(),
    )
    collected = server.manage("collectstatic", "--noinput")
    assert collected.returncode == 0, collected.stderr
    server.start()
    yield server
    server.stop()


@pytest.mark.services
def test_daphne_serves_the_collected_static_files_with_debug_off(production: Server) -> None:
    with httpx.Client(base_url=production.url, timeout=60) as browser:
        login = browser.get("/accounts/login/")
        assert login.status_code == 200, login.text
        linked = re.findall(r'(?:src|href)="(/static/[^"]+)"', login.text)
        assert "/static/explorer/base.js" in linked and "/static/explorer/explorer.css" in linked
        for url in linked:
            served = browser.get(url)
            assert served.status_code == 200, url
            source = ROOT / "static" / url.removeprefix("/static/")
            if source.exists():
                assert served.content == source.read_bytes(), url
        assert browser.get("/static/explorer/base.js").headers["content-type"].startswith("text/javascript")
        assert browser.get("/static/explorer/no-such-file.js").status_code == 404


@pytest.mark.services
def test_errors_show_the_apps_pages_and_no_debug_details(production: Server) -> None:
    with httpx.Client(base_url=production.url, timeout=60) as browser:
        missing = browser.get("/no/such/page/")
        assert missing.status_code == 404
        assert "Traceback" not in missing.text and "URLconf" not in missing.text
        # A host outside ALLOWED_HOSTS is refused instead of answered.
        assert browser.get("/accounts/login/", headers={"Host": "elsewhere.example"}).status_code == 400


@pytest.mark.services
def test_the_static_files_are_missing_until_collected(
    tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    # Why collectstatic is a step of the deployment: DEBUG=0 serves only what it collected.
    server = Server(
        tmp_path,
        **production_env(tmp_path),
        DATABASE_URL=postgres_server.create_database("uncollected"),
        REDIS_URL=redis_server.new_database_url(),
    )
    server.start()
    try:
        assert httpx.get(server.url + "/static/explorer/base.js", timeout=60).status_code == 404
    finally:
        server.stop()


# ---- the reference deployment ----------------------------------------------------------------


def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def test_the_compose_file_runs_the_app_on_postgresql_and_redis_with_a_captures_volume() -> None:
    document = compose()
    services = document["services"]
    assert {"app", "engine", "worker", "migrate", "postgres", "redis"} <= set(services)
    app = services["app"]
    environment = app["environment"]
    assert environment["DEBUG"] == "0"
    assert (
        environment["DATABASE_URL"].startswith("postgres://")
        and "@postgres:5432/" in environment["DATABASE_URL"]
    )
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")
    volume, mount = app["volumes"][0].split(":")
    assert mount == environment["CAPTURES_DIR"] and volume in document["volumes"]
    assert app["command"][:1] == ["daphne"] and "explorer_site.asgi:application" in app["command"]
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["environment"] == environment
    worker = services["worker"]
    assert worker["command"][-1] == "run_worker" and environment["BACKGROUND_WORKER"] == "1"
    assert worker["environment"] == environment and worker["volumes"] == app["volumes"]
    # One engine service holds the sharkd sessions of every app process, on the same files.
    engine = services["engine"]
    assert engine["command"][1:3] == ["manage.py", "run_engine"]
    listen = engine["command"][engine["command"].index("--listen") + 1]
    assert environment["ENGINE_URL"] == "tcp://engine:" + listen.rsplit(":", 1)[1]
    assert engine["environment"] == environment and engine["volumes"] == app["volumes"]
    # Every setting the deployment gives is one the app reads.
    settings = (ROOT / "explorer_site" / "settings.py").read_text()
    for name in environment:
        assert f'"{name}"' in settings, name


def test_the_image_is_debian_12_with_its_tshark_and_collected_static_files() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:12\b", dockerfile, re.M)
    assert re.search(r"apt-get install .*\btshark\b", dockerfile)
    assert "collectstatic --noinput" in dockerfile
    assert "requirements.txt" in dockerfile
    # The image installs the runtime part of requirements.txt: it must hold the server's drivers.
    runtime = (ROOT / "requirements.txt").read_text().split("# Tests and tooling")[0]
    for package in ("daphne==", "psycopg[binary]==", "channels-redis==", "redis==", "whitenoise=="):
        assert package in runtime, package


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker is not installed")
def test_docker_compose_accepts_the_file() -> None:
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip("docker has no compose plugin")
    checked = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "SECRET_KEY": PRODUCTION_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
