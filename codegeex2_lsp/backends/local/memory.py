"""How much memory a model needs in a given precision, and how much is free.

Estimating before loading turns an out-of-memory crash half-way through a 12 GB load into a
message that names the numbers and the setting that would fit. The same per-part sizes plan a
split of the layers over several devices (``placement``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from codegeex2_lsp.errors import LoadError

log = logging.getLogger(__name__)

GB = 1e9
"""Sizes in messages are decimal gigabytes, as disk and download sizes are."""

RUNTIME_BYTES = int(0.4 * GB)
"""Besides weights and KV cache: the torch runtime, prefill activations, allocator slack."""

RESERVE_BYTES = int(0.5 * GB)
"""Left free on every device for the rest of the system."""

CODEGEEX2_6B: dict[str, Any] = {
    "model_type": "chatglm",
    "num_layers": 28,
    "hidden_size": 4096,
    "ffn_hidden_size": 13696,
    "kv_channels": 128,
    "num_attention_heads": 32,
    "multi_query_attention": True,
    "multi_query_group_num": 2,
    "padded_vocab_size": 65024,
    "seq_length": 8192,
    "torch_dtype": "bfloat16",
}
"""The published THUDM/codegeex2-6b shape: for estimates before it is downloaded."""


@dataclass(frozen=True)
class ModelSize:
    """The parameter counts of a ChatGLM2 config, by where they go."""

    vocab: int
    hidden: int
    layers: int
    linear_params: int
    """Weights of the linear layers of one decoder layer (what INT8/INT4 shrinks)."""
    other_params: int
    """Norms and biases of one decoder layer."""
    kv_width: int
    """Key plus value numbers stored per token per layer."""
    checkpoint_bytes: int
    """Bytes per float in the checkpoint (2 for the bfloat16 release)."""

    @classmethod
    def from_config(cls, chatglm: dict[str, Any]) -> ModelSize:
        hidden = chatglm["hidden_size"]
        heads = chatglm["num_attention_heads"]
        head_dim = chatglm["kv_channels"]
        groups = chatglm["multi_query_group_num"] if chatglm.get("multi_query_attention") else heads
        qkv_rows = (heads + 2 * groups) * head_dim
        ffn = chatglm["ffn_hidden_size"]
        linear = qkv_rows * hidden + hidden * heads * head_dim + 2 * ffn * hidden + hidden * ffn
        dtype_name = str(chatglm.get("torch_dtype", "bfloat16"))
        return cls(
            vocab=chatglm["padded_vocab_size"],
            hidden=hidden,
            layers=chatglm["num_layers"],
            linear_params=linear,
            other_params=2 * hidden + qkv_rows,
            kv_width=2 * groups * head_dim,
            checkpoint_bytes=4 if dtype_name == "float32" else 2,
        )

    @property
    def parameters(self) -> int:
        return (
            2 * self.vocab * self.hidden
            + self.layers * (self.linear_params + self.other_params)
            + self.hidden
        )

    def layer_bytes(self, dtype: torch.dtype, bits: int, tokens: int) -> int:
        """One decoder layer's weights plus its share of a ``tokens``-long KV cache."""
        size = _element_bytes(dtype)
        return int(
            self.linear_params * _linear_bytes(bits, size)
            + self.other_params * size
            + tokens * self.kv_width * size
        )

    def embedding_bytes(self, dtype: torch.dtype) -> int:
        """The embedding table stays in the checkpoint's precision when that is narrower."""
        return self.vocab * self.hidden * min(_element_bytes(dtype), self.checkpoint_bytes)

    def head_bytes(self, dtype: torch.dtype, bits: int) -> int:
        """The output layer (quantized with the rest) and the final norm."""
        size = _element_bytes(dtype)
        return int(self.vocab * self.hidden * _linear_bytes(bits, size) + self.hidden * size)


def _element_bytes(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def _linear_bytes(bits: int, float_bytes: int) -> float:
    """Bytes per weight: integers plus their scales (per row for INT8, per 128 columns for INT4)."""
    if bits == 8:
        return 1.0
    if bits == 4:
        return 0.5 + 2 * float_bytes / 128
    return float(float_bytes)


@dataclass(frozen=True)
class Estimate:
    """The memory a load needs: weights, KV cache and runtime, in bytes."""

    weights: int
    kv_cache: int
    runtime: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.runtime


def estimate(size: ModelSize, dtype: torch.dtype, bits: int, tokens: int) -> Estimate:
    """Memory for the whole model on one device with a KV cache of ``tokens`` tokens."""
    kv = size.layers * tokens * size.kv_width * _element_bytes(dtype)
    weights = (
        size.embedding_bytes(dtype)
        + size.head_bytes(dtype, bits)
        + size.layers * size.layer_bytes(dtype, bits, 0)
    )
    return Estimate(weights=weights, kv_cache=kv, runtime=RUNTIME_BYTES)


FreeBytes = Callable[[torch.device], int | None]


def free_bytes(device: torch.device) -> int | None:
    """Memory free for a new model on ``device``; None when it cannot be known."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        # Unified memory: what the system has free bounds what MPS can take.
        return available_ram()
    return available_ram()


def available_ram() -> int | None:
    """``MemAvailable`` on Linux; free pages elsewhere, where the OS reports them."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gb(count: int) -> str:
    """Bytes as ``12.6 GB``."""
    return f"{count / GB:.1f} GB"


MEMORY_HINT = "change the setting named, or close other programs"


def preflight(
    size: ModelSize,
    *,
    dtype: torch.dtype,
    bits: int,
    tokens: int,
    free: int | None,
    where: str,
    fits_with: str | None,
) -> Estimate:
    """Check one device can hold the model; raise :class:`LoadError` if not.

    ``fits_with`` is the setting that would fit (computed by the caller, who knows which
    settings the device allows), or None when nothing would.
    """
    needed = estimate(size, dtype, bits, tokens)
    if free is None or needed.total + RESERVE_BYTES <= free:
        return needed
    advice = f"try {fits_with}" if fits_with else "free memory, or use a smaller model"
    raise LoadError(
        f"not enough memory: the model needs {gb(needed.total)} on {where} "
        f"({gb(needed.weights)} weights, {gb(needed.kv_cache)} KV cache for {tokens} tokens), "
        f"{gb(free)} free: {advice}",
        MEMORY_HINT,
    )


def return_freed_memory() -> None:
    """Hand memory freed on the heap back to the system.

    glibc keeps freed blocks below its mapping threshold in its heaps, resident for as long as
    the process runs: after loading, the transient copies made while quantizing and packing
    (about 0.5 GB for the 6B model in INT4); after a long prefill, its activations.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        log.debug("no malloc_trim here (not glibc)")
