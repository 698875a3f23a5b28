"""The JSON API: its routers joined, the answers to its errors, and its OpenAPI schema."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404, HttpRequest
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.openapi.schema import OpenAPISchema
from ninja.operation import Operation

from .. import annotations as notes
from ..availability import database_unavailable
from ..engine.errors import EngineCrashed, EngineError
from . import annotations as annotation_routes
from . import (
    captures,
    expert,
    exports,
    filters,
    flow,
    follow,
    http_objects,
    iograph,
    keylog,
    live,
    marks,
    packets,
    statistics,
    tables,
    tags,
)


class CaptureExplorerAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        # The ids the operations had when the API was one module, whichever module holds them now.
        return f"explorer_api_{operation.view_func.__name__}"

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        live.document_stream(schema)
        return schema


api = CaptureExplorerAPI(
    title="Capture Explorer API", version="1", urls_namespace="api", openapi_url="/schema/", docs_url="/docs"
)

for resource in (
    captures,
    keylog,
    packets,
    filters,
    follow,
    statistics,
    flow,
    expert,
    iograph,
    exports,
    marks,
    http_objects,
    tables,
    tags,
    annotation_routes,
    live,
):
    api.add_router("", resource.router)


@api.exception_handler(EngineError)
def engine_refused(request: HttpRequest, exc: EngineError) -> Any:
    # The engine's message (a filter's syntax error, a stream that does not exist) is meant
    # for the person who sent the request.
    return api.create_response(request, {"error": exc.message}, status=400)


@api.exception_handler(EngineCrashed)
def engine_crashed(request: HttpRequest, exc: EngineCrashed) -> Any:
    # Not the request's fault: the engine died twice in a row (it was restarted once).
    return api.create_response(request, {"error": exc.message}, status=503)


@api.exception_handler(notes.AnnotationError)
def annotation_refused(request: HttpRequest, exc: notes.AnnotationError) -> Any:
    return api.create_response(request, {"error": exc.message}, status=400)


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> Any:
    return api.create_response(request, {"error": str(exc)}, status=exc.status_code)


@api.exception_handler(DatabaseError)
def database_failed(request: HttpRequest, exc: DatabaseError) -> Any:
    return database_unavailable(request)


@api.exception_handler(PermissionDenied)
def not_allowed(request: HttpRequest, exc: PermissionDenied) -> Any:
    return api.create_response(request, {"error": str(exc) or "not allowed"}, status=403)


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> Any:
    return api.create_response(request, {"error": str(exc) or "not found"}, status=404)
