"""Errors the engine reports to views, API functions and consumers."""


class EngineError(Exception):
    """The engine refused a request; the message is the engine's own and safe to show."""

    @property
    def message(self) -> str:
        return str(self)


class EngineCrashed(EngineError):
    """The engine process died or stopped answering."""


class RequestTooLong(EngineError):
    """A request would not fit in the engine's input buffer."""


class NotACapture(EngineError):
    """An uploaded file is not a capture file, or has no readable packet."""
