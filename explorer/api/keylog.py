"""A capture's TLS key log: attached to decrypt TLS and QUIC, removed; never served back."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError

from .. import captures
from ..access import capture_for
from ..uploads import staged_uploads
from .schemas import Error

router = Router()

MULTIPART_FILE = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        }
    }
}


class KeylogOut(Schema):
    secrets: int


@router.post(
    "/captures/{capture_id}/keylog",
    response={200: KeylogOut, 400: Error, 404: Error},
    openapi_extra=MULTIPART_FILE,
    summary="Attach a TLS key log (SSLKEYLOGFILE format, multipart field `file`) to decrypt TLS and QUIC",
)
async def attach_keylog(request: HttpRequest, capture_id: int) -> dict[str, int]:
    capture = await capture_for(request, capture_id, "write")
    uploads = staged_uploads(request)
    if uploads.errors or not uploads.files:
        raise HttpError(400, uploads.errors[0][1] if uploads.errors else "no file in the request")
    data = await sync_to_async(captures.staged_keylog_bytes)(uploads.files[0])
    return {"secrets": await captures.attach_keylog(capture, data)}


@router.delete(
    "/captures/{capture_id}/keylog", response={204: None, 404: Error}, summary="Remove the TLS key log"
)
async def detach_keylog(request: HttpRequest, capture_id: int) -> tuple[int, None]:
    await captures.detach_keylog(await capture_for(request, capture_id, "write"))
    return 204, None
