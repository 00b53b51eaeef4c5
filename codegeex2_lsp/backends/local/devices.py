"""Turning the ``device``, ``dtype``, ``quantize`` and ``numGpus`` settings into a placement.

The hardware facts are gathered once into :class:`Hardware`, and whether a precision fits in
memory is a function passed in, so the rules can be tested with any machine described by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from codegeex2_lsp.backends.local.quantize import bits_of
from codegeex2_lsp.errors import LoadError

CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "neon")
"""The CPU flags that decide which kernels and precisions are fast."""

LARGE_MODEL_PARAMETERS = 1_000_000_000
"""From here on CPU prefill is slow enough in float that INT8 is the better default."""


@dataclass(frozen=True)
class Hardware:
    """What the resolution rules need to know about this machine."""

    cuda_count: int
    cuda_bf16: tuple[bool, ...]
    mps: bool
    cuda_names: tuple[str, ...] = ()
    cuda_memory: tuple[int, ...] = ()
    cpu_features: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def detect(cls) -> Hardware:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        bf16 = tuple(torch.cuda.get_device_capability(i)[0] >= 8 for i in range(count))
        names = tuple(torch.cuda.get_device_name(i) for i in range(count))
        memory = tuple(torch.cuda.get_device_properties(i).total_memory for i in range(count))
        mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        return cls(
            cuda_count=count,
            cuda_bf16=bf16,
            mps=mps,
            cuda_names=names,
            cuda_memory=memory,
            cpu_features=cpu_features(),
        )

    @property
    def cpu_bf16(self) -> bool:
        """bfloat16 matmuls run natively (AVX-512 BF16 or AMX); on AVX2 they are emulated."""
        return bool({"avx512_bf16", "amx_bf16"} & self.cpu_features)


def cpu_features() -> frozenset[str]:
    """The :data:`CPU_FEATURES` this CPU has, from ``/proc/cpuinfo`` where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    flags = set(line.partition(":")[2].split())
                    if "asimd" in flags:
                        flags.add("neon")
                    return frozenset(f for f in CPU_FEATURES if f in flags)
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability().lower()
    return frozenset({"avx2"} if capability.startswith("avx") else set()) | (
        {"avx512f"} if capability == "avx512" else set()
    )


@dataclass(frozen=True)
class Placement:
    """Where and in what precision the model runs, and why, for logs and messages."""

    device: torch.device
    dtype: torch.dtype
    reason: str
    quantize: str = "none"
    devices: tuple[torch.device, ...] = ()
    kernels: str = "fast"

    @property
    def bits(self) -> int:
        return bits_of(self.quantize)

    @property
    def kernel(self) -> str | None:
        """The quantized weights' kernel ``kernels`` forces; None lets the fastest be picked.

        ``exact`` is plain torch's integers times scales (``dequant``), as upstream computes,
        with no activation quantized on the way.
        """
        return "dequant" if self.kernels == "exact" and self.bits else None

    def describe(self) -> str:
        """One line for logs and ``doctor``."""
        where = ", ".join(str(d) for d in self.devices) if self.devices else str(self.device)
        dtype = str(self.dtype).removeprefix("torch.")
        precision = dtype if self.quantize == "none" else f"{self.quantize} weights, {dtype}"
        return f"{where}, {precision} ({self.reason})"


_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

Fits = Callable[[torch.device, torch.dtype, str], bool]
"""Whether the model fits on a device in a dtype and quantization."""


def resolve(
    device: str,
    dtype: str,
    hardware: Hardware,
    *,
    quantize: str = "none",
    num_gpus: int = 1,
    parameters: int = 0,
    fits: Fits = lambda device, dtype, quantize: True,
    kernels: str = "fast",
) -> Placement:
    """Apply the ``auto`` rules.

    ``auto`` device picks CUDA, then MPS, then CPU. ``auto`` dtype picks bf16 on CUDA GPUs that
    support it and fp16 on older ones (bf16 is emulated there and upstream reports garbage),
    fp16 on MPS. On CPU it follows the kernels (measured, benchmarks/BENCHMARKS.md): float32
    with INT8 (the dynamic INT8 kernel computes in float32), bfloat16 with INT4 (half the KV
    cache of float32, and torch's INT4 kernel, used where this project's cannot be built, takes
    only bfloat16), and without quantization bfloat16 where the CPU has native bf16, else
    float32, which on AVX2 runs bf16 matmuls several times faster, unless float32 does not fit.
    ``exact`` kernels for quantized weights compute in float32 on every device, as upstream.

    ``auto`` quantize keeps full precision on GPUs and falls back to INT8, then INT4 when it
    does not fit; on CPU it picks INT8 for models of a billion parameters or more, whose
    prefill is several times faster in INT8 than in any float precision there.
    """
    chosen = _resolve_device(device, hardware)
    devices = _resolve_devices(chosen, num_gpus, hardware)
    reasons: list[str] = []
    gpu_dtype = _gpu_dtype(chosen, hardware) if chosen.type != "cpu" else None
    if quantize == "auto":
        quantize, why = _auto_quantize(chosen, gpu_dtype, parameters, fits)
        reasons.append(why)
    if dtype != "auto":
        chosen_dtype, why = _DTYPES[dtype], f"dtype {dtype} as configured"
    elif kernels == "exact" and bits_of(quantize):
        chosen_dtype, why = torch.float32, "float32: the exact kernels compute as upstream"
    elif gpu_dtype is not None:
        chosen_dtype, why = gpu_dtype
    else:
        chosen_dtype, why = _cpu_dtype(quantize, hardware, fits)
    reasons.insert(0, why)
    return Placement(chosen, chosen_dtype, "; ".join(reasons), quantize, devices, kernels)


def _gpu_dtype(chosen: torch.device, hardware: Hardware) -> tuple[torch.dtype, str]:
    if chosen.type == "mps":
        return torch.float16, "float16 on Apple MPS"
    if hardware.cuda_bf16[chosen.index or 0]:
        return torch.bfloat16, "bfloat16: the GPU supports it"
    return torch.float16, "float16: the GPU has no native bfloat16"


def _auto_quantize(
    chosen: torch.device,
    gpu_dtype: tuple[torch.dtype, str] | None,
    parameters: int,
    fits: Fits,
) -> tuple[str, str]:
    if gpu_dtype is None:
        if parameters >= LARGE_MODEL_PARAMETERS:
            return "int8", "int8: the closer precision and the fastest prefill on CPU"
        return "none", "none: a small model runs fastest in float"
    for quantize in ("none", "int8", "int4"):
        if fits(chosen, gpu_dtype[0], quantize):
            why = "full precision fits" if quantize == "none" else "the largest precision that fits"
            return quantize, f"{quantize}: {why}"
    return "none", "none: nothing fits; see the memory check"


def _cpu_dtype(quantize: str, hardware: Hardware, fits: Fits) -> tuple[torch.dtype, str]:
    if quantize == "int8":
        return torch.float32, "float32: the dynamic INT8 kernel computes in float32"
    if quantize == "int4":
        return torch.bfloat16, "bfloat16: the INT4 kernels' compact choice on CPU"
    if hardware.cpu_bf16:
        return torch.bfloat16, "bfloat16: the CPU has native bfloat16"
    cpu = torch.device("cpu")
    if not fits(cpu, torch.float32, quantize):
        return torch.bfloat16, "bfloat16: float32 would not fit in memory"
    return torch.float32, "float32: the fastest exact precision on this CPU"


def _missing(message: str) -> LoadError:
    """A device the settings ask for that this machine does not have."""
    return LoadError(message, "set codegeex2.device to 'auto' or 'cpu' and codegeex2.numGpus to 1")


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
            raise _missing("device 'mps' is not available here; use 'auto' or 'cpu'")
        return torch.device("mps")
    index = int(device.partition(":")[2] or 0)
    if index >= hardware.cuda_count:
        found = f"{hardware.cuda_count} CUDA GPU(s)" if hardware.cuda_count else "no CUDA GPU"
        raise _missing(f"device {device!r} is not available: found {found}; use 'auto' or 'cpu'")
    return torch.device("cuda", index)


def _resolve_devices(
    chosen: torch.device, num_gpus: int, hardware: Hardware
) -> tuple[torch.device, ...]:
    """The GPUs to split over: ``num_gpus`` of them from the chosen one on."""
    if num_gpus <= 1:
        return (chosen,)
    if chosen.type != "cuda":
        raise _missing(f"numGpus {num_gpus} needs CUDA GPUs; the model runs on {chosen.type}")
    first = chosen.index or 0
    if first + num_gpus > hardware.cuda_count:
        raise _missing(
            f"numGpus {num_gpus} from cuda:{first} needs {first + num_gpus} GPUs; "
            f"found {hardware.cuda_count}"
        )
    return tuple(torch.device("cuda", first + i) for i in range(num_gpus))
