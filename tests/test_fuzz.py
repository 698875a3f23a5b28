"""A thousand damaged captures through upload and exploration: each explorable or clearly refused.

The files come from bench.fuzz (the same generator as `python -m bench.fuzz --count N`), seeded,
so a failure names a file that the same seed builds again. The outcome table is printed and
written to test-artifacts/fuzz-outcomes.txt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench import fuzz

from .conftest import ARTIFACTS, SAMPLE_CAPTURES, Server, sample_capture, tshark_numbers, upload

pytestmark = [pytest.mark.engine, pytest.mark.slow]

FILES = 1000
SEED = 1
MAX_PROCESSES = 8
# Longer than the server's own engine timeout: a request still unanswered by then is hung.
REQUEST_TIMEOUT = 30
CLIENT_TIMEOUT = 90


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("fuzz"),
        ENGINE_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
        ENGINE_MAX_PROCESSES=str(MAX_PROCESSES),
        # One user uploads a thousand files within minutes here; limits are tested elsewhere.
        RATE_LIMIT_UPLOADS="0",
        RATE_LIMIT_FILTERS="0",
        UPLOAD_MAX_CAPTURES_PER_USER="0",
    )
    server.start()
    yield server
    server.stop()


def sharkd_children(server: Server) -> list[int]:
    """Return the server's sharkd processes that have not ended (a zombie has, unreaped)."""
    running = []
    for pid in server.children():
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if name == "sharkd" and state != "Z":
            running.append(pid)
    return running


@pytest.mark.timeout(600)
async def test_damaged_captures_are_explorable_or_refused_with_a_clear_message(fuzz_server: Server) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(
        base_url=fuzz_server.url, headers=fuzz_server.owner_headers(), timeout=CLIENT_TIMEOUT
    ) as client:
        outcomes = await fuzz.run(client, fuzz.samples(SAMPLE_CAPTURES, FILES, SEED), workers=8, batch_size=4)
    seconds = time.monotonic() - started
    table = fuzz.outcome_table(outcomes)
    report = f"{len(outcomes)} damaged files (seed {SEED}) in {seconds:.0f} s\n\n{table}\n"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fuzz-outcomes.txt").write_text(report)
    print(report)

    assert len(outcomes) == FILES, report
    assert [outcome for outcome in outcomes if outcome.failed] == [], report
    # Messages are for the person looking at the capture: none names a file on the server.
    assert not [outcome for outcome in outcomes if fuzz.SERVER_FILE_FLAG in outcome.outcome], report
    assert sum(outcome.outcome.startswith("explorable") for outcome in outcomes) > FILES / 3, report

    # The server still answers, still dissects, and kept to its limit of sessions.
    with fuzz_server.client("owner") as api:
        path = sample_capture("http_google.pcapng")
        [capture] = upload(api, path).json()["captures"]
        page = api.get(f"/api/captures/{capture['id']}/packets", params={"filter": "http"})
        assert page.status_code == 200, page.text
        assert page.json()["displayed"] == len(tshark_numbers(path, "http"))
    # The capture sessions, plus the one that checks filters. A session closed to make room for
    # the last capture is killed at once but may take a moment to end on a busy machine.
    deadline = time.monotonic() + 10
    while len(running := sharkd_children(fuzz_server)) > MAX_PROCESSES + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(running) <= MAX_PROCESSES + 1, running
    log = (fuzz_server.workdir / "server.log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
