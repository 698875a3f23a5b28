from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/captures/<int:capture_id>/", consumers.CaptureLoadConsumer.as_asgi()),
]
