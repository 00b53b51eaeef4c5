"""Memory estimates, the preflight message, and layer splits, computed without the hardware."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codegeex2_lsp.backends.local.devices import Hardware
from codegeex2_lsp.backends.local.loader import load_local
from codegeex2_lsp.backends.local.memory import CODEGEEX2_6B, GB, ModelSize, estimate
from codegeex2_lsp.backends.local.placement import plan_layers, plan_load, split_counts
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.fields import Settings

CPU_ONLY = Hardware(cuda_count=0, cuda_bf16=(), mps=False)
ONE_GPU = Hardware(cuda_count=1, cuda_bf16=(True,), mps=False)
FOUR_GPUS = Hardware(cuda_count=4, cuda_bf16=(True,) * 4, mps=False)

SIZE = ModelSize.from_config(CODEGEEX2_6B)
MODEL = "THUDM/codegeex2-6b"


def _free(cpu: float, gpu: float = 0.0) -> object:
    return lambda device: int((gpu if device.type == "cuda" else cpu) * GB)


def test_sizes_match_the_published_checkpoint() -> None:
    assert SIZE.parameters == 6_243_584_032 - 32  # the checkpoint also stores inv_freq
    bf16 = estimate(SIZE, torch.bfloat16, 0, 8192)
    assert bf16.weights == 12_487_168_000
    assert round(bf16.kv_cache / 2**20) == 224  # 28 KiB per token in 16 bits
    # The published GPU figures: 13.1 GB in 16 bits; INT8 and INT4 well under 8.2 / 5.5 GB.
    assert round(bf16.total / GB, 1) == 13.1
    assert estimate(SIZE, torch.bfloat16, 8, 8192).total < 8.2 * GB
    assert estimate(SIZE, torch.bfloat16, 4, 8192).total < 5.5 * GB


@pytest.mark.parametrize(
    ("quantize", "free", "message"),
    [
        (
            "none",
            7.9,
            "needs 13.1 GB on the CPU (12.5 GB weights, 0.2 GB KV cache for 8192 "
            "tokens), 7.9 GB free: try quantize=int8",
        ),
        ("none", 5.0, "13.1 GB on the CPU"),
        ("int8", 5.0, "7.4 GB on the CPU"),
        ("int4", 2.0, "2.0 GB free: free memory, or use a smaller model"),
    ],
)
def test_preflight_names_the_numbers_and_what_fits(
    quantize: str, free: float, message: str
) -> None:
    with pytest.raises(LoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_load(
            CODEGEEX2_6B,
            Settings(
                model=MODEL, device="cpu", dtype="auto", quantize=quantize, num_gpus=1
            ).load_spec(),
            hardware=CPU_ONLY,
            free=_free(free),
        )
    if free == 5.0 and quantize == "none":
        with pytest.raises(LoadError, match="try quantize=int4"):
            plan_load(
                CODEGEEX2_6B,
                Settings(
                    model=MODEL, device="cpu", dtype="auto", quantize="none", num_gpus=1
                ).load_spec(),
                hardware=CPU_ONLY,
                free=_free(free),
            )


def test_float32_that_does_not_fit_becomes_bfloat16() -> None:
    plan = plan_load(
        CODEGEEX2_6B,
        Settings(model=MODEL, device="cpu", dtype="auto", quantize="none", num_gpus=1).load_spec(),
        hardware=CPU_ONLY,
        free=_free(20),
    )
    assert plan.placement.dtype == torch.bfloat16
    assert "would not fit" in plan.placement.reason


@pytest.mark.parametrize(("gpus", "counts"), [(2, [14, 14]), (3, [9, 10, 9]), (4, [6, 8, 8, 6])])
def test_layer_split_is_memory_balanced(gpus: int, counts: list[int]) -> None:
    plan = plan_load(
        CODEGEEX2_6B,
        Settings(
            model=MODEL, device="cuda", dtype="auto", quantize="none", num_gpus=gpus
        ).load_spec(),
        hardware=FOUR_GPUS,
        free=_free(64, 24),
    )
    devices = [torch.device("cuda", i) for i in range(gpus)]
    assert split_counts([devices.index(d) for d in plan.layer_devices], gpus) == counts
    # In order: the first layers on the first GPU (with the embedding), the last on the last.
    assert plan.layer_devices == sorted(plan.layer_devices, key=lambda d: d.index)
    assert plan.note.startswith("layers per GPU")


def test_uneven_gpus_get_layers_in_proportion() -> None:
    plan = plan_layers(
        SIZE, [int(20 * GB), int(10 * GB)], dtype=torch.bfloat16, bits=0, tokens=8192
    )
    first, second = split_counts(plan, 2)
    assert first > second and first + second == 28


def test_split_that_cannot_fit() -> None:
    with pytest.raises(LoadError, match="do not fit across 2 devices"):
        plan_layers(SIZE, [int(4 * GB)] * 2, dtype=torch.bfloat16, bits=0, tokens=8192)


def test_small_gpu_spills_the_last_layers_to_the_cpu() -> None:
    plan = plan_load(
        CODEGEEX2_6B,
        Settings(model=MODEL, device="auto", dtype="auto", quantize="none", num_gpus=1).load_spec(),
        hardware=ONE_GPU,
        free=_free(32, 8),
    )
    on_gpu = sum(1 for d in plan.layer_devices if d.type == "cuda")
    assert 0 < on_gpu < 28
    assert plan.layer_devices[-1] == torch.device("cpu")
    assert f"{on_gpu} of 28 layers on cuda:0" in plan.note


def test_auto_on_a_small_gpu_quantizes_instead() -> None:
    plan = plan_load(
        CODEGEEX2_6B,
        Settings(model=MODEL, device="auto", dtype="auto", quantize="auto", num_gpus=1).load_spec(),
        hardware=ONE_GPU,
        free=_free(32, 8),
    )
    assert plan.placement.quantize == "int8"
    assert all(d.type == "cuda" for d in plan.layer_devices)


def test_load_local_uses_the_settings(tiny_model_dir: Path) -> None:
    model, description = load_local(
        Settings(model=str(tiny_model_dir), device="cpu", dtype="auto", quantize="int8").load_spec()
    )
    assert "int8 weights" in description
    assert any(type(m).__name__ == "QuantLinear" for m in model.model.modules())
    with pytest.raises(LoadError, match="numGpus"):
        load_local(
            Settings(
                model=str(tiny_model_dir), device="cpu", dtype="auto", quantize="none", num_gpus=2
            ).load_spec()
        )
