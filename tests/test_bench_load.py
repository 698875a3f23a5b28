"""The load benchmark, run small: every request answered, every upload stored and summarized."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.capture import BUILD_VERSION
from bench.load import NEW_FILTER

from .conftest import ROOT, SAMPLE_CAPTURES, tshark_numbers
from .services import PostgresServer, RedisServer

pytestmark = [pytest.mark.services, pytest.mark.engine, pytest.mark.slow]

PACKETS = 20_000
UPLOADS = 3


def test_a_small_load_run_answers_everything_and_loses_no_upload(
    tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    # The benchmark starts PostgreSQL and Redis of its own; the fixtures skip or fail without them.
    results_dir = tmp_path / "results"
    command = [
        sys.executable, "-m", "bench.load", "--packets", str(PACKETS), "--viewers", "5", "--seconds", "5",
        "--uploads", str(UPLOADS), "--upload-mb", "1", "--source-dir", str(SAMPLE_CAPTURES),
        "--data-dir", str(tmp_path / "data"), "--results-dir", str(results_dir),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((results_dir / "load.json").read_text())
    viewers = results["viewers"]
    assert viewers["errors"] == 0, viewers["error_samples"]
    assert viewers["displayed"][""] == PACKETS
    assert viewers["page"]["count"] > 0 and viewers["details"]["count"] > 0
    assert viewers["page"]["p50_s"] <= viewers["page"]["p95_s"] <= viewers["page"]["max_s"]
    built = tmp_path / "data" / f"capture-{PACKETS}-v{BUILD_VERSION}.pcap"
    assert viewers["new_filter"]["displayed"] == len(tshark_numbers(built, NEW_FILTER))

    uploads = results["uploads"]
    assert uploads["stored"] == uploads["indexed"] == uploads["files_added"] == UPLOADS
    assert uploads["lost"] == 0 and uploads["errors"] == 0, uploads["error_samples"]
    assert "errors: **0**" in (results_dir / "load.md").read_text()
