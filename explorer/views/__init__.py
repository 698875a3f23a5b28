from .pages import capture, capture_list

__all__ = ["capture", "capture_list"]
