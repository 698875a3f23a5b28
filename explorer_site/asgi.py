"""ASGI entry point: HTTP through Django, websockets through Channels, one daphne process."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explorer_site.settings")
django_asgi_app = get_asgi_application()

from daphne.http_protocol import WebRequest  # noqa: E402

_web_request_init = WebRequest.__init__
REQUEST_CHUNK = 1024 * 1024


def _web_request_without_form_parsing(self: WebRequest, *args: object, **kwargs: object) -> None:
    # Twisted parses every POSTed form into request.args with the email package, which held
    # about fifteen times a multipart upload in memory; daphne never reads request.args.
    _web_request_init(self, *args, **kwargs)
    self._parsePOSTFormSubmission = False
    # Daphne hands a request body to the application in chunks of this size (8 KiB by
    # default): a 600 MB capture became 80,000 small objects that fragmented the heap.
    self.server.request_buffer_size = max(self.server.request_buffer_size, REQUEST_CHUNK)


WebRequest.__init__ = _web_request_without_form_parsing

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from explorer.authentication import TokenAuthWebsocketMiddleware  # noqa: E402
from explorer.live.route import LiveStreamRoute, stream_bodies_as_they_arrive  # noqa: E402
from explorer.middleware import OwnContext, RequestThreads  # noqa: E402
from explorer.routing import websocket_urlpatterns  # noqa: E402
from explorer.uploads import UploadStream  # noqa: E402

stream_bodies_as_they_arrive()

application = OwnContext(
    ProtocolTypeRouter(
        {
            "http": LiveStreamRoute(UploadStream(RequestThreads(django_asgi_app))),
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(TokenAuthWebsocketMiddleware(URLRouter(websocket_urlpatterns)))
            ),
        }
    )
)
