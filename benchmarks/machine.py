"""The machine a benchmark ran on, named beside every figure it prints."""

from __future__ import annotations

import os


def cpu_name() -> str:
    """The CPU's model name, so no figure is read without the machine it came from."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine
