"""The capture list and its search, uploads from the page, deleting, the properties page and tags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import captures, search
from ..access import capture_for, rights, user_of, visible_captures
from ..engine import keylog
from ..models import Capture
from ..uploads import staged_uploads
from . import display
from .common import not_found_page, varies_on_htmx, wants_partial
from .sortable import HeaderCell, SortColumn, header

# ?sort= keys and the fields they order by; a leading "-" sorts descending.
SORTS = {
    "name": "name",
    "size": "size",
    "packets": "packets",
    "first": "first_ns",
    "duration": "duration_ns",
    "uploaded": "uploaded_at",
}
DEFAULT_SORT = "-uploaded"

COLUMNS = [
    SortColumn("name", "Name"),
    SortColumn("size", "Size"),
    SortColumn("packets", "Packets"),
    SortColumn("first", "First packet (UTC)"),
    SortColumn("", "Last packet (UTC)", sortable=False),
    SortColumn("duration", "Duration"),
    SortColumn("", "Link types", sortable=False),
    SortColumn("uploaded", "Uploaded"),
]


@dataclass
class CaptureRow:
    capture: Capture
    first: str
    last: str
    duration: str


def parse_sort(value: str) -> str:
    """Return the ?sort= value if it names a known column, else the default."""
    return value if value.removeprefix("-") in SORTS else DEFAULT_SORT


def columns_for(sort: str, filter_query: str) -> list[HeaderCell]:
    """Return the table's header cells; clicking the sorted one reverses it, the search kept."""
    url = reverse("explorer:capture_list")
    return header(COLUMNS, sort, lambda s: f"{url}?sort={s}" + (f"&{filter_query}" if filter_query else ""))


async def capture_rows(visible: QuerySet[Capture], sort: str) -> list[CaptureRow]:
    field = SORTS[sort.removeprefix("-")]
    order = f"-{field}" if sort.startswith("-") else field
    return [
        CaptureRow(
            capture=c,
            first=display.utc_time(c.first_time, c.precision_digits),
            last=display.utc_time(c.last_time, c.precision_digits),
            duration=display.short_duration(c.duration),
        )
        async for c in visible.select_related("owner").prefetch_related("tags").order_by(order, "-id")
    ]


@login_required
@require_GET
async def capture_list(request: HttpRequest) -> HttpResponse:
    """Show the captures the user may see, narrowed by the search box and filters, and the upload zone."""
    sort = parse_sort(request.GET.get("sort", DEFAULT_SORT))
    user = await user_of(request)
    visible = visible_captures(user, request.session)
    filters = search.Filters.from_params(request.GET)
    search_error = ""
    try:
        found = search.matching(visible, filters, user)
    except search.SearchError as error:
        found, search_error = visible.none(), str(error)
    partial = wants_partial(request)
    context = {
        "rows": await capture_rows(found, sort),
        "sort": sort,
        "columns": columns_for(sort, filters.query_string()),
        "filters": filters,
        "search_error": search_error,
        "visible_count": await visible.acount() if filters.active() else None,
        "partial": partial,
        "max_upload_mb": settings.MAX_UPLOAD_MB,
    }
    template = "explorer/capture_list.html"
    if partial:
        template += "#capture_table"
    else:
        context["owners"] = await search.owners(visible)
        context["tag_choices"] = await search.tags_among(visible)
    return varies_on_htmx(render(request, template, context))


@login_required
@require_POST
async def upload(request: HttpRequest) -> HttpResponse:
    """Store the files posted by the page's plain form (the script uploads through the API)."""
    uploads = staged_uploads(request)
    stored, errors = await captures.store_uploads(uploads, await user_of(request))
    for name, message in errors:
        messages.error(request, f"{name}: {message}")
    for capture in stored:
        messages.success(request, f"{capture.name}: stored, {capture.packets} packets")
    if not uploads.files and not errors:
        messages.error(request, "Choose one or more capture files to upload.")
    return redirect("explorer:capture_list")


@not_found_page
@require_http_methods(["GET", "POST"])
async def capture_delete(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Ask before deleting a capture; delete it on POST."""
    capture = await capture_for(request, capture_id, "manage")
    if request.method == "POST":
        name = capture.name
        await captures.delete(capture)
        messages.success(request, f"Deleted {name}.")
        return redirect("explorer:capture_list")
    return render(request, "explorer/capture_delete.html", {"capture": capture})


@not_found_page
@require_GET
async def capture_properties(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Show the capture's file properties, as Wireshark's Capture File Properties dialog does."""
    capture = await capture_for(request, capture_id)
    digits = capture.precision_digits
    keys = interface_keys(capture.interfaces)
    context = {
        "capture": capture,
        "first": display.utc_time(capture.first_time, digits),
        "last": display.utc_time(capture.last_time, digits),
        "elapsed": display.elapsed(capture.duration),
        "byte_rate": display.si(capture.data_byte_rate, "Bps"),
        "bit_rate": display.si(capture.data_bit_rate, "bps"),
        "packet_rate": display.decimal(capture.average_packet_rate),
        "packet_size": display.decimal(capture.average_packet_size),
        "interface_keys": keys,
        "interface_rows": [[interface.get(key, "") for key in keys] for interface in capture.interfaces],
        "download_url": reverse("api:download", args=[capture.pk]),
        "keylog_secrets": captures.keylog_secrets(capture),
        **await tags_context(request, capture),
    }
    return render(request, "explorer/capture_properties.html", context)


async def tags_context(
    request: HttpRequest, capture: Capture, error: str = "", typed: str = ""
) -> dict[str, Any]:
    user = await user_of(request)
    return {
        "capture": capture,
        "tags": await search.tag_names(capture),
        # Tagging is describing, as annotating is: whoever may annotate the capture may tag it.
        "may_tag": (await rights(request, capture)).write,
        "tag_choices": await search.tags_among(visible_captures(user, request.session)),
        "tag_error": error,
        "tag_typed": typed,  # kept in the field after a refusal, to be corrected
        "tag_max_length": search.TAG_MAX_LENGTH,
        "tag_rule": search.TAG_RULE,
    }


@not_found_page
@require_POST
async def capture_tags(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Add the posted tag to the capture, or remove it (action=remove)."""
    capture = await capture_for(request, capture_id, "write")
    remove = request.POST.get("action") == "remove"
    name = request.POST.get("name", "")
    error = ""
    try:
        if remove:
            await search.remove_tag(capture, name)
        else:
            await search.add_tag(capture, name)
    except search.BadTag as problem:
        error = str(problem)
    if wants_partial(request):
        context = await tags_context(request, capture, error, name if error and not remove else "")
        return render(request, "explorer/capture_properties.html#capture_tags", context)
    if error:
        messages.error(request, f"{'Tag not removed' if remove else 'Tag not added'}: {error}.")
    return redirect("explorer:capture_properties", capture_id=capture.pk)


@not_found_page
@require_POST
async def capture_keylog(request: HttpRequest, capture_id: int) -> HttpResponse:
    """Attach the posted TLS key log to the capture, or remove it."""
    capture = await capture_for(request, capture_id, "write")
    if request.POST.get("action") == "remove":
        await captures.detach_keylog(capture)
        messages.success(request, "Key log removed: TLS is no longer decrypted.")
        return redirect("explorer:capture_properties", capture_id=capture.pk)
    uploads = staged_uploads(request)
    if uploads.errors or not uploads.files:
        messages.error(request, uploads.errors[0][1] if uploads.errors else "Choose a key log file.")
        return redirect("explorer:capture_properties", capture_id=capture.pk)
    staged = uploads.files[0]
    try:
        data = await sync_to_async(captures.staged_keylog_bytes)(staged)
        secrets = await captures.attach_keylog(capture, data)
    except keylog.NotAKeyLog as error:
        messages.error(request, f"{captures.display_name(staged.name or '')}: {error.message}")
    else:
        messages.success(
            request, f"Key log attached: {secrets} secrets; TLS sessions they cover are decrypted."
        )
    return redirect("explorer:capture_properties", capture_id=capture.pk)


# The interface columns Wireshark's dialog shows first; capinfos' labels, in its order.
INTERFACE_COLUMNS = [
    "Name",
    "Description",
    "Encapsulation",
    "Capture length",
    "Filter string",
    "Operating system",
    "Number of packets",
]


def interface_keys(interfaces: list[dict[str, str]]) -> list[str]:
    """Return the interface properties to show as columns: Wireshark's first, then any other."""
    present = {key for interface in interfaces for key in interface}
    keys = [key for key in INTERFACE_COLUMNS if key in present]
    return keys + sorted(present - set(keys))
