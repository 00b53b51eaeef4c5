"""Where each part of the model goes: the settings resolved for this machine, the layers split
over devices by their free memory, and the hooks that carry activations across a split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GlmForCausalLM

from codegeex2_lsp.backends.local.checkpoint import stored_quantization
from codegeex2_lsp.backends.local.devices import Hardware, Placement, resolve
from codegeex2_lsp.backends.local.memory import (
    MEMORY_HINT,
    RESERVE_BYTES,
    Estimate,
    FreeBytes,
    ModelSize,
    estimate,
    free_bytes,
    gb,
    preflight,
)
from codegeex2_lsp.backends.local.quantize import bits_of
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.fields import LoadSpec


@dataclass(frozen=True)
class LoadPlan:
    """Where each layer goes, in what precision, and the memory check behind it."""

    placement: Placement
    layer_devices: list[torch.device]
    estimate: Estimate
    free: int | None
    note: str


def plan_load(
    chatglm: dict[str, Any],
    spec: LoadSpec,
    *,
    hardware: Hardware,
    free: FreeBytes = free_bytes,
) -> LoadPlan:
    """Resolve the load settings for this model and machine, and check it fits before loading.

    The KV cache is counted at the model's full context (8,192 tokens for CodeGeeX2), the most
    a session can hold. A single GPU that is too small takes the first layers while the CPU
    takes the rest; otherwise a shortage raises :class:`LoadError` naming the setting
    that would fit.
    """
    size = ModelSize.from_config(chatglm)
    tokens = int(chatglm.get("seq_length", 8192))
    stored = stored_quantization(chatglm)
    stored_bits = stored.bits if stored is not None else 0
    quantize = f"int{stored_bits}" if stored_bits else spec.quantize

    def fits(target: torch.device, chosen: torch.dtype, scheme: str) -> bool:
        room = free(target)
        need = estimate(size, chosen, bits_of(scheme), tokens).total + RESERVE_BYTES
        return room is None or need <= room

    placement = resolve(
        spec.device,
        spec.dtype,
        hardware,
        quantize=quantize,
        num_gpus=spec.num_gpus,
        parameters=size.parameters,
        fits=fits,
        kernels=spec.kernels,
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
        except LoadError:
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
    earlier devices first (a GPU, then the CPU). Raises :class:`LoadError` when the parts
    do not fit.
    """
    layer = size.layer_bytes(dtype, bits, tokens)
    first = size.embedding_bytes(dtype)
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
        raise LoadError(
            f"not enough memory: the layers do not fit across {devices} devices ({parts})",
            MEMORY_HINT,
        )
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


def tensor_device(name: str, layer_devices: list[torch.device]) -> torch.device:
    """Where a GLM tensor lives when layers are split: embeddings with the first layer, the final
    norm and output layer with the last."""
    if name.startswith("model.layers."):
        return layer_devices[int(name.split(".")[2])]
    if name.startswith("model.embed_tokens"):
        return layer_devices[0]
    return layer_devices[-1]


def connect_devices(model: GlmForCausalLM, devices: list[torch.device], dtype: torch.dtype) -> None:
    """Hooks that carry activations across a layer split, and cast a 16-bit embedding's output.

    Logits come back on the first device, where callers put their inputs.
    """
    embed = model.model.embed_tokens
    if embed.weight.dtype != dtype:
        embed.register_forward_hook(lambda module, args, output: output.to(dtype))
    if len(set(devices)) == 1:
        return
    for layer, target in zip(model.model.layers, devices, strict=True):
        layer.register_forward_pre_hook(_mover(target), with_kwargs=True)
    model.model.norm.register_forward_pre_hook(_mover(devices[-1]), with_kwargs=True)
    first = devices[0]
    model.lm_head.register_forward_hook(lambda module, args, output: output.to(first))


def _mover(
    target: torch.device,
) -> Callable[[torch.nn.Module, tuple[Any, ...], dict[str, Any]], tuple[Any, dict[str, Any]]]:
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(target)
        if isinstance(value, tuple):
            return tuple(move(item) for item in value)
        return value

    def hook(
        module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        return move(args), {key: move(value) for key, value in kwargs.items()}

    return hook
