"""Response headers that keep attacker-controlled packet contents inert in the browser."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase

from explorer.middleware import AsyncMiddleware

# Scripts and styles only from our own static files: a payload that slipped past escaping
# still could not run. Websockets go back to the same host.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware(AsyncMiddleware):
    """Add the Content-Security-Policy header to every response that does not set one."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        if request.path.startswith("/api/docs"):
            return response  # the interactive API docs page loads its own inline scripts
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
