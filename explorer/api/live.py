"""Live captures: those you may watch, and a remote machine's capture streamed as a request body.

`PUT /api/live/NAME` is served below Django by the ASGI route of explorer/live/route.py, which
reads the body as it arrives (Django would keep it whole until its end). Django never sees
that request, so it is no operation of a router: `document_stream` adds it to the schema from
what the route itself uses (its path, its name pattern, the type of its answer), with the
answers the route gives.
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja.errors import HttpError
from pydantic import TypeAdapter

from .. import access
from ..access import user_of
from ..live import remote, route
from ..models import LiveCapture
from .schemas import Error

router = Router()

LISTED = 100


class LiveCaptureOut(Schema):
    id: int
    name: str
    source: Literal["interface", "stream"]
    state: Literal["running", "stored", "failed"]
    message: str = Field(description="Why it stopped, or failed")
    capture: int | None = Field(description="The capture stored of it, once it is")
    url: str = Field(description="Its live view")


class LiveCapturesOut(Schema):
    live_captures: list[LiveCaptureOut]


@router.get(
    "/live/",
    response={200: LiveCapturesOut, 401: Error},
    summary=f"The live captures you may watch, newest first ({LISTED} at most)",
)
async def live_captures(request: HttpRequest) -> dict[str, Any]:
    user = await user_of(request)
    if not user.is_authenticated:
        raise HttpError(401, "sign in or send an API token (Authorization: Token <key>)")
    lives = LiveCapture.objects.filter(access.watchable_live_captures(user))
    return {
        "live_captures": [
            {
                "id": live.pk,
                "name": live.name,
                "source": live.source,
                "state": live.state,
                "message": live.message,
                "capture": live.capture_id,
                "url": live.get_absolute_url(),
            }
            async for live in lives[:LISTED]
        ]
    }


# What the stream route answers, and when.
STREAM_ANSWERS: dict[int, tuple[Any, str]] = {
    200: (remote.StreamResult, "The stream ended and was stored as a capture"),
    400: (Error, "Not a pcap or pcapng stream, or no team of yours of that name"),
    401: (Error, "No API token, or one that is not valid"),
    404: (Error, "The name is not 1-100 letters, digits, dots, dashes or underscores"),
    413: (Error, "You keep as many captures, or as much, as you may already"),
    422: (remote.StreamResult, "The stream ended and nothing of it could be stored"),
    503: (Error, "The database is unavailable for a moment"),
}

STREAM_DESCRIPTION = (
    "Send the capture as the request body while it is being made: "
    "`tcpdump -U -w - | curl -T - -H 'Authorization: Token ...' URL`. Its packets are recorded and "
    "shown live as they arrive; when the body ends (or the sender disconnects, or someone stops "
    "the capture in its live view, which ends the upload), every whole packet received is stored "
    "as a capture, at most MAX_UPLOAD_MB. Needs an API token. The answer comes once it has ended."
)


def document_stream(schema: dict[str, Any]) -> None:
    """Add the operation of the stream route, `PUT /api/live/{name}`, to an OpenAPI schema."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    responses = {}
    for status, (answer, description) in STREAM_ANSWERS.items():
        shape = TypeAdapter(answer).json_schema(ref_template="#/components/schemas/{model}")
        components.update(shape.pop("$defs", {}))
        components.setdefault(shape["title"], shape)
        reference = {"$ref": f"#/components/schemas/{shape['title']}"}
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": reference}},
        }
    name = {"type": "string", "pattern": f"^{route.NAME}$", "title": "Name"}
    team = {"type": "string", "default": "", "title": "Team"}
    body = {"type": "string", "format": "binary"}
    schema["paths"][route.PREFIX + "{name}"] = {
        "put": {
            "operationId": "explorer_api_stream_live",
            "summary": "Stream a capture live: the request body, a pcap or pcapng stream, read as it arrives",
            "description": STREAM_DESCRIPTION,
            "parameters": [
                {"in": "path", "name": "name", "schema": name, "required": True},
                {
                    "in": "query",
                    "name": "team",
                    "schema": team,
                    "required": False,
                    "description": "One of your teams, whose members watch it with you",
                },
            ],
            "requestBody": {
                "content": {"application/octet-stream": {"schema": body}},
                "required": True,
            },
            "responses": responses,
        }
    }
