"""ChatGLM2 checkpoints mapped onto transformers' native ``GlmForCausalLM``, without remote code.

The upstream repository ships its own modelling code, which breaks with each transformers
release; the architecture itself is what transformers calls GLM (partial interleaved RoPE,
grouped-query attention, RMSNorm, SwiGLU). So the config is translated (``glm_config``), the
tensor names are translated in one function (``glm_tensors``), and the model is built on the meta
device with every tensor assigned from the checkpoint, keeping peak memory near one copy of the
weights.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, GlmConfig, GlmForCausalLM

from codegeex2_lsp.engine.quantize import (
    INT4_GROUP_SIZE,
    QuantLinear,
    int4_group_size,
    quantize_weight,
    swap_linears,
    unpack_int4,
)
from codegeex2_lsp.engine.tokenizer import ChatGLM2Tokenizer

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"

# What a hub download fetches: never the repository's Python files.
_HUB_COMMON = [CONFIG_FILE, TOKENIZER_FILE]
_HUB_SAFETENSORS = ["*.safetensors", SAFETENSORS_INDEX]
_HUB_BIN = ["*.bin", BIN_INDEX]

# ChatGLM2 ids that GlmConfig's defaults (GLM-4's) get wrong.
PAD_ID = 0
EOS_ID = 2

_REQUIRED_FIELDS = (
    "hidden_size",
    "num_layers",
    "num_attention_heads",
    "kv_channels",
    "ffn_hidden_size",
    "padded_vocab_size",
)

# Upstream options with a value GlmForCausalLM cannot express; the value it needs and why.
_FIXED_FIELDS: dict[str, tuple[object, str]] = {
    "rmsnorm": (True, "LayerNorm variants are not supported"),
    "post_layer_norm": (True, "a model without the final norm is not supported"),
    "add_bias_linear": (False, "biases on the dense and MLP layers are not supported"),
    "apply_residual_connection_post_layernorm": (False, "post-norm residuals are not supported"),
    "original_rope": (True, "only the original RoPE layout is supported"),
}

_UPSTREAM_PREFIX = "transformer."
_LAYER_PREFIX = "transformer.encoder.layers."

# Whole-name renames; per-layer names are handled in glm_tensors.
_GLOBAL_NAMES = {
    "transformer.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "transformer.encoder.final_layernorm.weight": "model.norm.weight",
    "transformer.output_layer.weight": "lm_head.weight",
}
# Per-layer module renames; the tensor suffix (weight, weight_scale of quantized ones) is kept.
_LAYER_MODULES = {
    "input_layernorm": "input_layernorm",
    "post_attention_layernorm": "post_attention_layernorm",
    "self_attention.dense": "self_attn.o_proj",
    "mlp.dense_h_to_4h": "mlp.gate_up_proj",
    "mlp.dense_4h_to_h": "mlp.down_proj",
}
_LAYER_SUFFIXES = {
    "input_layernorm": ("weight",),
    "post_attention_layernorm": ("weight",),
    "self_attention.dense": ("weight", "weight_scale"),
    "mlp.dense_h_to_4h": ("weight", "weight_scale"),
    "mlp.dense_4h_to_h": ("weight", "weight_scale"),
}

# The linear layers of each decoder layer, in GLM names: what INT8/INT4 applies to.
LAYER_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_up_proj",
    "mlp.down_proj",
)
SCALE_SUFFIX = ".weight_scale"
QUANTIZATION_KEY = "weight_quantization"
"""Where a converted checkpoint's config.json records its quantization (ours, not upstream's)."""


class ModelLoadError(Exception):
    """A model that cannot be loaded: what failed, and in ``hint`` what the user should change."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})"


def _looks_like_path(model: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else the user meant as a directory."""
    return (
        os.path.isabs(model)
        or model.startswith((".", "~"))
        or "\\" in model
        or model.count("/") > 1
    )


def resolve_model_dir(model: str, *, progress: Callable[[str], None] | None = None) -> Path:
    """The local directory holding ``model``, downloading it from the hub if it is a repo id.

    Only the files the loader reads are fetched (never the repository's Python code), choosing
    safetensors over ``.bin`` when a repository has both so the weights come down once.
    ``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` are honoured by ``huggingface_hub``.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        read_config(local)
        return local
    if _looks_like_path(model) or local.exists():
        problem = "is not a directory" if local.exists() else "does not exist"
        raise ModelLoadError(
            f"model directory {model} {problem}",
            "set codegeex2.model to a checkpoint directory or a hub id such as THUDM/codegeex2-6b",
        )
    path = _download(model, progress)
    read_config(path)
    return path


def _download(repo_id: str, progress: Callable[[str], None] | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if progress is not None:
        progress(f"Fetching {repo_id}")
    try:
        path = Path(
            snapshot_download(
                repo_id,
                allow_patterns=_hub_patterns(repo_id),
                tqdm_class=_progress_bar(repo_id, progress) if progress is not None else None,
            )
        )
    except GatedRepoError as exc:
        raise ModelLoadError(
            f"access to {repo_id} is restricted",
            "accept its terms on the hub and log in with `hf auth login`",
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as exc:
        raise ModelLoadError(
            f"no local directory or hub repository named {repo_id}",
            "check the spelling of codegeex2.model, for example THUDM/codegeex2-6b",
        ) from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise ModelLoadError(
            f"{repo_id} is not in the local hub cache and cannot be downloaded now "
            "(HF_HUB_OFFLINE is set or the hub is unreachable)",
            "download it once with network access, or point codegeex2.model at a local directory",
        ) from exc
    except Exception as exc:
        # Network failures surface as the HTTP client's own exception types.
        raise ModelLoadError(
            f"could not download {repo_id}: {exc}",
            "check the network connection or proxy (HF_ENDPOINT for a mirror), or point "
            "codegeex2.model at a local directory",
        ) from exc
    if progress is not None:
        progress(f"Fetched {repo_id}")
    return path


def _progress_bar(repo_id: str, progress: Callable[[str], None]) -> type[Any]:
    """A tqdm class for the hub's download bars that reports to ``progress`` instead of a
    terminal, at most once a second, as "Downloading REPO: 1.2 of 12.5 GB (10%)"."""
    import io
    import time

    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    class Reporter(tqdm):  # type: ignore[misc]
        _last = 0.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["file"] = io.StringIO()
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def display(self, *args: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            if self.unit != "B" or not self.total or now - Reporter._last < 1.0:
                return
            Reporter._last = now
            done, total = self.n / 1e9, self.total / 1e9
            progress(
                f"Downloading {repo_id}: {done:.1f} of {total:.1f} GB "
                f"({int(100 * self.n / self.total)}%)"
            )

    return Reporter


def _hub_patterns(repo_id: str) -> list[str]:
    """The files to fetch: one weight format only, if the repository's listing can be read."""
    from huggingface_hub import constants, list_repo_files
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    every_format = [*_HUB_COMMON, *_HUB_SAFETENSORS, *_HUB_BIN]
    if constants.is_offline_mode():
        return every_format
    try:
        files = list_repo_files(repo_id)
    except (RepositoryNotFoundError, HFValidationError):
        raise
    except Exception as exc:
        # Unreachable hub: the download step falls back to the local cache.
        logger.warning("cannot list %s (%s); trying the local cache", repo_id, exc)
        return every_format
    has_safetensors = any(name.endswith(".safetensors") for name in files)
    return [*_HUB_COMMON, *(_HUB_SAFETENSORS if has_safetensors else _HUB_BIN)]


def read_config(model_dir: Path) -> dict[str, Any]:
    """The upstream ``config.json``, checked to describe a ChatGLM2-family model we can run."""
    if not model_dir.is_dir():
        raise ModelLoadError(
            f"model directory {model_dir} does not exist",
            "set codegeex2.model to a checkpoint directory or a hub id",
        )
    path = model_dir / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(
            f"{model_dir} has no {CONFIG_FILE}, so it is not a ChatGLM2 checkpoint",
            "point codegeex2.model at a CodeGeeX2 checkpoint directory",
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read {path}: {exc}", "re-download the checkpoint; the file is damaged"
        ) from exc
    if not isinstance(config, dict) or config.get("model_type") != "chatglm":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise ModelLoadError(
            f"{model_dir} holds a {found!r} model, not a ChatGLM2 (model_type 'chatglm') one",
            "use a CodeGeeX2 checkpoint such as THUDM/codegeex2-6b",
        )
    missing = [name for name in _REQUIRED_FIELDS if not isinstance(config.get(name), int)]
    if missing:
        raise ModelLoadError(
            f"{path} lacks {', '.join(missing)}",
            "the config is incomplete; re-download the checkpoint",
        )
    for name, (needed, why) in _FIXED_FIELDS.items():
        if name in config and config[name] != needed:
            raise ModelLoadError(
                f"{path} sets {name} = {config[name]!r}: {why}",
                "use a ChatGLM2 or CodeGeeX2 checkpoint",
            )
    if config.get("multi_query_attention") and not isinstance(
        config.get("multi_query_group_num"), int
    ):
        raise ModelLoadError(
            f"{path} enables multi_query_attention without multi_query_group_num",
            "the config is incomplete; re-download the checkpoint",
        )
    return config


def glm_config(chatglm: dict[str, Any]) -> GlmConfig:
    """The ``GlmConfig`` describing the same network as an upstream ChatGLM2 config.

    RoPE covers half of each head (``partial_rotary_factor`` 0.5) with base 10000 scaled by the
    optional ``rope_ratio`` of long-context variants; pad and eos are set explicitly because
    GlmConfig's defaults are GLM-4's ids.
    """
    heads = chatglm["num_attention_heads"]
    groups = chatglm["multi_query_group_num"] if chatglm.get("multi_query_attention") else heads
    return GlmConfig(
        vocab_size=chatglm["padded_vocab_size"],
        hidden_size=chatglm["hidden_size"],
        intermediate_size=chatglm["ffn_hidden_size"],
        num_hidden_layers=chatglm["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=groups,
        head_dim=chatglm["kv_channels"],
        hidden_act="silu",
        max_position_embeddings=chatglm.get("seq_length", 8192),
        rms_norm_eps=chatglm.get("layernorm_epsilon", 1e-5),
        attention_bias=bool(chatglm.get("add_qkv_bias", False)),
        tie_word_embeddings=False,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0 * float(chatglm.get("rope_ratio", 1.0)),
            "partial_rotary_factor": 0.5,
        },
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=None,
    )


def glm_tensors(
    name: str, tensor: torch.Tensor, config: GlmConfig
) -> Iterator[tuple[str, torch.Tensor]]:
    """The ``GlmForCausalLM`` tensors made from one upstream tensor: the only name mapping.

    The fused query_key_value rows are all query heads, then the key groups, then the value
    groups. ``inv_freq`` is dropped: it is recomputed in float32, where upstream kept it in the
    weight dtype. Quantized checkpoints add a ``weight_scale`` beside each linear weight, mapped
    the same way. A name it does not know is passed through unchanged: GLM names (a converted
    checkpoint) then load as they are, anything else is reported as unexpected.
    """
    if name in _GLOBAL_NAMES:
        yield _GLOBAL_NAMES[name], tensor
        return
    if name == "transformer.rotary_pos_emb.inv_freq":
        return
    if name.startswith(_LAYER_PREFIX):
        layer, _, rest = name[len(_LAYER_PREFIX) :].partition(".")
        prefix = f"model.layers.{layer}."
        module, _, suffix = rest.rpartition(".")
        if suffix in _LAYER_SUFFIXES.get(module, ()):
            yield prefix + _LAYER_MODULES[module] + "." + suffix, tensor
            return
        if rest.startswith("self_attention.query_key_value."):
            kind = rest.rsplit(".", 1)[1]
            q_rows = config.num_attention_heads * config.head_dim
            kv_rows = config.num_key_value_heads * config.head_dim
            if tensor.shape[0] == q_rows + 2 * kv_rows:
                q, k, v = torch.split(tensor, [q_rows, kv_rows, kv_rows])
                yield prefix + f"self_attn.q_proj.{kind}", q
                yield prefix + f"self_attn.k_proj.{kind}", k
                yield prefix + f"self_attn.v_proj.{kind}", v
                return
    yield name, tensor


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a checkpoint, in load order: an index's shards, or a single file."""
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index = model_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ModelLoadError(
                    f"cannot read {index}: {exc}", "re-download the checkpoint"
                ) from exc
            files = [model_dir / name for name in names]
            absent = [path.name for path in files if not path.is_file()]
            if absent:
                raise ModelLoadError(
                    f"{model_dir} lacks {', '.join(absent)}, listed in {index_name}",
                    "the download is incomplete; download the model again",
                )
            return files
    for single in (SAFETENSORS_SINGLE, BIN_SINGLE):
        if (model_dir / single).is_file():
            return [model_dir / single]
    raise ModelLoadError(
        f"{model_dir} has no weights ({BIN_INDEX}, {BIN_SINGLE} or safetensors)",
        "the download is incomplete; download the model again",
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """One weight file, memory-mapped so only what is used gets paged in."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read {path.name}: {exc}", "the file is damaged; download the model again"
        ) from exc


@dataclass(frozen=True)
class StoredQuantization:
    """How a checkpoint's linear weights are stored: integer bits and columns per scale.

    ``group_size`` None means one scale per row (the official layout); ``lm_head`` says whether
    the output layer is quantized too (the official checkpoints keep it in float16).
    """

    bits: int
    group_size: int | None
    lm_head: bool


def stored_quantization(chatglm: dict[str, Any]) -> StoredQuantization | None:
    """The quantization a checkpoint was saved with, from its config; None for full precision."""
    ours = chatglm.get(QUANTIZATION_KEY)
    if isinstance(ours, dict):
        bits = ours.get("bits")
        if bits in (4, 8):
            group = ours.get("group_size")
            return StoredQuantization(
                bits, group if isinstance(group, int) else None, bool(ours.get("lm_head"))
            )
    bits = chatglm.get("quantization_bit")
    if not bits:
        return None
    if bits not in (4, 8):
        raise ModelLoadError(
            f"{CONFIG_FILE} sets quantization_bit = {bits!r}; only 4 and 8 exist",
            "use THUDM/codegeex2-6b, or its INT4 version THUDM/codegeex2-6b-int4",
        )
    return StoredQuantization(bits, None, lm_head=False)


def linear_names(config: GlmConfig, *, lm_head: bool) -> set[str]:
    """GLM module names of the linear layers that INT8/INT4 applies to."""
    names = {
        f"model.layers.{i}.{linear}"
        for i in range(config.num_hidden_layers)
        for linear in LAYER_LINEARS
    }
    if lm_head:
        names.add("lm_head")
    return names


def tensor_device(name: str, layer_devices: list[torch.device]) -> torch.device:
    """Where a GLM tensor lives when layers are split: embeddings with the first layer, the final
    norm and output layer with the last."""
    if name.startswith("model.layers."):
        return layer_devices[int(name.split(".")[2])]
    if name.startswith("model.embed_tokens"):
        return layer_devices[0]
    return layer_devices[-1]


def load_model(
    model_dir: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str = "none",
    layer_devices: list[torch.device] | None = None,
    kernel: str | None = None,
) -> GlmForCausalLM:
    """``GlmForCausalLM`` with the checkpoint's weights on ``device`` in ``dtype``, in eval mode.

    Built on the meta device, then each file is read and its tensors assigned before the next
    file is opened, so no randomly initialised copy is ever allocated. ``quantize`` (``int8``,
    ``int4``) turns full-precision linear weights into integers one tensor at a time; a
    checkpoint stored quantized keeps its own integers and scales whatever ``quantize`` says,
    since re-quantizing would lose precision. ``layer_devices`` (one device per layer) splits
    the model; ``kernel`` forces a quantized kernel (tests compare them).
    """
    chatglm = read_config(model_dir)
    stored = stored_quantization(chatglm)
    config = glm_config(chatglm)
    config._attn_implementation = "sdpa"
    devices = layer_devices or [device] * config.num_hidden_layers
    if len(devices) != config.num_hidden_layers:
        raise ValueError(f"{len(devices)} layer devices for {config.num_hidden_layers} layers")
    if stored is not None:
        bits, group, quantized = (
            stored.bits,
            stored.group_size,
            linear_names(config, lm_head=stored.lm_head),
        )
        if quantize not in ("none", f"int{bits}"):
            logger.warning("%s is stored as INT%d; loading it as stored", model_dir, bits)
    else:
        bits = {"none": 0, "int8": 8, "int4": 4}[quantize]
        group = INT4_GROUP_SIZE if bits == 4 else None
        quantized = linear_names(config, lm_head=True) if bits else set()
    with torch.device("meta"):
        model = GlmForCausalLM(config)
    swap_linears(model, bits, quantized)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    loaded: set[str] = set()
    unexpected: list[str] = []
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for path in weight_files(model_dir):
        logger.debug("loading %s", path.name)
        assigned: dict[str, torch.Tensor] = {}
        for upstream_name, upstream in read_weights(path).items():
            for name, tensor in glm_tensors(upstream_name, upstream, config):
                module, _, suffix = name.rpartition(".")
                target = tensor_device(name, devices)
                if module in quantized and suffix in ("weight", "weight_scale"):
                    if stored is not None and suffix == "weight" and tensor.dtype != torch.int8:
                        raise ModelLoadError(
                            f"{upstream_name} is {str(tensor.dtype).removeprefix('torch.')}, "
                            f"but config.json says the weights are INT{bits} (int8 integers)",
                            "the checkpoint is damaged; download the model again",
                        )
                    parts = pending.setdefault(module, {})
                    parts[suffix] = tensor
                    if stored is None or len(parts) == 2:
                        _set_quantized(
                            model,
                            module,
                            parts,
                            stored,
                            bits,
                            group,
                            target,
                            dtype,
                            kernel,
                            upstream_name,
                        )
                        del pending[module]
                        loaded.add(module + ".weight")
                    continue
                if name not in expected:
                    unexpected.append(upstream_name)
                    continue
                if tensor.shape != expected[name]:
                    raise ModelLoadError(
                        f"{upstream_name} in {path.name} has shape {list(tensor.shape)}, "
                        f"the config needs {list(expected[name])}",
                        "config.json and the weights do not match; download the model again",
                    )
                assigned[name] = tensor.to(
                    device=target, dtype=_storage_dtype(name, tensor, dtype, bits)
                )
        model.load_state_dict(assigned, strict=False, assign=True)
        loaded.update(assigned)
        del assigned
    if unexpected:
        raise ModelLoadError(
            f"{model_dir} has tensors a ChatGLM2 model does not: {', '.join(unexpected[:5])}",
            "this is not a ChatGLM2 checkpoint, or a variant that is not supported",
        )
    wanted = set(expected) | {module + ".weight" for module in quantized}
    missing = sorted(wanted - loaded)
    if missing:
        raise ModelLoadError(
            f"{model_dir} lacks {', '.join(missing[:5])}",
            "the download is incomplete; download the model again",
        )
    _reset_rotary(model, devices[0])
    _connect_devices(model, devices, dtype)
    model.requires_grad_(False)
    model.config.dtype = dtype
    model.generation_config = GenerationConfig(
        eos_token_id=EOS_ID, pad_token_id=PAD_ID, bos_token_id=None
    )
    model.eval()
    logger.info(
        "loaded %s: %d layers, %s%s on %s",
        model_dir,
        config.num_hidden_layers,
        str(dtype).removeprefix("torch."),
        f" with INT{bits} weights" if bits else "",
        ", ".join(sorted({str(d) for d in devices})),
    )
    return model


def _storage_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype, bits: int) -> torch.dtype:
    """Quantized models keep the embedding table in the checkpoint's 16-bit precision.

    Only one row per token is read from it, so a float32 copy would spend a gigabyte (6B) for
    nothing; the lookup's output is cast to ``dtype`` (see ``_connect_devices``).
    """
    if (
        bits
        and name == "model.embed_tokens.weight"
        and tensor.is_floating_point()
        and tensor.element_size() < torch.finfo(dtype).bits // 8
    ):
        return tensor.dtype
    return dtype


def _set_quantized(
    model: GlmForCausalLM,
    module: str,
    parts: dict[str, torch.Tensor],
    stored: StoredQuantization | None,
    bits: int,
    group: int | None,
    device: torch.device,
    dtype: torch.dtype,
    kernel: str | None,
    upstream_name: str,
) -> None:
    """Give one :class:`QuantLinear` its integers: as stored, or quantized now from floats."""
    linear = model.get_submodule(module)
    assert isinstance(linear, QuantLinear)
    if stored is None:
        weight = parts["weight"]
        q, scale = quantize_weight(weight, bits, group and int4_group_size(weight.shape[1]))
    else:
        q = unpack_int4(parts["weight"]) if bits == 4 else parts["weight"]
        scale = parts["weight_scale"].float()
        scale = scale.reshape(scale.shape[0], -1)
    try:
        linear.set_weight(q.to(device), scale.to(device), dtype, kernel)
    except ValueError as error:
        raise ModelLoadError(
            f"{upstream_name}: {error}",
            "config.json and the weights do not match; download the model again",
        ) from error


def _connect_devices(
    model: GlmForCausalLM, devices: list[torch.device], dtype: torch.dtype
) -> None:
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


def _reset_rotary(model: GlmForCausalLM, device: torch.device) -> None:
    """Replace the meta-device RoPE module with one computed in float32 on ``device``."""
    rotary = type(model.model.rotary_emb)(config=model.config)
    model.model.rotary_emb = rotary.to(device)


def load_tokenizer(model_dir: Path) -> ChatGLM2Tokenizer:
    """The checkpoint's ``tokenizer.model``, read with sentencepiece."""
    path = model_dir / TOKENIZER_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{model_dir} has no {TOKENIZER_FILE}",
            "the download is incomplete; download the model again",
        )
    try:
        return ChatGLM2Tokenizer(path)
    except (OSError, RuntimeError) as exc:
        raise ModelLoadError(
            f"cannot read {path}: {exc}", "the file is damaged; download the model again"
        ) from exc
