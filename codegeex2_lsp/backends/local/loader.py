"""Loading a checkpoint into ``GlmForCausalLM``, and a whole model (memory check, tokenizer,
weights) from the load settings.

The model is built on the meta device with every tensor assigned from the checkpoint, one file at
a time, keeping peak memory near one copy of the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, GlmForCausalLM

from codegeex2_lsp.backends.local import attention
from codegeex2_lsp.backends.local.checkpoint import (
    CONFIG_FILE,
    EOS_ID,
    PAD_ID,
    StoredQuantization,
    glm_config,
    glm_tensors,
    linear_names,
    read_config,
    read_weights,
    stored_quantization,
    weight_files,
)
from codegeex2_lsp.backends.local.devices import Hardware
from codegeex2_lsp.backends.local.hub import resolve_model_dir
from codegeex2_lsp.backends.local.inference import LocalModel
from codegeex2_lsp.backends.local.layout_cache import (
    LayoutCache,
    cache_root,
    kernel_identity,
    layout_key,
)
from codegeex2_lsp.backends.local.memory import return_freed_memory
from codegeex2_lsp.backends.local.placement import connect_devices, plan_load, tensor_device
from codegeex2_lsp.backends.local.quantize import (
    Kernel,
    QuantLinear,
    bits_of,
    quantize_weight,
    select_kernel,
    swap_linears,
    unpack_int4,
)
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.fields import LoadSpec

logger = logging.getLogger(__name__)

EMBEDDING = "model.embed_tokens.weight"


def load_model(
    model_dir: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str = "none",
    layer_devices: list[torch.device] | None = None,
    kernel: str | None = None,
    layout_cache: Path | None = None,
) -> GlmForCausalLM:
    """``GlmForCausalLM`` with the checkpoint's weights on ``device`` in ``dtype``, in eval mode.

    Built on the meta device, then each file is read and its tensors assigned before the next
    file is opened, so no randomly initialised copy is ever allocated. ``quantize`` (``int8``,
    ``int4``) turns full-precision linear weights into integers one tensor at a time; a
    checkpoint stored quantized keeps its own integers and scales whatever ``quantize`` says,
    since re-quantizing would lose precision. ``layer_devices`` (one device per layer) splits
    the model; ``kernel`` forces a quantized kernel (the ``kernels`` setting; tests compare
    them). With ``layout_cache``
    (a directory) quantized weights on the CPU are kept there in their kernels' layout after
    the first load and mapped from there on later loads (:mod:`.layout_cache`).
    """
    chatglm = read_config(model_dir)
    config = glm_config(chatglm)
    config._attn_implementation = attention.NAME
    devices = layer_devices or [device] * config.num_hidden_layers
    if len(devices) != config.num_hidden_layers:
        raise ValueError(f"{len(devices)} layer devices for {config.num_hidden_layers} layers")
    scheme = _scheme(model_dir, chatglm, quantize)
    with torch.device("meta"):
        model = GlmForCausalLM(config)
    quantized = (
        linear_names(config, lm_head=scheme.made.lm_head) if scheme.made is not None else set()
    )
    swap_linears(model, scheme.bits, quantized)
    files = weight_files(model_dir)
    kept = None
    if layout_cache is not None and quantized and all(d.type == "cpu" for d in devices):
        kept = _kept_layout(layout_cache, model_dir, files, scheme, dtype, kernel)
    restored = kept.load(dtype) if kept is not None else None
    filling = _Filling(model, scheme, quantized, devices, dtype, kernel, restored or {})
    for path in files:
        logger.debug("loading %s", path.name)
        filling.add_file(path)
    filling.check_complete(model_dir)
    if kept is not None and restored is None:
        kept.save(
            {
                name: module.kernel
                for name, module in model.named_modules()
                if isinstance(module, QuantLinear) and module.kernel is not None
            }
        )
    _finish(model, devices, dtype)
    logger.info(
        "loaded %s: %d layers, %s%s on %s",
        model_dir,
        config.num_hidden_layers,
        str(dtype).removeprefix("torch."),
        f" with INT{scheme.bits} weights" if scheme.bits else "",
        ", ".join(sorted({str(d) for d in devices})),
    )
    return model


@dataclass(frozen=True)
class _Scheme:
    """How the linear weights get their integers: ``made`` None keeps full precision; ``stored``
    says the checkpoint holds them already, else they are quantized now from floats."""

    made: StoredQuantization | None
    stored: bool

    @property
    def bits(self) -> int:
        return self.made.bits if self.made is not None else 0


def _kept_layout(
    root: Path,
    model_dir: Path,
    files: list[Path],
    scheme: _Scheme,
    dtype: torch.dtype,
    kernel: str | None,
) -> LayoutCache:
    """The layout cache entry for this load: the checkpoint's files, how its weights become
    integers, and which kernels this machine picks for them all decide the layout."""
    assert scheme.made is not None
    cpu = torch.device("cpu")
    settings = {
        "dtype": str(dtype),
        "quantization": scheme.made.as_config(),
        "stored": scheme.stored,
        "kernels": kernel
        or [select_kernel(cpu, dtype, scheme.bits, per_row=rows) for rows in (True, False)],
        "machine": kernel_identity(),
    }
    config = model_dir / CONFIG_FILE
    key = layout_key([config, *files], settings)
    return LayoutCache(root, key, str(model_dir.resolve()))


def _scheme(model_dir: Path, chatglm: dict[str, Any], quantize: str) -> _Scheme:
    stored = stored_quantization(chatglm)
    if stored is not None:
        if quantize not in ("none", f"int{stored.bits}"):
            logger.warning("%s is stored as INT%d; loading it as stored", model_dir, stored.bits)
        return _Scheme(stored, stored=True)
    bits = bits_of(quantize)
    return _Scheme(StoredQuantization.made_now(bits) if bits else None, stored=False)


class _Filling:
    """Assigns a checkpoint's tensors to an empty model, file by file, and tracks what is left.

    A stored quantized linear's integers and scales may sit in different files; they wait in
    ``pending`` until both are read.
    """

    def __init__(
        self,
        model: GlmForCausalLM,
        scheme: _Scheme,
        quantized: set[str],
        devices: list[torch.device],
        dtype: torch.dtype,
        kernel: str | None,
        restored: dict[str, Kernel],
    ) -> None:
        self.model = model
        self.restored = restored
        self.scheme = scheme
        self.quantized = quantized
        self.devices = devices
        self.dtype = dtype
        self.kernel = kernel
        self.expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
        self.loaded: set[str] = set()
        self.unexpected: list[str] = []
        self.pending: dict[str, dict[str, torch.Tensor]] = {}
        for module, restored_kernel in restored.items():
            linear = model.get_submodule(module)
            assert isinstance(linear, QuantLinear)
            linear.kernel = restored_kernel
            self.loaded.add(module + ".weight")

    def add_file(self, path: Path) -> None:
        config = self.model.config
        assigned: dict[str, torch.Tensor] = {}
        for upstream_name, upstream in read_weights(path):
            for name, tensor in glm_tensors(upstream_name, upstream, config):
                module, _, suffix = name.rpartition(".")
                if module in self.restored and suffix in ("weight", "weight_scale"):
                    continue
                if module in self.quantized and suffix in ("weight", "weight_scale"):
                    self._add_quantized(module, suffix, tensor, upstream_name)
                elif name not in self.expected:
                    self.unexpected.append(upstream_name)
                else:
                    assigned[name] = self._float_tensor(name, tensor, upstream_name, path)
        self.model.load_state_dict(assigned, strict=False, assign=True)
        self.loaded.update(assigned)

    def _float_tensor(
        self, name: str, tensor: torch.Tensor, upstream_name: str, path: Path
    ) -> torch.Tensor:
        if tensor.shape != self.expected[name]:
            raise LoadError(
                f"{upstream_name} in {path.name} has shape {list(tensor.shape)}, "
                f"the config needs {list(self.expected[name])}",
                "config.json and the weights do not match; download the model again",
            )
        dtype = _storage_dtype(name, tensor, self.dtype)
        device = tensor_device(name, self.devices)
        if name == EMBEDDING and dtype == tensor.dtype and device.type == "cpu":
            # Kept as stored: a safetensors tensor is mapped alone, so only the rows of tokens
            # seen become resident; a tensor from a .bin shard is copied, so the shard's whole
            # mapping (and what was read from it) can go.
            return tensor if path.suffix == ".safetensors" else tensor.clone()
        return tensor.to(device=device, dtype=dtype)

    def _add_quantized(
        self, module: str, suffix: str, tensor: torch.Tensor, upstream_name: str
    ) -> None:
        if self.scheme.stored and suffix == "weight" and tensor.dtype != torch.int8:
            raise LoadError(
                f"{upstream_name} is {str(tensor.dtype).removeprefix('torch.')}, "
                f"but config.json says the weights are INT{self.scheme.bits} (int8 integers)",
                "the checkpoint is damaged; download the model again",
            )
        parts = self.pending.setdefault(module, {})
        parts[suffix] = tensor
        if self.scheme.stored and len(parts) < 2:
            return
        del self.pending[module]
        linear = self.model.get_submodule(module)
        assert isinstance(linear, QuantLinear)
        q, scale = _integers(parts, self.scheme, linear.in_features, upstream_name)
        device = tensor_device(module + ".weight", self.devices)
        try:
            linear.set_weight(q.to(device), scale.to(device), self.dtype, self.kernel)
        except ValueError as error:
            raise LoadError(
                f"{upstream_name}: {error}",
                "config.json and the weights do not match; download the model again",
            ) from error
        self.loaded.add(module + ".weight")

    def check_complete(self, model_dir: Path) -> None:
        if self.unexpected:
            raise LoadError(
                f"{model_dir} has tensors a ChatGLM2 model does not: "
                f"{', '.join(self.unexpected[:5])}",
                "this is not a ChatGLM2 checkpoint, or a variant that is not supported",
            )
        wanted = set(self.expected) | {module + ".weight" for module in self.quantized}
        missing = sorted(wanted - self.loaded)
        if missing:
            raise LoadError(
                f"{model_dir} lacks {', '.join(missing[:5])}",
                "the download is incomplete; download the model again",
            )


def _integers(
    parts: dict[str, torch.Tensor], scheme: _Scheme, in_features: int, upstream_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One linear's integers (int8 [out, in], unpacked) and scales ([out, groups]): as stored,
    or quantized now from its floats, in the groups ``scheme`` describes either way."""
    assert scheme.made is not None
    group = scheme.made.group_for(in_features)
    if not scheme.stored:
        return quantize_weight(parts["weight"], scheme.bits, group)
    q = unpack_int4(parts["weight"]) if scheme.bits == 4 else parts["weight"]
    scale = parts["weight_scale"].float()
    scale = scale.reshape(scale.shape[0], -1)
    groups = in_features // group if group else 1
    if scale.shape[1] != groups:
        raise LoadError(
            f"{upstream_name} has {scale.shape[1]} scales per row; config.json's "
            f"group_size {scheme.made.group_size} means {groups}",
            "config.json and the weights do not match; convert the checkpoint again",
        )
    return q, scale


def _finish(model: GlmForCausalLM, devices: list[torch.device], dtype: torch.dtype) -> None:
    """What a filled model needs before it runs: real RoPE buffers, device hooks, eval mode."""
    _reset_rotary(model, devices[0])
    connect_devices(model, devices, dtype)
    model.requires_grad_(False)
    model.config.dtype = dtype
    model.generation_config = GenerationConfig(
        eos_token_id=EOS_ID, pad_token_id=PAD_ID, bos_token_id=None
    )
    model.eval()


def _storage_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    """The embedding table stays as the checkpoint stores it when that is no wider than ``dtype``.

    Only one row per token is read from it, and the lookup's output is cast to ``dtype`` (see
    ``placement.connect_devices``), which rounds exactly as converting the table would. Left
    as stored, the table on the CPU stays the memory-mapped file itself, so only the rows of
    tokens actually seen become resident (the 6B table is 0.53 GB in 16-bit, 1.07 GB in float32).
    """
    if (
        name == EMBEDDING
        and tensor.is_floating_point()
        and tensor.element_size() <= torch.finfo(dtype).bits // 8
    ):
        return tensor.dtype
    return dtype


def _reset_rotary(model: GlmForCausalLM, device: torch.device) -> None:
    """Replace the meta-device RoPE module with one computed in float32 on ``device``."""
    rotary = type(model.model.rotary_emb)(config=model.config)
    model.model.rotary_emb = rotary.to(device)


def load_local(
    spec: LoadSpec, progress: Callable[[str], None] | None = None
) -> tuple[LocalModel, str]:
    """Load the model ``spec`` names, turning every failure into a :class:`LoadError`.

    Memory is checked before any weight is read, so a model that cannot fit is refused with the
    numbers and the setting that would fit. Without ``progress`` a download shows the hub's own
    progress bars (the command line); with it, download progress goes to ``progress``.
    """
    report = progress or (lambda message: None)
    try:
        hardware = Hardware.detect()
        report(f"Finding {spec.model}")
        directory = resolve_model_dir(spec.model, progress=progress)
        chatglm = read_config(directory)
        plan = plan_load(chatglm, spec, hardware=hardware)
        placement = plan.placement
        report("Reading the tokenizer")
        tokenizer = read_tokenizer(directory)
        report(f"Loading weights on {placement.describe()}")
        model = load_model(
            directory,
            device=placement.device,
            dtype=placement.dtype,
            quantize=placement.quantize,
            layer_devices=plan.layer_devices,
            kernel=placement.kernel,
            layout_cache=cache_root(),
        )
    except LoadError:
        raise
    except (MemoryError, torch.OutOfMemoryError) as error:
        raise LoadError(
            f"not enough memory to load {spec.model} on {spec.device}",
            "close other programs, or set codegeex2.quantize to int8 or int4",
        ) from error
    except Exception as error:
        raise LoadError(
            f"loading {spec.model} failed: {error}",
            "check codegeex2.model, codegeex2.device, codegeex2.dtype and codegeex2.quantize; "
            "the log has details",
        ) from error
    description = f"{spec.model} on {placement.describe()}"
    if plan.note != "fits":
        description += f"; {plan.note}"
    # Quantizing and packing make a transient copy of each weight, freed by now.
    return_freed_memory()
    return LocalModel(model, tokenizer), description
