"""Export Specified Packets and Export Objects → HTTP equal what tshark writes itself."""

from __future__ import annotations

import io
import subprocess
import time
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .conftest import Server, sample_capture, tshark, tshark_numbers, upload

pytestmark = pytest.mark.engine

# (capture, display filter): the exported frames are those tshark -2 -Y displays.
CASES = [
    ("http_espn.pcapng", "http"),
    ("bro.org.pcap", "dns"),  # displays nothing: a pcapng without packets
    ("bro.org.pcap", "http"),
    ("tcp-handshake-nano.pcap", ""),
]


@pytest.fixture(scope="module")
def ids(api: httpx.Client) -> dict[str, int]:
    found = {}
    for name, _ in CASES:
        answer = upload(api, sample_capture(name))
        assert answer.status_code == 201, answer.text
        found[name] = int(answer.json()["id"])
    return found


def frames(path: Path, display_filter: str = "") -> list[tuple[str, str]]:
    """Return (epoch time, length) of every frame tshark -2 displays."""
    args = ["-2", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"]
    if display_filter:
        args += ["-Y", display_filter]
    return [(time, length) for time, length in (line.split("\t") for line in tshark(*args).splitlines())]


def file_type(path: Path) -> str:
    result = subprocess.run(["capinfos", "-t", str(path)], capture_output=True, text=True, timeout=60)
    return result.stdout


def export(api: httpx.Client, capture_id: int, tmp_path: Path, **params: str) -> Path:
    response = api.get(f"/api/captures/{capture_id}/export", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].startswith("attachment")
    path = tmp_path / "export.pcapng"
    path.write_bytes(response.content)
    return path


@pytest.mark.parametrize(("name", "display_filter"), CASES)
def test_export_holds_the_displayed_frames(
    api: httpx.Client, ids: dict[str, int], tmp_path: Path, name: str, display_filter: str
) -> None:
    response = api.get(f"/api/captures/{ids[name]}/export", params={"filter": display_filter})
    assert response.status_code == 200, response.text
    stem = name.rsplit(".", 1)[0]
    assert f"{stem}-export.pcapng" in response.headers["content-disposition"]
    exported = tmp_path / "export.pcapng"
    exported.write_bytes(response.content)
    assert "pcapng" in file_type(exported)
    expected = frames(sample_capture(name), display_filter)
    assert len(expected) == len(tshark_numbers(sample_capture(name), display_filter or "frame"))
    assert frames(exported) == expected


def test_export_range(api: httpx.Client, ids: dict[str, int], tmp_path: Path) -> None:
    name = "http_espn.pcapng"
    numbers = tshark_numbers(sample_capture(name), "http")
    first, last = numbers[2], numbers[-3]
    path = export(api, ids[name], tmp_path, filter="http", first=str(first), last=str(last))
    expected = frames(sample_capture(name), f"http && frame.number >= {first} && frame.number <= {last}")
    assert len(expected) == len(numbers) - 4
    assert frames(path) == expected
    # The form's "all displayed" choice ignores the range fields.
    every = export(api, ids[name], tmp_path, filter="http", range="all", first=str(first), last="")
    assert len(frames(every)) == len(numbers)
    # A range holding no displayed frame: a valid pcapng without packets.
    empty = export(api, ids[name], tmp_path, filter="http", first="1000000")
    assert "pcapng" in file_type(empty)
    assert frames(empty) == []


@pytest.mark.parametrize(
    "params",
    [
        {"filter": "http &&"},
        {"filter": "no_such_field"},
        {"first": "10", "last": "2"},
        {"first": "x"},
        {"first": "0"},
    ],
)
def test_export_refuses_bad_requests(api: httpx.Client, ids: dict[str, int], params: dict[str, str]) -> None:
    response = api.get(f"/api/captures/{ids['http_espn.pcapng']}/export", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def test_a_direct_export_is_removed_after_download(
    api: httpx.Client, ids: dict[str, int], server: Server
) -> None:
    # Exports queued for later download (the export page, POST .../exports) are kept an hour;
    # one answered in its own request is not.
    folder = server.captures_dir / ".exports"
    before = set(folder.glob("*"))
    response = api.get(f"/api/captures/{ids['tcp-handshake-nano.pcap']}/export")
    assert response.status_code == 200
    # The file goes once the last block is read, which can be just after the client has it all.
    deadline = time.monotonic() + 10
    while set(folder.glob("*")) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(folder.glob("*")) - before == set()


@pytest.fixture(scope="module")
def tshark_objects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("objects")
    tshark("-2", "-q", "-r", str(sample_capture("http_espn.pcapng")), "--export-objects", f"http,{directory}")
    return directory


def test_http_objects_equal_tshark_export(
    api: httpx.Client, ids: dict[str, int], tshark_objects: Path
) -> None:
    capture_id = ids["http_espn.pcapng"]
    response = api.get(f"/api/captures/{capture_id}/http-objects")
    assert response.status_code == 200, response.text
    objects = response.json()
    files = [p for p in tshark_objects.iterdir() if p.is_file()]
    assert len(objects) == len(files) > 1
    assert Counter(o["size"] for o in objects) == Counter(p.stat().st_size for p in files)
    assert {"packet", "hostname", "content_type", "filename", "size"} <= set(objects[0])

    # An object whose size no other has: its bytes are the file tshark wrote of that size.
    sizes = Counter(o["size"] for o in objects)
    chosen = max((o for o in objects if sizes[o["size"]] == 1), key=lambda o: o["size"])
    body = api.get(f"/api/captures/{capture_id}/http-objects/{chosen['index']}")
    assert body.status_code == 200, body.text
    assert body.headers["content-disposition"].startswith("attachment")
    expected = next(p for p in files if p.stat().st_size == chosen["size"])
    assert body.content == expected.read_bytes()

    missing = api.get(f"/api/captures/{capture_id}/http-objects/{len(objects)}")
    assert missing.status_code == 400


def test_http_objects_zip(api: httpx.Client, ids: dict[str, int], tshark_objects: Path) -> None:
    response = api.get(f"/api/captures/{ids['http_espn.pcapng']}/http-objects.zip")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        entries = archive.infolist()
        names = [entry.filename for entry in entries]
        sizes = Counter(entry.file_size for entry in entries)
    files = [p for p in tshark_objects.iterdir() if p.is_file()]
    assert len(entries) == len(files)
    assert len(set(names)) == len(names)
    assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in names)
    assert sizes == Counter(p.stat().st_size for p in files)


def test_pages(api: httpx.Client, ids: dict[str, int]) -> None:
    capture_id = ids["http_espn.pcapng"]
    page = api.get(f"/captures/{capture_id}/", params={"filter": "http"})
    assert f'href="/captures/{capture_id}/export/?filter=http"' in page.text
    form = api.get(f"/captures/{capture_id}/export/", params={"filter": "http"})
    assert form.status_code == 200
    assert f'action="/captures/{capture_id}/exports/"' in form.text
    assert 'value="http"' in form.text
    listing = api.get(f"/captures/{capture_id}/http-objects/")
    assert listing.status_code == 200
    assert f"/api/captures/{capture_id}/http-objects/0" in listing.text
    assert f"/api/captures/{capture_id}/http-objects.zip" in listing.text
