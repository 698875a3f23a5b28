"""Teammates watch a live capture with its owner, and keep seeing it once it is stored."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .conftest import Server, sample_capture
from .test_live_capture import post_form, signed_in
from .test_live_stream import chunks_of, rows_seen

pytestmark = pytest.mark.engine

TEAM = "live-crew"
SENDER = "live-sender"  # a member of TEAM, who streams the capture
TEAMMATE = "live-teammate"  # a member of TEAM
STRANGER = "live-stranger"  # in no team


@pytest.fixture(scope="module")
def tokens(server: Server) -> dict[str, str]:
    server.create_user(SENDER, teams=(TEAM,))
    server.create_user(TEAMMATE, teams=(TEAM,))
    server.create_user(STRANGER)
    return {name: server.token(name) for name in (SENDER, TEAMMATE, STRANGER)}


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def running_live(server: Server, token: str, name: str) -> dict[str, Any]:
    """Wait until the sender's stream of that name is listed as running; return it."""
    async with httpx.AsyncClient(base_url=server.url, headers=headers(token), timeout=30) as client:
        async with asyncio.timeout(60):
            while True:
                lives = (await client.get("/api/live/")).json()["live_captures"]
                found = [live for live in lives if live["name"] == name and live["state"] == "running"]
                if found:
                    return dict(found[0])
                await asyncio.sleep(0.1)


async def watch_until_ended(server: Server, live_id: int, token: str) -> list[dict[str, Any]]:
    url = f"ws://127.0.0.1:{server.port}/ws/live/{live_id}/"
    messages: list[dict[str, Any]] = []
    async with connect(url, origin=server.url, additional_headers=headers(token)) as ws:
        async with asyncio.timeout(120):
            while not messages or messages[-1]["type"] != "live.ended":
                messages.append(json.loads(await ws.recv()))
    return messages


async def test_a_teammate_watches_the_stream_and_sees_the_stored_capture(
    server: Server, tokens: dict[str, str]
) -> None:
    data = sample_capture("http_espn.pcapng").read_bytes()
    async with httpx.AsyncClient(base_url=server.url, headers=headers(tokens[SENDER]), timeout=120) as sender:
        sending = asyncio.create_task(
            sender.put("/api/live/crew-stream", params={"team": TEAM}, content=chunks_of(data, 20_000, 0.05))
        )
        live = await running_live(server, tokens[SENDER], "crew-stream")
        # The teammate finds it in the list and watches it; someone in no team is refused.
        assert (await running_live(server, tokens[TEAMMATE], "crew-stream"))["id"] == live["id"]
        url = f"ws://127.0.0.1:{server.port}/ws/live/{live['id']}/"
        with pytest.raises(InvalidStatus):
            async with connect(url, origin=server.url, additional_headers=headers(tokens[STRANGER])) as ws:
                await ws.recv()
        # The teammate watches without the Stop button, and may not stop it.
        teammate_browser = signed_in(server, TEAMMATE)
        view = teammate_browser.get(f"/live/{live['id']}/")
        assert view.status_code == 200 and 'id="live-stop"' not in view.text
        stopping = await asyncio.to_thread(post_form, teammate_browser, f"/live/{live['id']}/stop/")
        assert stopping.status_code == 403
        teammate_browser.close()
        messages = await watch_until_ended(server, live["id"], tokens[TEAMMATE])
        answer = await sending
    assert answer.status_code == 200, answer.text
    stored = answer.json()["capture"]
    assert sorted(rows_seen(messages)) == list(range(1, 957))
    assert messages[-1]["capture_url"] == f"/captures/{stored}/"
    # Stored, it is shared with the team: the teammate pages it, the stranger cannot see it.
    with server.client(TEAMMATE) as teammate, server.client(STRANGER) as stranger:
        page = teammate.get(f"/api/captures/{stored}/packets", params={"limit": "5"})
        assert page.status_code == 200 and page.json()["total"] == 956
        assert stranger.get(f"/api/captures/{stored}/").status_code == 404
        assert stranger.get(f"/live/{live['id']}/").status_code in (302, 404)
        lives = stranger.get("/api/live/").json()["live_captures"]
        assert live["id"] not in [item["id"] for item in lives]


def test_a_stream_for_a_team_the_sender_is_not_in_is_refused(server: Server, tokens: dict[str, str]) -> None:
    data = sample_capture("http_espn.pcapng").read_bytes()[:4096]
    answer = httpx.put(
        f"{server.url}/api/live/not-mine",
        params={"team": TEAM},
        content=data,
        headers=headers(tokens[STRANGER]),
        timeout=30,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == f"you are not a member of a team named '{TEAM}'"
    with server.client(STRANGER) as stranger:
        assert "not-mine" not in [live["name"] for live in stranger.get("/api/live/").json()["live_captures"]]
