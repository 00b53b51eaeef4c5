"""How much memory a model needs in a given precision, how much is free, and how to split layers.

Estimating before loading turns an out-of-memory crash half-way through a 12 GB load into a
message that names the numbers and the setting that would fit. The same per-part sizes plan a
split of the layers over several devices.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from codegeex2_lsp.engine.devices import Hardware, Placement, resolve
from codegeex2_lsp.engine.quantize import bits_of

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

    def embedding_bytes(self, dtype: torch.dtype, bits: int) -> int:
        """Quantized models keep the embedding table in the checkpoint's precision."""
        size = _element_bytes(dtype)
        if bits:
            size = min(size, self.checkpoint_bytes)
        return self.vocab * self.hidden * size

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
        size.embedding_bytes(dtype, bits)
        + size.head_bytes(dtype, bits)
        + size.layers * size.layer_bytes(dtype, bits, 0)
    )
    return Estimate(weights=weights, kv_cache=kv, runtime=RUNTIME_BYTES)


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


class MemoryShortage(Exception):
    """The model will not fit; the message names the numbers and what would fit."""


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
    """Check one device can hold the model; raise :class:`MemoryShortage` if not.

    ``fits_with`` is the setting that would fit (computed by the caller, who knows which
    settings the device allows), or None when nothing would.
    """
    needed = estimate(size, dtype, bits, tokens)
    if free is None or needed.total + RESERVE_BYTES <= free:
        return needed
    advice = f"try {fits_with}" if fits_with else "free memory, or use a smaller model"
    raise MemoryShortage(
        f"the model needs {gb(needed.total)} on {where} "
        f"({gb(needed.weights)} weights, {gb(needed.kv_cache)} KV cache for {tokens} tokens), "
        f"{gb(free)} free: {advice}"
    )


def plan_layers(
    size: ModelSize,
    budgets: Sequence[int],
    *,
    dtype: torch.dtype,
    bits: int,
    tokens: int,
    fill_first: bool = False,
) -> list[int]:
    """The device index of each layer, for devices with ``budgets`` bytes free.

    The embedding goes with the first layers on device 0 and the output layer with the last
    layers on the last device. Layers are spread so each device's share of the whole is in
    proportion to its budget (memory-balanced), or, with ``fill_first``, packed onto the
    earlier devices first (a GPU, then the CPU). Raises :class:`MemoryShortage` when the parts
    do not fit.
    """
    layer = size.layer_bytes(dtype, bits, tokens)
    first = size.embedding_bytes(dtype, bits)
    last = size.head_bytes(dtype, bits)
    devices = len(budgets)
    if fill_first:
        plan = _fill(first, last, layer, size.layers, budgets)
    else:
        total = first + last + layer * size.layers
        bounds = [total * c / sum(budgets) for c in _cumulative(budgets)]
        plan = []
        for index in range(size.layers):
            middle = first + (index + 0.5) * layer
            plan.append(next(d for d, bound in enumerate(bounds) if middle <= bound + 1e-6))
    used = [0] * devices
    used[0] += first
    used[-1] += last
    for device in plan:
        used[device] += layer
    short = [d for d in range(devices) if used[d] > budgets[d]]
    if short:
        parts = ", ".join(f"device {d} needs {gb(used[d])}, has {gb(budgets[d])}" for d in short)
        raise MemoryShortage(f"the layers do not fit across {devices} devices ({parts})")
    return plan


def _cumulative(values: Sequence[int]) -> list[int]:
    out, running = [], 0
    for value in values:
        running += value
        out.append(running)
    return out


def _fill(first: int, last: int, layer: int, layers: int, budgets: Sequence[int]) -> list[int]:
    """As many layers as fit on each device in turn; the last device keeps room for the head."""
    plan: list[int] = []
    used = [0] * len(budgets)
    used[0] += first
    used[-1] += last
    device = 0
    for _ in range(layers):
        while device < len(budgets) - 1 and used[device] + layer > budgets[device]:
            device += 1
        plan.append(device)
        used[device] += layer
    return plan


def split_counts(plan: Sequence[int], devices: int) -> list[int]:
    """Layers per device, for messages."""
    return [sum(1 for d in plan if d == index) for index in range(devices)]


@dataclass(frozen=True)
class LoadPlan:
    """Where each layer goes, in what precision, and the memory check behind it."""

    placement: Placement
    layer_devices: list[torch.device]
    estimate: Estimate
    free: int | None
    note: str


FreeBytes = Callable[[torch.device], int | None]


def plan_load(
    chatglm: dict[str, Any],
    *,
    device: str,
    dtype: str,
    quantize: str,
    num_gpus: int,
    hardware: Hardware,
    stored_bits: int = 0,
    free: FreeBytes = free_bytes,
) -> LoadPlan:
    """Resolve the settings for this model and machine, and check it fits before loading.

    The KV cache is counted at the model's full context (8,192 tokens for CodeGeeX2), the most
    a session can hold. A single GPU that is too small takes the first layers while the CPU
    takes the rest; otherwise a shortage raises :class:`MemoryShortage` naming the setting
    that would fit.
    """
    size = ModelSize.from_config(chatglm)
    tokens = int(chatglm.get("seq_length", 8192))
    if stored_bits:
        quantize = f"int{stored_bits}"

    def fits(target: torch.device, chosen: torch.dtype, scheme: str) -> bool:
        room = free(target)
        need = estimate(size, chosen, bits_of(scheme), tokens).total + RESERVE_BYTES
        return room is None or need <= room

    placement = resolve(
        device,
        dtype,
        hardware,
        quantize=quantize,
        num_gpus=num_gpus,
        parameters=size.parameters,
        fits=fits,
    )
    bits = placement.bits
    needed = estimate(size, placement.dtype, bits, tokens)
    devices = list(placement.devices or (placement.device,))
    if len(devices) > 1:
        budgets = [_budget(free(d)) for d in devices]
        plan = plan_layers(size, budgets, dtype=placement.dtype, bits=bits, tokens=tokens)
        counts = split_counts(plan, len(devices))
        note = "layers per GPU: " + ", ".join(
            f"{d} {n}" for d, n in zip(devices, counts, strict=True)
        )
        return LoadPlan(placement, [devices[i] for i in plan], needed, sum(budgets), note)
    room = free(placement.device)
    if room is None or needed.total + RESERVE_BYTES <= room:
        return LoadPlan(placement, [placement.device] * size.layers, needed, room, "fits")
    if placement.device.type == "cuda":
        cpu_room = free(torch.device("cpu"))
        try:
            plan = plan_layers(
                size,
                [_budget(room), _budget(cpu_room)],
                dtype=placement.dtype,
                bits=bits,
                tokens=tokens,
                fill_first=True,
            )
        except MemoryShortage:
            pass
        else:
            on_gpu = split_counts(plan, 2)[0]
            layer_devices = [placement.device if d == 0 else torch.device("cpu") for d in plan]
            note = f"{on_gpu} of {size.layers} layers on {placement.device}, the rest on the CPU"
            return LoadPlan(placement, layer_devices, needed, room, note)
    where = "the CPU" if placement.device.type == "cpu" else str(placement.device)
    preflight(
        size,
        dtype=placement.dtype,
        bits=bits,
        tokens=tokens,
        free=room,
        where=where,
        fits_with=_what_fits(size, placement, tokens, room, stored_bits),
    )
    return LoadPlan(placement, [placement.device] * size.layers, needed, room, "fits")


def _budget(room: int | None) -> int:
    return max(0, (room if room is not None else 1 << 50) - RESERVE_BYTES)


def _what_fits(
    size: ModelSize, placement: Placement, tokens: int, room: int | None, stored_bits: int
) -> str | None:
    """The smallest change of settings that fits in ``room``."""
    if room is None:
        return None
    options: list[tuple[str, torch.dtype, int]] = []
    if placement.dtype == torch.float32:
        options.append(("dtype=bfloat16", torch.bfloat16, placement.bits))
    if not stored_bits:
        for bits in (8, 4):
            if not placement.bits or bits < placement.bits:
                # On CPU, INT4 computes in bfloat16 (see devices.resolve).
                cpu_int4 = bits == 4 and placement.device.type == "cpu"
                options.append(
                    (f"quantize=int{bits}", torch.bfloat16 if cpu_int4 else placement.dtype, bits)
                )
    for setting, dtype, bits in options:
        if estimate(size, dtype, bits, tokens).total + RESERVE_BYTES <= room:
            return setting
    return None
