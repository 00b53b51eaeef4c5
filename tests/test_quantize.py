"""INT8/INT4: the packing, each kernel against plain torch, load-time quantization and the
official quantized checkpoints, all on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import cast

import pytest
import torch

from codegeex2_lsp.backends.local.loader import load_local, load_model
from codegeex2_lsp.backends.local.quantize import (
    QuantLinear,
    dequantize,
    kernel_candidates,
    make_kernel,
    pack_int4,
    quantize_weight,
    select_kernel,
    unpack_int4,
)
from codegeex2_lsp.settings.fields import Quantize, Settings
from codegeex2_lsp.testing import write_tiny_model

CPU = torch.device("cpu")
PROMPT = [1001, 1003, 300, 13, 400, 500, 31, 77]


def _greedy(model: torch.nn.Module, steps: int = 12) -> list[int]:
    ids = list(PROMPT)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(PROMPT) :]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([PROMPT])).logits[0].float()


def test_int4_packing_is_the_official_one() -> None:
    q = torch.tensor([[1, -2, -8, 7]], dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.view(torch.uint8).tolist() == [[0x1E, 0x87]]
    assert torch.equal(unpack_int4(packed), q)
    every = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 2)
    assert torch.equal(unpack_int4(pack_int4(every)), every)


@pytest.mark.parametrize(("bits", "group"), [(8, None), (4, None), (4, 32)])
def test_quantization_error_is_half_a_step(bits: int, group: int | None) -> None:
    weight = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    q, scale = quantize_weight(weight, bits, group)
    assert scale.shape == (16, 64 // (group or 64))
    assert int(q.min()) >= -(2 ** (bits - 1)) and int(q.max()) <= 2 ** (bits - 1) - 1
    step = scale.repeat_interleave(group or 64, dim=1)
    assert bool(((dequantize(q, scale, torch.float32) - weight).abs() <= step / 2 + 1e-7).all())


def test_zero_rows_quantize_to_zero() -> None:
    q, scale = quantize_weight(torch.zeros(2, 8), 8)
    assert not q.any() and bool(torch.isfinite(scale).all())


@pytest.mark.parametrize(
    ("bits", "dtype", "group"),
    [
        (8, torch.float32, None),
        (8, torch.bfloat16, None),
        (4, torch.bfloat16, 128),
        (4, torch.bfloat16, None),
        (4, torch.float32, 128),
    ],
)
def test_cpu_kernels_match_plain_torch(bits: int, dtype: torch.dtype, group: int | None) -> None:
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(96, 512, generator=generator)
    x = torch.randn(2, 5, 512, generator=generator)
    q, scale = quantize_weight(weight, bits, group)
    want = x @ dequantize(q, scale, torch.float32).T
    names = [*kernel_candidates(CPU, dtype, bits), "dequant"]
    assert select_kernel(CPU, dtype, bits, per_row=group is None) in names
    for name in names:
        if name in ("dynamic", "int8pack") and group is not None:
            continue
        got = make_kernel(q, scale, dtype, bits, name)(x.to(dtype)).float()
        assert got.shape == want.shape
        # Dynamic INT8 and the CPU kernels round activations to 8 bits, bfloat16 to 8
        # mantissa bits.
        rounded = name in ("dynamic", "int4cpu", "int8cpu") or dtype == torch.bfloat16
        tolerance = 0.03 if rounded else 1e-5
        error = float((got - want).abs().max() / want.abs().max())
        assert error < tolerance, f"{name}: {error}"


def test_quant_linear_checks_shape_and_adds_bias() -> None:
    layer = QuantLinear(8, 4, True, 8)
    with pytest.raises(ValueError, match="shape"):
        layer.set_weight(torch.zeros(4, 4, dtype=torch.int8), torch.ones(4, 1), torch.float32)
    layer.set_weight(torch.ones(4, 8, dtype=torch.int8), torch.ones(4, 1), torch.float32, "dequant")
    layer.bias = torch.nn.Parameter(torch.arange(4.0), requires_grad=False)
    assert layer(torch.ones(1, 8)).tolist() == [[8.0, 9.0, 10.0, 11.0]]
    assert "int8" in repr(layer)


@pytest.fixture(scope="module")
def float_model(tiny_model_dir: Path) -> torch.nn.Module:
    return load_model(tiny_model_dir, device=CPU, dtype=torch.float32)


@pytest.mark.parametrize(
    ("quantize", "dtype", "bound"),
    [("int8", torch.float32, 0.02), ("int4", torch.bfloat16, 0.15), ("int4", torch.float32, 0.15)],
)
def test_load_time_quantization_stays_close_to_float32(
    tiny_model_dir: Path,
    float_model: torch.nn.Module,
    quantize: str,
    dtype: torch.dtype,
    bound: float,
) -> None:
    model = load_model(tiny_model_dir, device=CPU, dtype=dtype, quantize=quantize)
    linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(linears) == 2 * 6 + 1
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    want = _logits(float_model)
    error = float((_logits(model) - want).abs().max() / want.abs().max())
    # INT8 keeps about 1% per weight; INT4 with groups of 128 about 7%.
    assert error < bound


def _dequantized_copy(quantized_dir: Path, out: Path) -> Path:
    """The float32 checkpoint whose weights are exactly the official checkpoint's ``scale * q``."""
    shutil.copytree(quantized_dir, out)
    config = json.loads((out / "config.json").read_text())
    bits = config.pop("quantization_bit")
    (out / "config.json").write_text(json.dumps(config))
    for shard in out.glob("pytorch_model-*.bin"):
        state = torch.load(shard, weights_only=True)
        for name in [n for n in state if n.endswith("_scale")]:
            scale = state.pop(name).float()[:, None]
            q = state[name.removesuffix("_scale")]
            q = unpack_int4(q) if bits == 4 else q
            state[name.removesuffix("_scale")] = dequantize(q, scale, torch.float32)
        torch.save({n: t.float() for n, t in state.items()}, shard)
    return out


@pytest.mark.parametrize("bits", [8, 4])
def test_official_layout_computes_with_the_stored_values(bits: int, tmp_path: Path) -> None:
    official = write_tiny_model(tmp_path / "official", quantization_bit=bits, dtype=torch.float16)
    config = json.loads((official / "config.json").read_text())
    assert config["quantization_bit"] == bits
    shard = torch.load(official / "pytorch_model-00001-of-00002.bin", weights_only=True)
    qkv = shard["transformer.encoder.layers.0.self_attention.query_key_value.weight"]
    assert qkv.dtype == torch.int8 and qkv.shape[1] == 64 // (8 // bits)

    reference = load_model(
        _dequantized_copy(official, tmp_path / "dense"), device=CPU, dtype=torch.float32
    )
    exact = load_model(official, device=CPU, dtype=torch.float32, kernel="dequant")
    assert torch.allclose(_logits(exact), _logits(reference), atol=1e-5, rtol=1e-5)
    tokens = _greedy(reference)
    assert _greedy(exact) == tokens
    # The default kernels: the same tokens from the same integers.
    fast = load_model(official, device=CPU, dtype=torch.float32 if bits == 8 else torch.bfloat16)
    assert _greedy(fast) == tokens


def test_cpu_int4_packs_in_row_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # One full 64-row block and a 32-row tail, against the whole weight packed at once.
    weight = torch.randn(96, 256, generator=torch.Generator().manual_seed(3))
    q, scale = quantize_weight(weight, 4, 128)
    x = torch.randn(3, 256, dtype=torch.bfloat16)
    whole = make_kernel(q, scale, torch.bfloat16, 4, "int4pack")(x)
    monkeypatch.setattr("codegeex2_lsp.backends.local.quantize._TORCH_PACK_ROWS", 64)
    assert torch.equal(make_kernel(q, scale, torch.bfloat16, 4, "int4pack")(x), whole)


@pytest.mark.parametrize("quantize", ["int4", "int8"])
def test_exact_kernels_load_plain_torch_in_float32_as_a_dequant_load(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantize: str
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    spec = Settings(
        model=str(tiny_model_dir), device="cpu", quantize=cast(Quantize, quantize), kernels="exact"
    ).load_spec()
    reference = load_model(
        tiny_model_dir, device=CPU, dtype=torch.float32, quantize=quantize, kernel="dequant"
    )
    # The first load keeps the layout, the second maps it: both are the exact path.
    for _ in range(2):
        local, description = load_local(spec)
        kernels = {
            getattr(m.kernel, "name", None)
            for m in local.model.modules()
            if isinstance(m, QuantLinear)
        }
        assert kernels == {"dequant"}
        assert f"{quantize} weights, float32" in description
        assert torch.equal(_logits(local.model), _logits(reference))
