"""Errors the benchmark reports as a clear message instead of a traceback."""


class BenchError(Exception):
    """A measurement could not be made (missing tool, broken file, failed process)."""


class ServerUnavailable(BenchError):
    """The server half could not run: app missing, start-up failed, endpoint broken."""
