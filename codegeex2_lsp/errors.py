"""The one error type for a model that cannot be loaded or a backend that cannot be reached,
and the one report ``doctor`` makes of every backend.

It carries what went wrong and what the user can change, so every place that reports it (the
server's message, the command line, the log) tells the same story. It imports nothing, so the
LSP side can catch it without loading any backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class Diagnosis:
    """Lines to print, and the problems that mean the configuration cannot work."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, error: LoadError) -> Diagnosis:
        """Note ``error`` as a problem, said as everywhere else: what happened, what to do."""
        self.problems.append(f"{error.message}. {error.hint}")
        return self
