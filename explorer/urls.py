from django.urls import path

from . import views
from .views.statistics.registry import urlpatterns as statistics_urlpatterns

app_name = "explorer"

urlpatterns = [
    path("", views.capture_list, name="capture_list"),
    path("captures/upload/", views.upload, name="upload"),
    path("captures/<int:capture_id>/", views.capture, name="capture"),
    path("captures/<int:capture_id>/properties/", views.capture_properties, name="capture_properties"),
    path("captures/<int:capture_id>/delete/", views.capture_delete, name="capture_delete"),
    path("captures/<int:capture_id>/keylog/", views.capture_keylog, name="capture_keylog"),
    path("captures/<int:capture_id>/follow/", views.follow, name="follow"),
    path(
        "captures/<int:capture_id>/packets/<int:number>/detail/",
        views.packet_detail,
        name="packet_detail",
    ),
    # Conversations, endpoints, expert information, I/O graph, flow graph...: one page each.
    *statistics_urlpatterns(),
    path("captures/<int:capture_id>/export/", views.export, name="export"),
    path("captures/<int:capture_id>/exports/", views.export_start, name="export_start"),
    path("captures/<int:capture_id>/exports/<int:export_id>/", views.export_job, name="export_job"),
    path("captures/<int:capture_id>/sharing/", views.sharing, name="sharing"),
    path("captures/<int:capture_id>/sharing/visibility/", views.sharing_update, name="sharing_update"),
    path("captures/<int:capture_id>/share/", views.share, name="share"),
    path("captures/<int:capture_id>/share/<int:link_id>/revoke/", views.revoke_link, name="revoke_link"),
    path("s/<str:key>/", views.open_link, name="open_link"),
    path("account/", views.account, name="account"),
    path("account/tokens/", views.token_create, name="token_create"),
    path("account/tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
    path("captures/<int:capture_id>/tags/", views.capture_tags, name="capture_tags"),
    path("live/", views.live_list, name="live_list"),
    path("live/start/", views.live_start, name="live_start"),
    path("live/<int:live_id>/", views.live_view, name="live_view"),
    path("live/<int:live_id>/stop/", views.live_stop, name="live_stop"),
    path(
        "live/<int:live_id>/packets/<int:number>/",
        views.live_packet_detail,
        name="live_packet_detail",
    ),
]
