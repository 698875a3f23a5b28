from .accounts import account, token_create, token_revoke
from .captures import capture_delete, capture_keylog, capture_list, capture_properties, capture_tags, upload
from .expert import expert
from .export import export, export_job, export_start, http_objects
from .flow import flow
from .follow import follow
from .iograph import io_graph
from .livecapture import live_list, live_packet_detail, live_start, live_stop, live_view
from .packets import capture, packet_detail
from .sharing import open_link, revoke_link, share, sharing, sharing_update
from .statistics import statistics
from .tables import conversation_graph_page, dns_queries, http_requests

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
    "conversation_graph_page",
    "dns_queries",
    "capture_properties",
    "capture_tags",
    "expert",
    "export",
    "export_job",
    "export_start",
    "flow",
    "follow",
    "http_requests",
    "http_objects",
    "io_graph",
    "live_list",
    "live_packet_detail",
    "live_start",
    "live_stop",
    "live_view",
    "packet_detail",
    "statistics",
    "upload",
]
