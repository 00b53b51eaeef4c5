"""Device and dtype resolution, with the hardware described by hand."""

from __future__ import annotations

import pytest
import torch

from codegeex2_lsp.engine.devices import DeviceError, Hardware, resolve

CPU_ONLY = Hardware(cuda_count=0, cuda_bf16=(), mps=False)
AMPERE = Hardware(cuda_count=1, cuda_bf16=(True,), mps=False)
TURING_AND_AMPERE = Hardware(cuda_count=2, cuda_bf16=(False, True), mps=False)
APPLE = Hardware(cuda_count=0, cuda_bf16=(), mps=True)


@pytest.mark.parametrize(
    ("device", "dtype", "hardware", "expected_device", "expected_dtype"),
    [
        ("auto", "auto", CPU_ONLY, "cpu", torch.float32),
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
    with pytest.raises(DeviceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(device, "auto", hardware)


def test_detect_describes_this_machine() -> None:
    hardware = Hardware.detect()
    assert hardware.cuda_count == len(hardware.cuda_bf16)
