"""The loaded GlmForCausalLM computes exactly the upstream ChatGLM2 network.

The reference forward pass below is written from the upstream architecture (fused query_key_value,
GPT-J-style interleaved RoPE on the first half of each head, grouped key/value heads, RMSNorm,
SwiGLU with the gate first, final norm, separate output layer) and reads the upstream-named tensors
straight from the checkpoint files, so a mistake in the name mapping, the q/k/v split or the RoPE
layout shows up as a logits mismatch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.tokenizer import read_tokenizer

PROMPT = """# language: Python
class Stack:
    def push(self, item):
        self.items.append(item)
    def pop(self):
"""


def _upstream_state(model_dir: Path) -> dict[str, torch.Tensor]:
    index = json.loads((model_dir / "pytorch_model.bin.index.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(torch.load(model_dir / shard, weights_only=True))
    return state


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [S, heads, head_dim]; cos, sin: [S, rot // 2]; pairs (x[2i], x[2i+1]) of the first
    # rot dims turn by position * inv_freq[i]; the rest of each head passes through.
    rot = 2 * cos.shape[-1]
    rotated, passed = x[..., :rot], x[..., rot:]
    even, odd = rotated[..., 0::2], rotated[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    turned = torch.stack([even * c - odd * s, odd * c + even * s], dim=-1).flatten(-2)
    return torch.cat([turned, passed], dim=-1)


def reference_logits(state: dict[str, torch.Tensor], config: dict, ids: list[int]) -> torch.Tensor:
    """Logits [S, vocab] of the ChatGLM2 forward pass over ``ids``."""
    heads = config["num_attention_heads"]
    groups = config["multi_query_group_num"]
    head_dim = config["kv_channels"]
    eps = config["layernorm_epsilon"]
    seq = len(ids)

    rot = head_dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    angles = torch.arange(seq, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()

    x = state["transformer.embedding.word_embeddings.weight"][torch.tensor(ids)]  # [S, H]
    for n in range(config["num_layers"]):
        p = f"transformer.encoder.layers.{n}."
        h = _rms_norm(x, state[p + "input_layernorm.weight"], eps)
        qkv = h @ state[p + "self_attention.query_key_value.weight"].T
        qkv = qkv + state[p + "self_attention.query_key_value.bias"]
        q, k, v = qkv.split([heads * head_dim, groups * head_dim, groups * head_dim], dim=-1)
        q = _rope(q.view(seq, heads, head_dim), cos, sin)
        k = _rope(k.view(seq, groups, head_dim), cos, sin)
        v = v.view(seq, groups, head_dim)
        # Query head i reads key/value group i // (heads / groups).
        k = k.repeat_interleave(heads // groups, dim=1)
        v = v.repeat_interleave(heads // groups, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_dim)
        weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        context = torch.einsum("hqk,khd->qhd", weights, v).reshape(seq, heads * head_dim)
        x = x + context @ state[p + "self_attention.dense.weight"].T

        h = _rms_norm(x, state[p + "post_attention_layernorm.weight"], eps)
        gate, up = (h @ state[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ state[p + "mlp.dense_4h_to_h.weight"].T
    x = _rms_norm(x, state["transformer.encoder.final_layernorm.weight"], eps)
    return x @ state["transformer.output_layer.weight"].T


@pytest.fixture(scope="module")
def ids(tiny_model_dir: Path) -> list[int]:
    ids = read_tokenizer(tiny_model_dir).prompt_ids(PROMPT)
    assert 24 <= len(ids) <= 80
    return ids


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> torch.nn.Module:
    return load_model(tiny_model_dir, device=torch.device("cpu"), dtype=torch.float32)


def test_logits_match_the_reference(
    tiny_model_dir: Path, model: torch.nn.Module, ids: list[int]
) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    expected = reference_logits(_upstream_state(tiny_model_dir), config, ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
    # The check has teeth: the logits vary far more than the tolerance.
    assert expected.std() > 0.1


def test_incremental_decoding_matches_the_full_forward(
    model: torch.nn.Module, ids: list[int]
) -> None:
    prefill = len(ids) - 8
    with torch.no_grad():
        full = model(input_ids=torch.tensor([ids])).logits[0]
        out = model(input_ids=torch.tensor([ids[:prefill]]), use_cache=True)
        cache = out.cache
        steps = [out.logits[0, -1]]
        for token in ids[prefill:]:
            out = model(input_ids=torch.tensor([[token]]), cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits[0, -1])
    torch.testing.assert_close(torch.stack(steps), full[prefill - 1 :], rtol=0, atol=1e-4)
