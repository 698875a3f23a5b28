"""The JSON API fuzzed from its own OpenAPI schema: no server error, every answer as documented."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import OWNER, Server, sample_capture, upload

pytestmark = pytest.mark.engine

# Examples per operation: about forty operations run in two or three minutes.
EXAMPLES = 25
# Captures with HTTP objects, DNS, TLS with its key log, and none at all: what the routes read.
CAPTURES = ["http_google.pcapng", "dns-udp.pcap", "tls_nss_example.pcap", "empty.pcapng"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: the fuzzer changes marks, tags, annotations and key logs."""
    server = Server(
        tmp_path_factory.mktemp("fuzzed"),
        RATE_LIMIT_UPLOADS="0",
        RATE_LIMIT_FILTERS="0",
        UPLOAD_MAX_CAPTURES_PER_USER="0",
        UPLOAD_MAX_MB_PER_USER="0",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def capture_ids(fuzzed: Server) -> list[int]:
    with httpx.Client(base_url=fuzzed.url, timeout=120, headers=fuzzed.owner_headers()) as client:
        ids = []
        for name in CAPTURES:
            answer = upload(client, sample_capture(name))
            assert answer.status_code == 201, answer.text
            ids.append(int(answer.json()["id"]))
    return ids


@pytest.fixture(scope="module")
def api_schema(fuzzed: Server, capture_ids: list[int]) -> Any:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/api/schema/")
    schema.config.update(base_url=fuzzed.url)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE], max_examples=EXAMPLES)
    return schema


# Deleting the captures would leave nothing for the other operations to read. (Filters go on
# the lazy schema: it replaces those of the fixture's schema with its own.)
schema = schemathesis.pytest.from_fixture("api_schema").exclude(
    method="DELETE", path="/api/captures/{capture_id}/"
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_its_schema_says(case: Any, fuzzed: Server, capture_ids: list[int]) -> None:
    capture_id = case.path_parameters.get("capture_id") if case.path_parameters else None
    # Most examples ask about a capture that exists; every seventh keeps its number (a 404).
    if isinstance(capture_id, int) and capture_id % 7:
        case.path_parameters["capture_id"] = capture_ids[capture_id % len(capture_ids)]
    case.call_and_validate(headers={**fuzzed.owner_headers(), "Connection": "close"}, checks=CHECKS)


def test_the_fuzzed_server_still_has_its_captures(fuzzed: Server, capture_ids: list[int]) -> None:
    with fuzzed.client(OWNER) as client:
        listed = {capture["id"] for capture in client.get("/api/captures/").json()}
    assert set(capture_ids) <= listed
