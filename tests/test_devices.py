"""Device and dtype resolution, with the hardware described by hand."""

from __future__ import annotations

import pytest
import torch

from codegeex2_lsp.backends.local.devices import Fits, Hardware, cpu_features, resolve
from codegeex2_lsp.errors import LoadError

CPU_ONLY = Hardware(cuda_count=0, cuda_bf16=(), mps=False)
AMPERE = Hardware(cuda_count=1, cuda_bf16=(True,), mps=False)
TURING_AND_AMPERE = Hardware(cuda_count=2, cuda_bf16=(False, True), mps=False)
APPLE = Hardware(cuda_count=0, cuda_bf16=(), mps=True)
SAPPHIRE_RAPIDS = Hardware(
    cuda_count=0, cuda_bf16=(), mps=False, cpu_features=frozenset({"avx2", "amx_bf16"})
)
FOUR_AMPERES = Hardware(cuda_count=4, cuda_bf16=(True,) * 4, mps=False)
SIX_B = 6_243_584_000


def _fits_only(*allowed: str) -> Fits:
    return lambda device, dtype, quantize: quantize in allowed


@pytest.mark.parametrize(
    ("device", "dtype", "hardware", "expected_device", "expected_dtype"),
    [
        ("auto", "auto", CPU_ONLY, "cpu", torch.float32),
        ("auto", "auto", SAPPHIRE_RAPIDS, "cpu", torch.bfloat16),
        ("auto", "auto", AMPERE, "cuda:0", torch.bfloat16),
        ("auto", "auto", TURING_AND_AMPERE, "cuda:0", torch.float16),
        ("cuda:1", "auto", TURING_AND_AMPERE, "cuda:1", torch.bfloat16),
        ("auto", "auto", APPLE, "mps", torch.float16),
        ("cpu", "auto", AMPERE, "cpu", torch.float32),
        ("cpu", "bfloat16", CPU_ONLY, "cpu", torch.bfloat16),
        ("cuda", "float32", AMPERE, "cuda:0", torch.float32),
    ],
)
def test_auto_rules(
    device: str,
    dtype: str,
    hardware: Hardware,
    expected_device: str,
    expected_dtype: torch.dtype,
) -> None:
    placement = resolve(device, dtype, hardware)
    assert placement.device == torch.device(expected_device)
    assert placement.dtype == expected_dtype
    assert placement.reason


@pytest.mark.parametrize(
    ("device", "hardware", "message"),
    [
        ("cuda", CPU_ONLY, "no CUDA GPU"),
        ("cuda:2", TURING_AND_AMPERE, "found 2 CUDA GPU(s)"),
        ("mps", CPU_ONLY, "'mps' is not available"),
    ],
)
def test_missing_devices_say_what_exists(device: str, hardware: Hardware, message: str) -> None:
    with pytest.raises(LoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(device, "auto", hardware)


def test_detect_describes_this_machine() -> None:
    """Detection agrees with torch, and the placement `auto` picks from it runs here."""
    hardware = Hardware.detect()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert hardware.cuda_count == count
    assert len(hardware.cuda_bf16) == len(hardware.cuda_names) == len(hardware.cuda_memory)
    assert len(hardware.cuda_memory) == count
    assert all(memory > 0 for memory in hardware.cuda_memory)
    assert hardware.cpu_features == cpu_features()
    placement = resolve("auto", "auto", hardware)
    ones = torch.ones(4, 4, device=placement.device, dtype=placement.dtype)
    assert (ones @ ones).sum().item() == 64


@pytest.mark.parametrize(
    ("hardware", "parameters", "fits", "quantize", "dtype"),
    [
        # CPU: INT8 for big models (float32 activations for the dynamic kernel), float for tiny.
        (CPU_ONLY, SIX_B, _fits_only("none", "int8", "int4"), "int8", torch.float32),
        (CPU_ONLY, 10_000, _fits_only("none", "int8", "int4"), "none", torch.float32),
        # GPUs keep full precision while it fits, then the largest precision that does.
        (AMPERE, SIX_B, _fits_only("none", "int8", "int4"), "none", torch.bfloat16),
        (AMPERE, SIX_B, _fits_only("int8", "int4"), "int8", torch.bfloat16),
        (AMPERE, SIX_B, _fits_only("int4"), "int4", torch.bfloat16),
        (APPLE, SIX_B, _fits_only("int4"), "int4", torch.float16),
    ],
)
def test_auto_quantize(
    hardware: Hardware, parameters: int, fits: Fits, quantize: str, dtype: torch.dtype
) -> None:
    placement = resolve("auto", "auto", hardware, quantize="auto", parameters=parameters, fits=fits)
    assert (placement.quantize, placement.dtype) == (quantize, dtype)
    assert quantize in placement.reason


@pytest.mark.parametrize(
    ("quantize", "fits", "dtype", "why"),
    [
        ("int8", _fits_only("int8"), torch.float32, "dynamic INT8"),
        ("int4", _fits_only("int4"), torch.bfloat16, "INT4 kernels"),
        ("none", _fits_only("none"), torch.float32, "fastest exact"),
        ("none", _fits_only(), torch.bfloat16, "would not fit"),
    ],
)
def test_cpu_dtype_follows_the_kernels_and_memory(
    quantize: str, fits: Fits, dtype: torch.dtype, why: str
) -> None:
    placement = resolve("cpu", "auto", CPU_ONLY, quantize=quantize, fits=fits)
    assert placement.dtype == dtype
    assert why in placement.reason
    assert why in placement.describe()


@pytest.mark.parametrize(
    ("hardware", "device", "quantize", "dtype", "kernel"),
    [
        (CPU_ONLY, "cpu", "int4", "auto", "dequant"),
        (CPU_ONLY, "cpu", "int8", "auto", "dequant"),
        (AMPERE, "cuda", "int4", "auto", "dequant"),
        (CPU_ONLY, "cpu", "int4", "bfloat16", "dequant"),
        (CPU_ONLY, "cpu", "none", "auto", None),
    ],
)
def test_exact_kernels_force_plain_torch_in_float32_unless_told(
    hardware: Hardware, device: str, quantize: str, dtype: str, kernel: str | None
) -> None:
    placement = resolve(device, dtype, hardware, quantize=quantize, kernels="exact")
    assert placement.kernel == kernel
    if kernel is not None and dtype == "auto":
        assert placement.dtype == torch.float32
        assert "exact kernels" in placement.reason
    if dtype != "auto":
        assert f"dtype {dtype} as configured" in placement.reason
    assert resolve(device, dtype, hardware, quantize=quantize).kernel is None


def test_num_gpus_picks_consecutive_gpus() -> None:
    placement = resolve("cuda:1", "auto", FOUR_AMPERES, num_gpus=3)
    assert placement.devices == tuple(torch.device("cuda", i) for i in (1, 2, 3))
    with pytest.raises(LoadError, match="needs 5 GPUs; found 4"):
        resolve("cuda:1", "auto", FOUR_AMPERES, num_gpus=4)
    with pytest.raises(LoadError, match="needs CUDA"):
        resolve("cpu", "auto", FOUR_AMPERES, num_gpus=2)


def test_cpu_features_are_known_flags() -> None:
    assert cpu_features() <= {
        "avx2",
        "avx512f",
        "avx512_bf16",
        "avx512_vnni",
        "amx_bf16",
        "amx_int8",
        "neon",
    }
