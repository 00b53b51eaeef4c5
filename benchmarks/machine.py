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


def read_speeds(repeats: int = 5) -> list[float]:
    """GB/s of torch summing a 2 GiB float32 array on torch's threads, once per repeat after a
    first pass: how fast this machine's memory reads, the bound of a decode step that reads
    every weight once."""
    import time

    import torch

    data = torch.ones(2**29, dtype=torch.float32)
    data.sum()
    speeds = []
    for _ in range(repeats):
        started = time.perf_counter()
        data.sum()
        speeds.append(data.nbytes / (time.perf_counter() - started) / 1e9)
    return speeds
