from django.http import HttpRequest, HttpResponse

from ..access import capture_for


async def capture_list(request: HttpRequest) -> HttpResponse:
    return HttpResponse("captures")


async def capture(request: HttpRequest, capture_id: int) -> HttpResponse:
    return HttpResponse((await capture_for(request, capture_id)).name)
