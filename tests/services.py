"""Throwaway PostgreSQL and Redis servers for the tests, each in its own temporary folder.

Both run as child processes of the test session on free loopback ports, with nothing kept
on disk that matters (fsync off, no Redis snapshots) and are stopped when the session ends.
Without the binaries the tests that need them are skipped, except in CI (CI=true), where a
missing server is a failure: ./test installs Debian's postgresql and redis-server.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

START_TIMEOUT_S = 30.0
# Redis numbers its databases; each test server gets its own, so their rate-limit buckets
# and channel groups never meet unless a test shares one on purpose.
REDIS_DATABASES = 4096


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip the test that needs a missing server, or fail it in CI, where ./test installs it."""
    if in_ci():
        pytest.fail(f"{reason} (CI must have it: ./test installs it)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin_dir() -> Path | None:
    """Return the folder of initdb and postgres: on PATH, or Debian's newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres", path=str(Path(on_path).parent)):
        return Path(on_path).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def stop_process(process: subprocess.Popen[bytes], stop_signal: signal.Signals) -> None:
    """Ask a server to stop, then kill its whole process group if it does not within 10 s."""
    if process.poll() is not None:
        return
    process.send_signal(stop_signal)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class PostgresServer:
    """A PostgreSQL cluster made by initdb in a temporary folder, with trust authentication."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.workdir = Path(tempfile.mkdtemp(prefix="explorer-postgres-"))
        self.data_dir = self.workdir / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.database_numbers = itertools.count(1)
        # PostgreSQL refuses to run as root: as root, its own system user runs it.
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            owner = pwd.getpwnam(self.user)
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)

    def run_as_owner(self, args: list[str], **options: Any) -> subprocess.Popen[bytes]:
        # No inherited PG* variables pointing the server or initdb elsewhere.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        if self.user:
            options.update(user=self.user, group=self.user)
        return subprocess.Popen(args, env=env, **options)

    def start(self) -> None:
        with open(self.workdir / "initdb.log", "wb") as log:
            initdb = self.run_as_owner(
                [
                    str(self.bin_dir / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    "postgres",
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--no-sync",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
            if initdb.wait(120) != 0:
                raise RuntimeError("initdb failed: " + (self.workdir / "initdb.log").read_text())
        self.log = open(self.workdir / "postgres.log", "wb")  # noqa: SIM115
        self.process = self.run_as_owner(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.workdir}",
                # A throwaway cluster: durability only costs time here.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "PostgreSQL did not start: " + (self.workdir / "postgres.log").read_text()
                    ) from None
                time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "explorer") -> str:
        """Create an empty database; return its URL."""
        name = f"{prefix}_{next(self.database_numbers)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None:
            # SIGINT is PostgreSQL's fast shutdown: it ends open sessions instead of waiting.
            stop_process(self.process, signal.SIGINT)
            self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


class RedisServer:
    """A redis-server keeping nothing on disk."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.workdir = Path(tempfile.mkdtemp(prefix="explorer-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # Database 0 is the session's shared one (redis_url); the others go to one server each.
        self.database_numbers = itertools.count(1)

    def start(self) -> None:
        self.log = open(self.workdir / "redis.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--databases",
                str(REDIS_DATABASES),
                "--dir",
                str(self.workdir),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if redis.Redis.from_url(self.url(0), socket_connect_timeout=2).ping():
                    return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "redis-server did not start: " + (self.workdir / "redis.log").read_text()
                    ) from None
                time.sleep(0.05)

    def url(self, database: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def new_database_url(self) -> str:
        """Return the URL of a database no one else uses."""
        number = next(self.database_numbers)
        assert number < REDIS_DATABASES, "out of Redis databases"
        return self.url(number)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM)
            self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Services:
    """PostgreSQL and Redis together: what a test server needs to run as in production."""

    def __init__(self, postgres: PostgresServer, redis_server: RedisServer) -> None:
        self.postgres = postgres
        self.redis = redis_server

    def new_server_env(self) -> dict[str, str]:
        """Return DATABASE_URL and REDIS_URL of a database and a Redis database of its own."""
        return {"DATABASE_URL": self.postgres.create_database(), "REDIS_URL": self.redis.new_database_url()}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        unavailable("PostgreSQL is not installed (initdb and postgres not found)")
    assert bin_dir is not None
    server = PostgresServer(bin_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("Redis is not installed (redis-server not found)")
    assert binary is not None
    server = RedisServer(binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of an empty PostgreSQL database for the session."""
    return postgres_server.create_database("session")


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis database for the session (redis://127.0.0.1:PORT/0)."""
    return redis_server.url(0)


@pytest.fixture(scope="session")
def services(postgres_server: PostgresServer, redis_server: RedisServer) -> Services:
    return Services(postgres_server, redis_server)
