"""What many test modules share and nothing heavy: the sample file, the server's flags, a port.

Torch-free and LSP-free, so the scheduler's, the wire's and the CLI's tests can use it too.
"""

from __future__ import annotations

import socket
from pathlib import Path

SOURCE = "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        "
"""A Python file ending inside a ``with`` block, where the tiny model suggests something."""

CURSOR = (5, 8)
"""The end of :data:`SOURCE`, as an LSP (line, character)."""


def local_flags(model_dir: Path, *extra: str) -> tuple[str, ...]:
    """The server on ``model_dir`` on the CPU, answering without a debounce, then ``extra``."""
    return ("--model", str(model_dir), "--device", "cpu", "--debounce-ms", "0", *extra)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
