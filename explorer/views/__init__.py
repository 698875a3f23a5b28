from .captures import capture_delete, capture_list, capture_properties, upload
from .follow import follow
from .packets import capture, packet_detail
from .statistics import statistics

__all__ = [
    "capture",
    "capture_delete",
    "capture_list",
    "capture_properties",
    "follow",
    "packet_detail",
    "statistics",
    "upload",
]
