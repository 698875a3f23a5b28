from .accounts import account, token_create, token_revoke
from .captures import capture_delete, capture_keylog, capture_list, capture_properties, capture_tags, upload
from .export import export, export_job, export_start
from .follow import follow
from .livecapture import live_list, live_packet_detail, live_start, live_stop, live_view
from .packets import capture, packet_detail
from .sharing import open_link, revoke_link, share, sharing, sharing_update

__all__ = [
    "account",
    "open_link",
    "revoke_link",
    "share",
    "sharing",
    "sharing_update",
    "token_create",
    "token_revoke",
    "capture",
    "capture_delete",
    "capture_keylog",
    "capture_list",
    "capture_properties",
    "capture_tags",
    "export",
    "export_job",
    "export_start",
    "follow",
    "live_list",
    "live_packet_detail",
    "live_start",
    "live_stop",
    "live_view",
    "packet_detail",
    "upload",
]
