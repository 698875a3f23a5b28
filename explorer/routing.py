from django.urls import path

from . import consumers
from .live.consumers import LiveCaptureConsumer
from .presence.consumers import CapturePresenceConsumer

websocket_urlpatterns = [
    path("ws/captures/<int:capture_id>/", consumers.CaptureLoadConsumer.as_asgi()),
    path("ws/captures/<int:capture_id>/live/", CapturePresenceConsumer.as_asgi()),
    path("ws/live/<int:live_id>/", LiveCaptureConsumer.as_asgi()),
]
