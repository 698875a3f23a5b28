"""The import_capture command stores local files as an upload would, one JSON line per file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import OWNER, Server, all_packets, sample_capture, tshark_rows

pytestmark = pytest.mark.engine

COLUMNS = ["number", "time", "source", "destination", "protocol", "length", "info"]


def as_columns(row: dict[str, Any]) -> list[str]:
    return [str(row[column]) for column in COLUMNS]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def stored_files(server: Server) -> set[Path]:
    if not server.captures_dir.exists():  # created by the first upload
        return set()
    return {path for path in server.captures_dir.iterdir() if path.is_file()}


def test_it_imports_good_files_and_reports_the_bad_one(api: httpx.Client, server: Server) -> None:
    good = [sample_capture("dns-tcp.pcap"), sample_capture("tcp_dupack.pcapng")]
    bad = sample_capture("MANIFEST.tsv")
    before_files = stored_files(server)

    result = server.manage("import_capture", "--owner", OWNER, str(good[0]), str(good[1]), str(bad))
    assert result.returncode != 0, result.stdout + result.stderr
    lines = json_lines(result.stdout)
    assert len(lines) == 3, result.stdout
    assert lines[2] == {"path": str(bad), "error": "not a capture file"}
    listed = {capture["id"]: capture for capture in api.get("/api/captures/").json()}
    for path, line in zip(good, lines[:2], strict=True):
        assert "error" not in line, line
        assert line["path"] == str(path)
        assert line["url"] == f"/captures/{line['id']}/"
        assert line["id"] in listed
        capture = listed[line["id"]]
        assert capture["name"] == path.name
        assert capture["size"] == path.stat().st_size
        assert capture["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        expected = tshark_rows(path)
        assert capture["packets"] == len(expected)
        assert [as_columns(row) for row in all_packets(api, line["id"])] == expected
        assert api.get(f"/api/captures/{line['id']}/download").content == path.read_bytes()
    # Two files moved in; the refused one left nothing, in the folder or in staging.
    assert len(stored_files(server) - before_files) == 2
    staging = server.captures_dir / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_all_good_files_exit_zero(api: httpx.Client, server: Server) -> None:
    path = sample_capture("truncated_dns_2.pcap")
    result = server.manage("import_capture", "--owner", OWNER, str(path))
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result.stdout)
    assert line["path"] == str(path)
    assert line["warning"] == "file is truncated after packet 1: 1 packet readable"
    capture = api.get(f"/api/captures/{line['id']}/").json()
    assert capture["packets"] == 1
    assert capture["warning"] == line["warning"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(16) + b"\x01\x02\x03\x04\x05\x06", "truncated"),
        (b'{"not": "packets"}\n', "not a capture file"),
    ],
    ids=["missing", "truncated-header", "json"],
)
def test_a_bad_file_alone_exits_non_zero_with_its_error(
    api: httpx.Client, server: Server, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.pcap"
    if content is not None:
        path.write_bytes(content)
    before = {capture["id"] for capture in api.get("/api/captures/").json()}
    result = server.manage("import_capture", "--owner", OWNER, str(path))
    assert result.returncode != 0
    (line,) = json_lines(result.stdout)
    assert set(line) == {"path", "error"}
    assert line["path"] == str(path)
    assert message in line["error"], line
    assert {capture["id"] for capture in api.get("/api/captures/").json()} == before


def test_a_file_over_the_limit_is_not_imported(api: httpx.Client, server: Server, tmp_path: Path) -> None:
    path = tmp_path / "huge.pcap"
    with open(path, "wb") as handle:
        handle.write(sample_capture("dns-udp.pcap").read_bytes())
        handle.truncate(8 * 1024 * 1024 + 1)
    before = stored_files(server)
    result = server.manage("import_capture", "--owner", OWNER, str(path))
    assert result.returncode != 0
    (line,) = json_lines(result.stdout)
    assert line == {"path": str(path), "error": "larger than the configured limit of 8 MB"}
    assert stored_files(server) == before


def test_without_an_owner_only_staff_see_the_import(api: httpx.Client, server: Server) -> None:
    result = server.manage("import_capture", str(sample_capture("arp_resolution.pcapng")))
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result.stdout)
    assert api.get(f"/api/captures/{line['id']}/").status_code == 404
    server.create_user("importer-admin", staff=True)
    with server.client("importer-admin") as staff:
        assert staff.get(f"/api/captures/{line['id']}/").status_code == 200
    unknown = server.manage(
        "import_capture", "--owner", "nobody-here", str(sample_capture("arp_resolution.pcapng"))
    )
    assert unknown.returncode != 0
    assert "no user called 'nobody-here'" in unknown.stderr
