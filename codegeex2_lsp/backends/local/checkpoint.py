"""The checkpoint format: file names, the config, tensor names, and how quantized weights are
stored; shared by the loader and ``convert``.

ChatGLM2 checkpoints are mapped onto transformers' native ``GlmForCausalLM``, without remote
code. The upstream repository ships its own modelling code, which breaks with each transformers
release; the architecture itself is what transformers calls GLM (partial interleaved RoPE,
grouped-query attention, RMSNorm, SwiGLU). So the config is translated (``glm_config``) and the
tensor names are translated in one function (``glm_tensors``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy
import torch
from transformers import GlmConfig

from codegeex2_lsp.backends.local.quantize import INT4_GROUP_SIZE, int4_group_size
from codegeex2_lsp.errors import LoadError

CONFIG_FILE = "config.json"


BIN_INDEX = "pytorch_model.bin.index.json"

BIN_SINGLE = "pytorch_model.bin"

SAFETENSORS_INDEX = "model.safetensors.index.json"

SAFETENSORS_SINGLE = "model.safetensors"

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

QUANTIZATION_KEY = "weight_quantization"
"""Where a converted checkpoint's config.json records its quantization (ours, not upstream's)."""


def read_config(model_dir: Path) -> dict[str, Any]:
    """The upstream ``config.json``, checked to describe a ChatGLM2-family model we can run."""
    if not model_dir.is_dir():
        raise LoadError(
            f"model directory {model_dir} does not exist",
            "set codegeex2.model to a checkpoint directory or a hub id",
        )
    path = model_dir / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LoadError(
            f"{model_dir} has no {CONFIG_FILE}, so it is not a ChatGLM2 checkpoint",
            "point codegeex2.model at a CodeGeeX2 checkpoint directory",
        ) from exc
    except (OSError, ValueError) as exc:
        raise LoadError(
            f"cannot read {path}: {exc}", "re-download the checkpoint; the file is damaged"
        ) from exc
    if not isinstance(config, dict) or config.get("model_type") != "chatglm":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise LoadError(
            f"{model_dir} holds a {found!r} model, not a ChatGLM2 (model_type 'chatglm') one",
            "use a CodeGeeX2 checkpoint such as THUDM/codegeex2-6b",
        )
    missing = [name for name in _REQUIRED_FIELDS if not isinstance(config.get(name), int)]
    if missing:
        raise LoadError(
            f"{path} lacks {', '.join(missing)}",
            "the config is incomplete; re-download the checkpoint",
        )
    for name, (needed, why) in _FIXED_FIELDS.items():
        if name in config and config[name] != needed:
            raise LoadError(
                f"{path} sets {name} = {config[name]!r}: {why}",
                "use a ChatGLM2 or CodeGeeX2 checkpoint",
            )
    if config.get("multi_query_attention") and not isinstance(
        config.get("multi_query_group_num"), int
    ):
        raise LoadError(
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
            q_rows, kv_rows = _qkv_rows(config)
            if tensor.shape[0] == q_rows + 2 * kv_rows:
                q, k, v = torch.split(tensor, [q_rows, kv_rows, kv_rows])
                yield prefix + f"self_attn.q_proj.{kind}", q
                yield prefix + f"self_attn.k_proj.{kind}", k
                yield prefix + f"self_attn.v_proj.{kind}", v
                return
    yield name, tensor


def _qkv_rows(config: GlmConfig) -> tuple[int, int]:
    """Rows of the query part and of the key (or value) part of a fused attention weight."""
    # glm_config sets both; GlmConfig types them as optional.
    assert config.head_dim is not None and config.num_key_value_heads is not None
    return (
        config.num_attention_heads * config.head_dim,
        config.num_key_value_heads * config.head_dim,
    )


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a checkpoint, in load order: an index's shards, or a single file."""
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index = model_dir / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise LoadError(
                    f"cannot read {index}: {exc}", "re-download the checkpoint"
                ) from exc
            files = [_shard_path(model_dir, name, index_name) for name in names]
            absent = [path.name for path in files if not path.is_file()]
            if absent:
                raise LoadError(
                    f"{model_dir} lacks {', '.join(absent)}, listed in {index_name}",
                    "the download is incomplete; download the model again",
                )
            return files
    for single in (SAFETENSORS_SINGLE, BIN_SINGLE):
        if (model_dir / single).is_file():
            return [model_dir / single]
    raise LoadError(
        f"{model_dir} has no weights ({BIN_INDEX}, {BIN_SINGLE} or safetensors)",
        "the download is incomplete; download the model again",
    )


def _shard_path(model_dir: Path, name: object, index_name: str) -> Path:
    """A shard an index names, which must lie in the model directory: an index is data from
    the download, and must not make the loader read files elsewhere.

    Checked on the name, not the resolved path: the hub's cache links each file to a blob
    outside the snapshot directory.
    """
    relative = PurePath(name) if isinstance(name, str) else None
    if relative is None or relative.anchor or ".." in relative.parts or not relative.parts:
        raise LoadError(
            f"{index_name} in {model_dir} names a shard outside the model directory: {name!r}",
            "the checkpoint is damaged or not trustworthy; download the model again",
        )
    return model_dir / relative


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_weights(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """One weight file's tensors, one at a time, each read only where it is used.

    A safetensors tensor comes in a memory mapping of its own bytes: once the caller lets it go
    (quantized into a copy, or converted), its pages leave the process. One mapping of the
    whole file, as ``safetensors`` makes it, stays alive while any tensor from it does, and
    every page read from it so far with it: loading would peak a shard above the finished
    model. ``.bin`` shards are unpickled memory-mapped, which torch allows only whole.
    """
    try:
        if path.suffix == ".safetensors":
            yield from _map_each(path)
            return
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        while state:
            name = next(iter(state))
            yield name, state.pop(name)
    except LoadError:
        raise
    except Exception as exc:
        raise LoadError(
            f"cannot read {path.name}: {exc}", "the file is damaged; download the model again"
        ) from exc


def _map_each(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    size = path.stat().st_size
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        if not 0 < length <= size - 8:
            raise ValueError(f"a header of {length} bytes in a file of {size}")
        header = json.loads(file.read(length))
    entries = sorted(
        ((name, entry) for name, entry in header.items() if name != "__metadata__"),
        key=lambda item: item[1]["data_offsets"][0],
    )
    for name, entry in entries:
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        shape = [int(n) for n in entry["shape"]]
        start, end = (int(n) for n in entry["data_offsets"])
        if not 0 <= start <= end <= size - 8 - length:
            raise ValueError(f"{name} lies outside the file")
        if start == end:
            yield name, torch.empty(shape, dtype=dtype)
            continue
        # Copy-on-write: a writable buffer for torch, while the file is never written.
        data = numpy.memmap(
            path, numpy.uint8, mode="c", offset=8 + length + start, shape=end - start
        )
        yield name, torch.frombuffer(data, dtype=dtype).view(shape)


@dataclass(frozen=True)
class StoredQuantization:
    """How a checkpoint's linear weights are stored: integer bits and columns per scale.

    ``group_size`` None means one scale per row (the official layout); otherwise it is the
    preferred number of columns per scale, which :meth:`group_for` fits to each weight.
    ``lm_head`` says whether the output layer is quantized too (the official checkpoints keep it
    in float16). Loading with ``quantize`` and ``convert`` make weights the same way
    (:meth:`made_now`), so a converted checkpoint holds what a load would have computed.
    """

    bits: int
    group_size: int | None
    lm_head: bool

    @classmethod
    def made_now(cls, bits: int) -> StoredQuantization:
        """How the project quantizes full-precision weights: INT4 by groups, INT8 by rows."""
        return cls(bits, INT4_GROUP_SIZE if bits == 4 else None, lm_head=True)

    def group_for(self, in_features: int) -> int | None:
        """Columns per scale for a weight with ``in_features`` columns; None for one per row."""
        return int4_group_size(in_features, self.group_size) if self.group_size else None

    def as_config(self) -> dict[str, Any]:
        """The ``config.json`` entry that :func:`stored_quantization` reads back."""
        return {"bits": self.bits, "group_size": self.group_size, "lm_head": self.lm_head}


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
        raise LoadError(
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
