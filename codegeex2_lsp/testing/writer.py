"""Writing a tiny ChatGLM2 checkpoint in the upstream layout: config, shards, index, tokenizer."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from codegeex2_lsp.backends.local.checkpoint import BIN_INDEX, CONFIG_FILE
from codegeex2_lsp.backends.local.memory import CODEGEEX2_6B
from codegeex2_lsp.backends.local.quantize import pack_int4, quantize_weight
from codegeex2_lsp.backends.tokenizer import TOKENIZER_FILE
from codegeex2_lsp.testing.vocab import train_tokenizer
from codegeex2_lsp.testing.weights import Weights

logger = logging.getLogger(__name__)

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def tiny_config(
    *,
    num_layers: int,
    hidden_size: int,
    ffn_hidden_size: int,
    num_attention_heads: int,
    multi_query_group_num: int,
    kv_channels: int,
    seq_length: int,
    padded_vocab_size: int,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """An upstream ``config.json`` (field names and fixed values as in THUDM/codegeex2-6b)."""
    return {
        "_name_or_path": "THUDM/codegeex2-6b",
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "ffn_hidden_size": ffn_hidden_size,
        "fp32_residual_connection": False,
        "hidden_dropout": 0.0,
        "hidden_size": hidden_size,
        "kv_channels": kv_channels,
        "layernorm_epsilon": 1e-05,
        "multi_query_attention": True,
        "multi_query_group_num": multi_query_group_num,
        "num_attention_heads": num_attention_heads,
        "num_layers": num_layers,
        "original_rope": True,
        "padded_vocab_size": padded_vocab_size,
        "post_layer_norm": True,
        "rmsnorm": True,
        "seq_length": seq_length,
        "use_cache": True,
        "tie_word_embeddings": False,
        "torch_dtype": _DTYPE_NAMES[dtype],
        "transformers_version": "4.27.1",
        "eos_token_id": 2,
    }


def _balanced_shards(
    shapes: list[tuple[str, tuple[int, ...]]], shards: int
) -> list[list[tuple[str, tuple[int, ...]]]]:
    sizes = [math.prod(shape) for _, shape in shapes]
    per_shard = sum(sizes) / shards
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[] for _ in range(shards)]
    done = 0
    for item, size in zip(shapes, sizes, strict=True):
        index = min(int(done / per_shard), shards - 1)
        groups[index].append(item)
        done += size
    return [group for group in groups if group]


_QUANTIZED_LINEARS = (
    "self_attention.query_key_value.weight",
    "self_attention.dense.weight",
    "mlp.dense_h_to_4h.weight",
    "mlp.dense_4h_to_h.weight",
)


def _official_quantized(name: str, weight: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """One linear weight as upstream's ``quantization.py`` stores it: int8 integers, packed two
    per byte (even column in the high nibble) for INT4, and a float16 scale per row."""
    q, scale = quantize_weight(weight, bits, scale_dtype=torch.float16)
    return {name: pack_int4(q) if bits == 4 else q, name + "_scale": scale.reshape(-1)}


def write_tiny_model(
    directory: str | os.PathLike[str],
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    ffn_hidden_size: int = 172,
    num_attention_heads: int = 4,
    multi_query_group_num: int = 2,
    kv_channels: int = 16,
    seq_length: int = 4096,
    shards: int = 2,
    seed: int = 0,
    vocab_pieces: int = 1000,
    padded_vocab_size: int | None = None,
    vocab_multiple: int = 64,
    dtype: torch.dtype = torch.float32,
    quantization_bit: int | None = None,
) -> Path:
    """Write a ChatGLM2 checkpoint in the upstream layout to ``directory`` and return its path.

    ``quantization_bit`` 4 or 8 writes the official quantized layout instead (as
    THUDM/codegeex2-6b-int4): each layer's four linear weights as int8 integers, two per byte for
    INT4, with a float16 ``weight_scale`` per row, and ``quantization_bit`` in config.json; the
    other tensors in ``dtype`` (float16 upstream).

    Deterministic for the same arguments. ``padded_vocab_size`` defaults to the tokenizer's
    pieces plus the five specials rounded up to ``vocab_multiple``, as upstream pads (64);
    ``vocab_multiple=1`` makes the model's vocabulary exactly the tokenizer's, as servers that
    check the two agree want, and ``kv_channels`` sets the head size (32 or more for some
    attention kernels). :func:`codegeex2_6b_shape` gives the real model's shapes. Shards are
    written one at a time, so full-size checkpoints need memory for one shard, not the model.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_model = train_tokenizer(vocab_pieces)
    (out / TOKENIZER_FILE).write_bytes(tokenizer_model)
    tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_model)
    config = tiny_config(
        num_layers=num_layers,
        hidden_size=hidden_size,
        ffn_hidden_size=ffn_hidden_size,
        num_attention_heads=num_attention_heads,
        multi_query_group_num=multi_query_group_num,
        kv_channels=kv_channels,
        seq_length=seq_length,
        padded_vocab_size=_vocab_size(
            tokenizer.get_piece_size(), padded_vocab_size, vocab_multiple
        ),
        dtype=dtype,
    )
    if quantization_bit is not None:
        if quantization_bit not in (4, 8):
            raise ValueError("quantization_bit must be 4 or 8")
        config["quantization_bit"] = quantization_bit
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    _write_shards(out, Weights(config, tokenizer, seed), shards, dtype, quantization_bit)
    return out


def _vocab_size(piece_count: int, padded_vocab_size: int | None, multiple: int) -> int:
    """The model's vocabulary: the pieces and the five special tokens, padded."""
    needed = piece_count + 5
    if padded_vocab_size is None:
        return -(-needed // multiple) * multiple
    if padded_vocab_size < needed:
        raise ValueError(f"padded_vocab_size must be at least {needed}")
    return padded_vocab_size


def _write_shards(
    out: Path, weights: Weights, shards: int, dtype: torch.dtype, quantization_bit: int | None
) -> None:
    """``pytorch_model-*.bin`` shards one at a time, and their index."""
    groups = _balanced_shards(list(weights.shapes()), shards)
    weight_map: dict[str, str] = {}
    total_size = 0
    for index, group in enumerate(groups, start=1):
        file_name = f"pytorch_model-{index:05d}-of-{len(groups):05d}.bin"
        state: dict[str, torch.Tensor] = {}
        for name, shape in group:
            tensor = weights.tensor(name, shape)
            if quantization_bit is not None and name.endswith(_QUANTIZED_LINEARS):
                state.update(_official_quantized(name, tensor, quantization_bit))
            else:
                state[name] = tensor.to(dtype)
        torch.save(state, out / file_name)
        for name, tensor in state.items():
            weight_map[name] = file_name
            total_size += tensor.numel() * tensor.element_size()
        del state
        logger.debug("wrote %s", file_name)
    index_json = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (out / BIN_INDEX).write_text(json.dumps(index_json, indent=2) + "\n", encoding="utf-8")


def codegeex2_6b_shape(num_layers: int | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`write_tiny_model` and :func:`tiny_config` for the published
    CodeGeeX2-6B shape (:data:`CODEGEEX2_6B`); ``num_layers`` cuts the depth to fit a machine."""
    shape: dict[str, Any] = {name: CODEGEEX2_6B[name] for name in _SHAPE_FIELDS}
    shape["dtype"] = getattr(torch, CODEGEEX2_6B["torch_dtype"])
    if num_layers is not None:
        shape["num_layers"] = num_layers
    return shape


_SHAPE_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "multi_query_group_num",
    "kv_channels",
    "seq_length",
    "padded_vocab_size",
)
