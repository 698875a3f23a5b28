"""What every statistic's page shares: its tabs, its "Limit to display filter" form, its answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from ...models import Capture
from ..common import varies_on_htmx, wants_partial
from ..links import page_url
from ..params import display_filter
from . import registry
from .registry import Statistic


@dataclass
class StatisticPage:
    """One statistic's page, limited to a display filter.

    `state` is the rest of the page's query (an address type, a sort): the filter form keeps
    it, and so does the filter's Clear link. The tabs carry the address type (`kind`, else the
    state's) to the statistics that show one.
    """

    capture: Capture
    statistic: Statistic
    filter_text: str
    state: dict[str, str] = field(default_factory=dict)
    kind: str = ""
    error: str = ""

    @classmethod
    def of(cls, request: HttpRequest, capture: Capture, key: str, **state: str) -> StatisticPage:
        """Return the page of the statistic registered as key, with the request's display filter."""
        return cls(capture, registry.named(key), display_filter(request), state)

    def view_query(self) -> dict[str, str]:
        """Return the ?view= that picks this statistic on a page it shares, else nothing."""
        return {"view": self.statistic.key} if registry.shares_page(self.statistic) else {}

    def url(self, **params: str) -> str:
        """Return this statistic's page with the given query (empty values left out)."""
        return page_url(self.capture, self.statistic.url_name, **self.view_query(), **params)

    def carried_kind(self) -> str:
        return self.kind or self.state.get("kind", "")

    def context(self) -> dict[str, Any]:
        kept = {**self.view_query(), **self.state}
        return {
            "capture": self.capture,
            "title": self.statistic.title,
            "view": self.statistic.key,
            "views": registry.tabs(self.capture, {"filter": self.filter_text, "kind": self.carried_kind()}),
            "filter_text": self.filter_text,
            "error": self.error,
            "download_url": reverse("api:download", args=[self.capture.pk]),
            # A form's GET drops the query of its action: what it keeps goes in hidden fields.
            "action_url": page_url(self.capture, self.statistic.url_name),
            "clear_url": self.url(**self.state),
            "kept": kept,
        }

    def render(
        self,
        request: HttpRequest,
        template: str,
        context: dict[str, Any],
        *,
        partial: str = "",
        status: int | None = None,
    ) -> HttpResponse:
        """Render the page (400 when the engine refused), or only `partial` when htmx asks for it."""
        status = status if status is not None else 400 if self.error else 200
        if not partial:
            return render(request, template, {**self.context(), **context}, status=status)
        if wants_partial(request):
            template += f"#{partial}"
        return varies_on_htmx(render(request, template, {**self.context(), **context}, status=status))
