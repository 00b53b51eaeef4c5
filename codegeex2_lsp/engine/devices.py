"""Turning the ``device`` and ``dtype`` settings into a torch device and dtype, with the reason why.

The hardware facts are gathered once into :class:`Hardware` so the rules can be tested with
any machine described by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DeviceError(ValueError):
    """The requested device does not exist here; the message says what does."""


@dataclass(frozen=True)
class Hardware:
    """What the resolution rules need to know about this machine."""

    cuda_count: int
    cuda_bf16: tuple[bool, ...]
    mps: bool

    @classmethod
    def detect(cls) -> Hardware:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        bf16 = tuple(torch.cuda.get_device_capability(i)[0] >= 8 for i in range(count))
        mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        return cls(cuda_count=count, cuda_bf16=bf16, mps=mps)


@dataclass(frozen=True)
class Placement:
    """Where and in what precision the model runs, and why, for logs and messages."""

    device: torch.device
    dtype: torch.dtype
    reason: str


_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve(device: str, dtype: str, hardware: Hardware) -> Placement:
    """Apply the ``auto`` rules.

    ``auto`` device picks CUDA, then MPS, then CPU. ``auto`` dtype picks bf16 on CUDA GPUs that
    support it and fp16 on older ones (bf16 is emulated there and upstream reports garbage),
    fp16 on MPS, and float32 on CPU, where bf16 matmuls without AVX-512/AMX are several times
    slower than float32.
    """
    chosen = _resolve_device(device, hardware)
    if dtype != "auto":
        return Placement(chosen, _DTYPES[dtype], f"dtype {dtype} as configured")
    if chosen.type == "cuda":
        index = chosen.index or 0
        if hardware.cuda_bf16[index]:
            return Placement(chosen, torch.bfloat16, "bfloat16: the GPU supports it")
        return Placement(chosen, torch.float16, "float16: the GPU has no native bfloat16")
    if chosen.type == "mps":
        return Placement(chosen, torch.float16, "float16 on Apple MPS")
    return Placement(chosen, torch.float32, "float32: the fastest exact precision on CPU")


def _resolve_device(device: str, hardware: Hardware) -> torch.device:
    if device == "auto":
        if hardware.cuda_count:
            return torch.device("cuda", 0)
        if hardware.mps:
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "mps":
        if not hardware.mps:
            raise DeviceError("device 'mps' is not available here; use 'auto' or 'cpu'")
        return torch.device("mps")
    index = int(device.partition(":")[2] or 0)
    if index >= hardware.cuda_count:
        found = f"{hardware.cuda_count} CUDA GPU(s)" if hardware.cuda_count else "no CUDA GPU"
        raise DeviceError(f"device {device!r} is not available: found {found}; use 'auto' or 'cpu'")
    return torch.device("cuda", index)
