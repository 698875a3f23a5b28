from .captures import capture_delete, capture_keylog, capture_list, capture_properties, upload
from .expert import expert
from .flow import flow
from .follow import follow
from .iograph import io_graph
from .packets import capture, packet_detail
from .statistics import statistics

__all__ = [
    "capture",
    "capture_delete",
    "capture_keylog",
    "capture_list",
    "capture_properties",
    "expert",
    "flow",
    "follow",
    "io_graph",
    "packet_detail",
    "statistics",
    "upload",
]
