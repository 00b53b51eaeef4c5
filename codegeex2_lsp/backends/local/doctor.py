"""``codegeex2-lsp doctor``: what this machine has, what the settings resolve to, and whether
the model will fit, before anything large is loaded."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from codegeex2_lsp.backends.local import int4_cpu
from codegeex2_lsp.backends.local.checkpoint import CONFIG_FILE, read_config
from codegeex2_lsp.backends.local.devices import Hardware, Placement
from codegeex2_lsp.backends.local.memory import (
    CODEGEEX2_6B,
    RESERVE_BYTES,
    FreeBytes,
    available_ram,
    free_bytes,
    gb,
)
from codegeex2_lsp.backends.local.placement import plan_load
from codegeex2_lsp.backends.local.quantize import select_kernel
from codegeex2_lsp.errors import Diagnosis, LoadError
from codegeex2_lsp.settings.fields import Settings


def diagnose(
    settings: Settings,
    *,
    hardware: Hardware | None = None,
    free: FreeBytes = free_bytes,
    find_config: Callable[[str], tuple[dict[str, Any] | None, str]] | None = None,
) -> Diagnosis:
    """Gather everything ``doctor`` prints; injectable facts make it testable anywhere."""
    hardware = hardware or Hardware.detect()
    out = Diagnosis()
    out.lines.append("versions:")
    out.lines.append(f"  python {platform.python_version()}")
    for package in ("codegeex2-lsp", "torch", "transformers", "pygls"):
        out.lines.append(f"  {package} {_version(package)}")
    out.lines.append("devices:")
    for index in range(hardware.cuda_count):
        name = hardware.cuda_names[index] if index < len(hardware.cuda_names) else "GPU"
        memory = gb(hardware.cuda_memory[index]) if index < len(hardware.cuda_memory) else "?"
        bf16 = "bf16" if hardware.cuda_bf16[index] else "no bf16"
        out.lines.append(f"  cuda:{index} {name}, {memory}, {bf16}")
    if not hardware.cuda_count:
        out.lines.append("  CUDA: none")
    out.lines.append(f"  MPS: {'available' if hardware.mps else 'none'}")
    features = ", ".join(sorted(hardware.cpu_features)) or "none of AVX2/AVX-512/AMX/NEON"
    ram = available_ram()
    out.lines.append(
        f"  CPU: {os.cpu_count()} cores ({torch.get_num_threads()} torch threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}), {features}; "
        f"{gb(ram) if ram is not None else 'unknown'} RAM free"
    )
    chatglm, where = (find_config or find_model_config)(settings.model)
    out.lines.append(f"model: {settings.model} ({where})")
    assumed = chatglm is None
    chatglm = chatglm or CODEGEEX2_6B
    try:
        plan = plan_load(chatglm, settings.load_spec(), hardware=hardware, free=free)
    except LoadError as error:
        out.lines.append("resolves to: cannot work")
        out.fail(error)
        return out
    placement = plan.placement
    settings_line = (
        f"device={settings.device} dtype={settings.dtype} quantize={settings.quantize} "
        f"kernels={settings.kernels} numGpus={settings.num_gpus}"
    )
    out.lines.append(f"settings: {settings_line}")
    out.lines.append(f"resolves to: {placement.describe()}")
    if placement.bits:
        kernel = placement.kernel or select_kernel(
            placement.device, placement.dtype, placement.bits, per_row=placement.bits == 8
        )
        out.lines.append(f"  INT{placement.bits} kernel: {kernel}{_kernel_note(kernel, placement)}")
    if plan.note != "fits":
        out.lines.append(f"  split: {plan.note}")
    shape = " (assuming the published CodeGeeX2-6B shape)" if assumed else ""
    need = plan.estimate
    room = "unknown" if plan.free is None else gb(plan.free)
    out.lines.append(
        f"memory: needs {gb(need.total)}{shape}: {gb(need.weights)} weights, "
        f"{gb(need.kv_cache)} KV cache, {gb(need.runtime)} runtime; {room} free, "
        f"{gb(RESERVE_BYTES)} kept for the system"
    )
    return out


def _kernel_note(kernel: str, placement: Placement) -> str:
    """Where this project's CPU kernel runs, what it was built for; where it cannot be built,
    what would change that."""
    if placement.kernel is not None:
        return " (kernels exact: integers times scales in plain torch, as upstream computes)"
    library = int4_cpu.fast_library() if kernel in ("int4cpu", "int8cpu") else None
    if library is not None:
        return f" (built here for {library.isa})"
    if placement.device.type == "cpu":
        return (
            f" (this project's faster INT{placement.bits} kernel needs a C compiler with OpenMP "
            "on x86-64, such as gcc; see the log)"
        )
    return ""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def find_model_config(model: str) -> tuple[dict[str, Any] | None, str]:
    """The model's config.json if it is on this machine, and where it was found; no download."""
    local = Path(model).expanduser()
    if local.is_dir():
        try:
            return read_config(local), "local directory"
        except LoadError as error:
            return None, f"local directory, unreadable: {error.message}"
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, CONFIG_FILE)
    except Exception as error:
        return None, f"not a local directory or hub id ({error})"
    if isinstance(cached, str):
        try:
            config = json.loads(Path(cached).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None, "in the hub cache, config unreadable"
        weights = any(Path(cached).parent.glob("*.bin")) or any(
            Path(cached).parent.glob("*.safetensors")
        )
        state = "in the local hub cache" if weights else "config cached, weights not downloaded"
        return config, state
    return None, "not downloaded yet; the first start downloads it"
