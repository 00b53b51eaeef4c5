"""``codegeex2-lsp convert``: rewrite a checkpoint as safetensors in the loader's own layout.

Upstream ships pickled ``.bin`` shards in ChatGLM2 names, so every load unpickles 12.5 GB, splits
the fused attention weights and, for INT8/INT4, quantizes 6B parameters. The converted form is
safetensors in GLM names, optionally with the integers and scales already made (recorded in
config.json under ``weight_quantization``), so a load only maps the files and lays the integers
out for the kernel.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from codegeex2_lsp.backends.local.checkpoint import (
    CONFIG_FILE,
    QUANTIZATION_KEY,
    SAFETENSORS_INDEX,
    StoredQuantization,
    glm_config,
    glm_tensors,
    linear_names,
    read_config,
    read_weights,
    stored_quantization,
    weight_files,
)
from codegeex2_lsp.backends.local.hub import resolve_model_dir
from codegeex2_lsp.backends.local.quantize import bits_of, pack_int4, quantize_weight
from codegeex2_lsp.backends.tokenizer import TOKENIZER_FILE
from codegeex2_lsp.errors import LoadError

SHARD_BYTES = 2 * 10**9
"""Largest safetensors shard written; small enough for any file system and download tool."""


@dataclass(frozen=True)
class Converted:
    """What was written: the directory, its size and the quantization recorded."""

    directory: Path
    bytes: int
    tensors: int
    quantize: str


def convert(
    source: str,
    destination: Path,
    *,
    quantize: str = "none",
    progress: Callable[[str], None] = lambda message: None,
) -> Converted:
    """Write ``source`` (a directory or hub id) to ``destination`` as safetensors.

    Tensors are converted one source file at a time and written in shards, so memory stays near
    one shard. A checkpoint that is already quantized keeps its integers (re-quantizing would
    lose precision); ``quantize`` then must be ``none`` or its own precision.
    """
    model_dir = resolve_model_dir(source, progress=progress)
    chatglm = read_config(model_dir)
    stored = stored_quantization(chatglm)
    config = glm_config(chatglm)
    made: StoredQuantization | None
    recorded: StoredQuantization | None
    if stored is not None:
        if quantize not in ("none", f"int{stored.bits}"):
            raise LoadError(
                f"{source} is stored as INT{stored.bits}; converting it to {quantize} would "
                "lose precision",
                f"convert it with --quantize int{stored.bits}, or start from the full checkpoint",
            )
        made, recorded = None, stored
    else:
        bits = bits_of(quantize)
        made = recorded = StoredQuantization.made_now(bits) if bits else None
    quantized = linear_names(config, lm_head=made.lm_head) if made is not None else set()
    if destination.exists() and any(destination.iterdir()):
        raise LoadError(
            f"{destination} is not empty", "choose a new directory for the converted checkpoint"
        )
    destination.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(destination)
    for path in weight_files(model_dir):
        progress(f"Converting {path.name}")
        for upstream_name, upstream in read_weights(path):
            for name, tensor in glm_tensors(upstream_name, upstream, config):
                module = name.removesuffix(".weight")
                if made is not None and module in quantized and name.endswith(".weight"):
                    q, scale = quantize_weight(tensor, made.bits, made.group_for(tensor.shape[1]))
                    writer.add(name, pack_int4(q) if made.bits == 4 else q)
                    writer.add(module + ".weight_scale", scale)
                else:
                    writer.add(name, tensor)
    total, count = writer.finish()
    chatglm = {k: v for k, v in chatglm.items() if k != "quantization_bit"}
    if recorded is not None:
        chatglm[QUANTIZATION_KEY] = recorded.as_config()
    (destination / CONFIG_FILE).write_text(json.dumps(chatglm, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(model_dir / TOKENIZER_FILE, destination / TOKENIZER_FILE)
    done = f"int{recorded.bits}" if recorded is not None else "none"
    return Converted(destination, total, count, done)


class _ShardWriter:
    """Collects tensors and writes ``model-XXXXX.safetensors`` files of at most SHARD_BYTES."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.files: list[tuple[str, list[str]]] = []
        self.total = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > SHARD_BYTES:
            self._flush()
        # Safetensors stores whole buffers: views (the split attention weights) are copied.
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += size
        self.total += size

    def _flush(self) -> None:
        from safetensors.torch import save_file

        name = f"model-{len(self.files) + 1:05d}.safetensors"
        save_file(self.pending, self.directory / name, metadata={"format": "pt"})
        self.files.append((name, list(self.pending)))
        self.pending = {}
        self.pending_bytes = 0

    def finish(self) -> tuple[int, int]:
        if self.pending:
            self._flush()
        weight_map = {tensor: file for file, names in self.files for tensor in names}
        index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        (self.directory / SAFETENSORS_INDEX).write_text(
            json.dumps(index, indent=2) + "\n", encoding="utf-8"
        )
        return self.total, len(weight_map)
