from .captures import capture_delete, capture_list, capture_properties, upload
from .packets import capture, packet_detail

__all__ = ["capture", "capture_delete", "capture_list", "capture_properties", "packet_detail", "upload"]
