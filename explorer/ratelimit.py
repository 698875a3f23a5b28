"""Rate limits: token buckets kept in Django's cache, for sign-ins, uploads and filter runs.

A rate is written "N/S": a bucket holds N tokens and earns them back at N per S seconds, so N
requests may come at once and then one every S/N seconds. "0" (or nothing) turns a limit off.

Each bucket is one cache entry holding the time at which it will be full again (the generic
cell rate algorithm, equivalent to a token bucket). With REDIS_URL the cache is shared by every
server process; two processes taking a token at the same instant may both succeed, which lets
a burst through by a request or two: these limits stop abuse, they do not count exactly.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import resolve_url
from django.template.loader import render_to_string
from django.urls import reverse

from explorer.middleware import AsyncMiddleware

RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*")
KEY_PREFIX = "ratelimit"
# A filter or statistic that a user ran within this long is not charged again: its result is
# mostly still cached by the engine, and paging or sorting it costs little.
REMEMBER_RUN_SECONDS = 600
# The runs this process remembered in the cache, with when the cache forgets them: paging
# through a filtered list then skips asking the cache on every page.
_remembered_here: dict[str, float] = {}
REMEMBERED_HERE_MAX = 10_000


@dataclass(frozen=True)
class Rate:
    burst: int
    seconds: float

    @property
    def interval(self) -> float:
        """Seconds to earn one token back."""
        return self.seconds / self.burst


def parse_rate(text: str) -> Rate | None:
    """Return the rate "N/S" stands for, or None when it is off ("0", "", "off")."""
    text = text.strip().lower()
    if text in ("", "0", "off", "none"):
        return None
    match = RATE.fullmatch(text)
    if match is None or int(match[1]) < 1 or float(match[2]) <= 0:
        raise ValueError(f"a rate is N/S (N requests per S seconds), not {text!r}")
    return Rate(int(match[1]), float(match[2]))


def rate_of(name: str) -> Rate | None:
    """Return the rate configured by the setting `name`."""
    return parse_rate(str(getattr(settings, name)))


def _key(bucket: str, who: str) -> str:
    return f"{KEY_PREFIX}:{bucket}:{hashlib.sha256(who.encode()).hexdigest()[:32]}"


def _after_taking(stored: Any, rate: Rate, now: float) -> tuple[float | None, float]:
    """Return (the bucket's new full time, or None when empty) and the wait for a token."""
    full_at = max(float(stored) if isinstance(stored, int | float) else now, now)
    tolerance = (rate.burst - 1) * rate.interval
    if full_at - now > tolerance:
        return None, full_at - now - tolerance
    return full_at + rate.interval, 0.0


async def take(bucket: str, who: str, rate: Rate | None) -> float:
    """Take a token from who's bucket; return 0 if there was one, else seconds until there is."""
    if rate is None:
        return 0.0
    key, now = _key(bucket, who), time.time()
    full_at, wait = _after_taking(await cache.aget(key), rate, now)
    if full_at is not None:
        await cache.aset(key, full_at, timeout=math.ceil(full_at - now) + 1)
    return wait


async def give_back(bucket: str, who: str, rate: Rate | None) -> None:
    """Return a token taken for a request that turned out not to count (a sign-in that succeeded)."""
    if rate is None:
        return
    key, now = _key(bucket, who), time.time()
    stored = await cache.aget(key)
    if isinstance(stored, int | float) and stored > now:
        await cache.aset(key, max(now, stored - rate.interval), timeout=math.ceil(stored - now) + 1)


def retry_after(wait: float) -> str:
    """Return the Retry-After header value for a wait in seconds (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait)))


def in_words(wait: float) -> str:
    seconds = max(1, math.ceil(wait))
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"


def too_many(request: HttpRequest, message: str, wait: float) -> HttpResponse:
    """Answer 429 with Retry-After: JSON on the API, a page otherwise."""
    text = f"{message}: try again in {in_words(wait)}"
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"error": text}, status=429)
    else:
        response = HttpResponse(render_to_string("429.html", {"message": text}, request), status=429)
    response["Retry-After"] = retry_after(wait)
    return response


def client_address(request: HttpRequest) -> str:
    """Return the address the request came from (daphne --proxy-headers puts the client's there)."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def requester(request: HttpRequest) -> str:
    """Return whom a per-user bucket belongs to: the signed-in user, else the client address."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"address:{client_address(request)}"


# Routes that run display filters or taps over every frame: the API's and the pages' (the
# follow page and every statistics page, as their registry lists them). A packet list costs a
# run only with a filter; paging, sorting and formats cost none.
FILTER_ROUTES = re.compile(
    r"/api/captures/(?P<capture>\d+)/(?P<route>packets|conversations|endpoints|protocol-hierarchy"
    r"|expert|iograph|flow|http-requests|dns-queries|export|follow|follow/raw|http-objects(?:\.zip)?)"
    r"|/captures/(?P<page_capture>\d+)/(?P<page>[a-z0-9-]+)/"
)

FREE_PARAMETERS = {"offset", "limit", "sort", "format", "side", "time", "packet", "start", "end"}


@functools.cache
def filter_pages() -> frozenset[str]:
    """Return the capture pages (path segments) that run the engine over every frame."""
    # Imported here: the views import this module (through the uploads).
    from .views.statistics.registry import paths as statistics_paths

    return frozenset({"follow", *statistics_paths()})


def filter_run(request: HttpRequest) -> str | None:
    """Return what a request asks the engine to compute (route, capture, parameters), or None."""
    if request.method != "GET":
        return None
    match = FILTER_ROUTES.fullmatch(request.path)
    if match is None or (match["page"] and match["page"] not in filter_pages()):
        return None
    route = match["route"] or match["page"]
    capture = match["capture"] or match["page_capture"]
    parameters = sorted(
        (name, value.strip())
        for name, values in request.GET.lists()
        for value in values
        if name not in FREE_PARAMETERS
    )
    if route == "packets" and not any(name == "filter" and value for name, value in parameters):
        return None
    return f"{route}:{capture}:{parameters!r}"


def remembered_here(key: str) -> bool:
    """Tell whether this process stored the cache entry `key` and the cache still keeps it."""
    return _remembered_here.get(key, 0.0) > time.monotonic()


def remember_here(key: str) -> None:
    now = time.monotonic()
    if len(_remembered_here) >= REMEMBERED_HERE_MAX:
        for old in [old for old, until in _remembered_here.items() if until <= now]:
            del _remembered_here[old]
        if len(_remembered_here) >= REMEMBERED_HERE_MAX:
            _remembered_here.clear()
    # A second short of the cache's timeout, which started a moment ago, when it was stored.
    _remembered_here[key] = now + REMEMBER_RUN_SECONDS - 1


def sign_in_paths() -> set[str]:
    """Return the paths of the sign-in forms: the site's and the admin's."""
    return {resolve_url(settings.LOGIN_URL), reverse("admin:login")}


class RateLimitMiddleware(AsyncMiddleware):
    """Refuse sign-ins and filter runs beyond their rates with 429 and Retry-After.

    Sign-ins are limited per client address and per username, counting only the attempts
    that fail; filter runs (a packet list with a filter, statistics, graphs, exports) per user,
    counting each distinct run once while it is remembered. Uploads are limited before their
    body is read, in the upload stream (explorer.uploads).
    """

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method == "POST" and request.path in sign_in_paths():
            return await self.sign_in(request)
        run = filter_run(request)
        if run is not None:
            who = requester(request)
            remembered = _key("ran", f"{who}:{run}")
            if not remembered_here(remembered) and not await cache.aget(remembered):
                wait = await take("filters", who, rate_of("RATE_LIMIT_FILTERS"))
                if wait:
                    return too_many(request, "Too many new filters and statistics", wait)
                await cache.aset(remembered, True, timeout=REMEMBER_RUN_SECONDS)
                remember_here(remembered)
        return await self.get_response(request)

    async def sign_in(self, request: HttpRequest) -> HttpResponseBase:
        # The form is small and already received: reading it here costs nothing.
        username = str(request.POST.get("username", "")).strip().lower()
        buckets = [("login-address", client_address(request), rate_of("RATE_LIMIT_LOGIN_PER_IP"))]
        if username:
            buckets.append(("login-username", username, rate_of("RATE_LIMIT_LOGIN_PER_USERNAME")))
        taken: list[tuple[str, str, Rate | None]] = []
        for bucket, who, rate in buckets:
            wait = await take(bucket, who, rate)
            if wait:
                for earlier in taken:
                    await give_back(*earlier)
                return too_many(request, "Too many failed sign-ins", wait)
            taken.append((bucket, who, rate))
        response = await self.get_response(request)
        # The sign-in form redirects when it succeeds and shows itself again when it fails.
        if response.status_code in (301, 302, 303):
            for bucket, who, rate in taken:
                await give_back(bucket, who, rate)
        return response
