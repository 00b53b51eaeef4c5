"""``convert``: safetensors in GLM names, optionally pre-quantized, loading to the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codegeex2_lsp.backends.local.convert import convert
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.cli import main
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.testing import write_tiny_model

CPU = torch.device("cpu")
IDS = torch.tensor([[1001, 1003, 300, 13, 400, 500, 2]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize(
    ("quantize", "dtype"),
    [("none", torch.float32), ("int8", torch.float32), ("int4", torch.bfloat16)],
)
def test_round_trip(
    tiny_model_dir: Path, tmp_path: Path, quantize: str, dtype: torch.dtype
) -> None:
    result = convert(str(tiny_model_dir), tmp_path / "out", quantize=quantize)
    files = sorted(p.name for p in result.directory.iterdir())
    assert "model.safetensors.index.json" in files and "tokenizer.model" in files
    assert not [name for name in files if name.endswith(".bin")]
    config = json.loads((result.directory / "config.json").read_text())
    if quantize == "none":
        assert "weight_quantization" not in config
    else:
        assert config["weight_quantization"]["bits"] == int(quantize[-1])
    original = load_model(tiny_model_dir, device=CPU, dtype=dtype, quantize=quantize)
    converted = load_model(result.directory, device=CPU, dtype=dtype)
    # The same integers and scales, so the same logits.
    assert torch.equal(_logits(converted), _logits(original))


def test_official_int4_converts_without_requantizing(tmp_path: Path) -> None:
    official = write_tiny_model(tmp_path / "official", quantization_bit=4, dtype=torch.float16)
    result = convert(str(official), tmp_path / "out", quantize="int4")
    assert result.quantize == "int4"
    want = _logits(load_model(official, device=CPU, dtype=torch.float32, kernel="dequant"))
    got = _logits(load_model(result.directory, device=CPU, dtype=torch.float32, kernel="dequant"))
    assert torch.equal(got, want)
    with pytest.raises(LoadError, match="lose precision"):
        convert(str(official), tmp_path / "again", quantize="int8")


def test_int4_groups_are_recorded_and_checked_on_load(tmp_path: Path) -> None:
    # 256 columns hold two groups of 128: a layout that differs from one scale per row.
    source = write_tiny_model(
        tmp_path / "wide", hidden_size=256, num_attention_heads=4, kv_channels=64
    )
    result = convert(str(source), tmp_path / "out", quantize="int4")
    config_path = result.directory / "config.json"
    config = json.loads(config_path.read_text())
    group = config["weight_quantization"]["group_size"]
    (shard,) = result.directory.glob("*.safetensors")
    scale = load_file(shard)["model.layers.0.self_attn.o_proj.weight_scale"]
    assert scale.shape == (256, 256 // group) and scale.shape[1] > 1
    load_model(result.directory, device=CPU, dtype=torch.bfloat16)
    config["weight_quantization"]["group_size"] = group // 2
    config_path.write_text(json.dumps(config))
    with pytest.raises(LoadError, match="scales per row"):
        load_model(result.directory, device=CPU, dtype=torch.bfloat16)


def test_refuses_a_non_empty_destination(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(LoadError, match="not empty"):
        convert(str(tiny_model_dir), tmp_path / "out")


def test_command_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(tiny_model_dir), str(tmp_path / "out"), "--quantize", "int8"]) == 0
    assert "int8" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "x")]) == 1
    assert "does not exist" in capsys.readouterr().err
