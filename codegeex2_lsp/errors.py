"""The one error type for a model that cannot be loaded or a backend that cannot be reached.

It carries what went wrong and what the user can change, so every place that reports it (the
server's message, the command line, the log) tells the same story. It imports nothing, so the
LSP side can catch it without loading any backend.
"""

from __future__ import annotations


class LoadError(Exception):
    """A load that failed: ``message`` says what happened, ``hint`` what to change.

    ``transient`` failures (a server that is down, slow or restarting) may go away by
    themselves, so the load is worth trying again later without the user doing anything.
    """

    transient = False

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
