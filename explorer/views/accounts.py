"""The account page: API tokens for scripts, created and revoked by their user."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from ..access import user_of
from ..models import ApiToken
from ..tokens import create_token


@login_required
@require_GET
async def account(request: HttpRequest) -> HttpResponse:
    user = await user_of(request)
    context = {
        "tokens": [t async for t in ApiToken.objects.filter(user=user)],
        # Shown once, right after it was created: only its digest is kept.
        "new_token": request.session.pop("new_api_token", None),
    }
    return render(request, "explorer/account.html", context)


@login_required
@require_POST
async def token_create(request: HttpRequest) -> HttpResponse:
    user = await user_of(request)
    name = request.POST.get("name", "").strip()[:100]
    request.session["new_api_token"] = await create_token(user, name)
    messages.success(request, "Token created. Copy it now: it is not shown again.")
    return redirect("explorer:account")


@login_required
@require_POST
async def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    user = await user_of(request)
    deleted, _ = await ApiToken.objects.filter(user=user, pk=token_id).adelete()
    if deleted:
        messages.success(request, "Token revoked: scripts using it are refused from now on.")
    return redirect("explorer:account")
