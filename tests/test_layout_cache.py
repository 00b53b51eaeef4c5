"""Quantized weights kept in their kernels' layout: the second load maps them, with the same
outputs; a changed checkpoint, a damaged entry and concurrent writers are all handled."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from codegeex2_lsp.backends.local import layout_cache
from codegeex2_lsp.backends.local.layout_cache import DATA, MANIFEST, LayoutCache, list_entries
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.local.quantize import QuantLinear
from codegeex2_lsp.testing import write_tiny_model

CPU = torch.device("cpu")
PROMPT = torch.tensor([[5, 17, 99, 3, 250, 42, 7]])
MAPPED = "mapped the kept layout"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "model")


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(PROMPT).logits


def _load(model_dir: Path, root: Path, quantize: str, **kwargs: object) -> torch.nn.Module:
    dtype = torch.bfloat16 if quantize == "int4" else torch.float32
    return load_model(
        model_dir, device=CPU, dtype=dtype, quantize=quantize, layout_cache=root, **kwargs
    )


def _kernels(model: torch.nn.Module) -> list[str]:
    return [m.kernel.name for m in model.modules() if isinstance(m, QuantLinear) and m.kernel]


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_second_load_maps_the_kept_layout_with_identical_outputs(
    model_dir: Path, tmp_path: Path, quantize: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "layouts"
    caplog.set_level(logging.INFO, logger=layout_cache.__name__)
    first = _load(model_dir, root, quantize)
    assert MAPPED not in caplog.text
    assert len(list_entries(root)) == 1
    second = _load(model_dir, root, quantize)
    assert MAPPED in caplog.text
    assert _kernels(second) == _kernels(first)
    assert torch.equal(_logits(second), _logits(first))
    uncached = load_model(
        model_dir, device=CPU, dtype=second.dtype, quantize=quantize, layout_cache=None
    )
    assert torch.equal(_logits(second), _logits(uncached))


def test_a_stored_quantized_checkpoint_is_kept_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = write_tiny_model(tmp_path / "model", quantization_bit=4)
    root = tmp_path / "layouts"
    caplog.set_level(logging.INFO, logger=layout_cache.__name__)
    first = _load(model_dir, root, "int4")
    second = _load(model_dir, root, "int4")
    assert MAPPED in caplog.text
    assert torch.equal(_logits(second), _logits(first))


def test_a_changed_checkpoint_misses_and_replaces_its_older_entry(
    model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "layouts"
    _load(model_dir, root, "int8")
    [before] = list_entries(root)
    config = model_dir / "config.json"
    config.write_text(config.read_text() + "\n")
    changed = _load(model_dir, root, "int8")
    [after] = list_entries(root)
    assert after.directory != before.directory
    assert not before.directory.exists()
    assert _kernels(changed)


def test_other_settings_get_entries_of_their_own(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "layouts"
    _load(model_dir, root, "int8")
    _load(model_dir, root, "int4")
    # One checkpoint keeps one entry: the settings loaded last.
    assert len(list_entries(root)) == 1
    other = write_tiny_model(tmp_path / "other", seed=1)
    _load(other, root, "int8")
    assert {entry.source for entry in list_entries(root)} == {
        str(model_dir.resolve()),
        str(other.resolve()),
    }


def _entry(root: Path) -> Path:
    [entry] = list_entries(root)
    return entry.directory


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size - 64)


def _break_manifest(path: Path) -> None:
    path.with_name(MANIFEST).write_text("{not json")


def _wrong_shape(path: Path) -> None:
    manifest_path = path.with_name(MANIFEST)
    manifest = json.loads(manifest_path.read_text())
    module = next(iter(manifest["modules"].values()))
    tensor = next(iter(module["tensors"].values()))
    tensor["shape"] = [tensor["shape"][0] * 4, *tensor["shape"][1:]]
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", [_flip_a_byte, _truncate, _break_manifest, _wrong_shape])
def test_a_damaged_entry_is_never_used_and_is_rebuilt(
    model_dir: Path, tmp_path: Path, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "layouts"
    good = _logits(_load(model_dir, root, "int4"))
    assert callable(damage)
    damage(_entry(root) / DATA)
    caplog.set_level(logging.INFO, logger=layout_cache.__name__)
    reloaded = _load(model_dir, root, "int4")
    assert "damaged" in caplog.text
    assert MAPPED not in caplog.text
    assert torch.equal(_logits(reloaded), good)
    caplog.clear()
    again = _load(model_dir, root, "int4")
    assert MAPPED in caplog.text
    assert torch.equal(_logits(again), good)


def test_concurrent_writers_leave_one_whole_entry(model_dir: Path, tmp_path: Path) -> None:
    model = load_model(model_dir, device=CPU, dtype=torch.float32, quantize="int8")
    kernels = {
        name: module.kernel
        for name, module in model.named_modules()
        if isinstance(module, QuantLinear) and module.kernel is not None
    }
    root = tmp_path / "layouts"
    barrier = threading.Barrier(4)

    def write() -> None:
        barrier.wait()
        LayoutCache(root, "samekey", str(model_dir)).save(kernels)

    writers = [threading.Thread(target=write) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert sorted(p.name for p in root.iterdir()) == ["samekey"]
    restored = LayoutCache(root, "samekey", str(model_dir)).load(torch.float32)
    assert restored is not None
    assert sorted(restored) == sorted(kernels)
    x = torch.randn(3, 64)
    name = "model.layers.0.self_attn.q_proj"
    if name in kernels:
        assert torch.equal(restored[name](x), kernels[name](x))


def test_no_room_or_no_permission_costs_only_the_cache(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    caplog.set_level(logging.WARNING, logger=layout_cache.__name__)
    model = _load(model_dir, blocked / "layouts", "int8")
    assert _kernels(model)
    assert "not keeping the quantized layout" in caplog.text


def test_the_command_line_lists_and_clears_the_caches(model_dir: Path, tmp_path: Path) -> None:
    cache_home = tmp_path / "cache"
    _load(model_dir, cache_home / "codegeex2-lsp" / "layouts", "int8")
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-I", "-m", "codegeex2_lsp", "cache", *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=tmp_path,
        )
        return done.stdout

    listed = cli("list")
    assert str(model_dir.resolve()) in listed
    assert "clear" in cli("clear")
    assert list_entries(cache_home / "codegeex2-lsp" / "layouts") == []
    assert str(model_dir.resolve()) not in cli("list")
    shutil.rmtree(cache_home, ignore_errors=True)


@pytest.mark.parametrize("length", [0, 5, 40, 43])
def test_the_checksum_written_is_the_one_read_back_even_when_the_sum_wraps(length: int) -> None:
    """Written from the tensor without padding it first; read back over the padded region."""
    words = torch.full((6,), 2**62, dtype=torch.int64)
    raw = words.view(torch.uint8)[:length]
    padded = torch.cat([raw, torch.zeros((-length) % 64, dtype=torch.uint8)])
    assert layout_cache._padded_checksum(raw) == layout_cache._checksum(padded)
