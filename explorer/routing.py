from django.urls import path

from . import consumers, live, livecapture_consumers

websocket_urlpatterns = [
    path("ws/captures/<int:capture_id>/", consumers.CaptureLoadConsumer.as_asgi()),
    path("ws/captures/<int:capture_id>/live/", live.CaptureLiveConsumer.as_asgi()),
    path("ws/live/<int:live_id>/", livecapture_consumers.LiveCaptureConsumer.as_asgi()),
]
