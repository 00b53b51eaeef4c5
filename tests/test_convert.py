"""``convert``: safetensors in GLM names, optionally pre-quantized, loading to the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codegeex2_lsp.cli import main
from codegeex2_lsp.engine.checkpoint import ModelLoadError, load_model
from codegeex2_lsp.engine.convert import convert
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
    with pytest.raises(ModelLoadError, match="lose precision"):
        convert(str(official), tmp_path / "again", quantize="int8")


def test_refuses_a_non_empty_destination(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ModelLoadError, match="not empty"):
        convert(str(tiny_model_dir), tmp_path / "out")


def test_command_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(tiny_model_dir), str(tmp_path / "out"), "--quantize", "int8"]) == 0
    assert "int8" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "x")]) == 1
    assert "does not exist" in capsys.readouterr().err
