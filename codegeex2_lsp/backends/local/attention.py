"""The model's attention: transformers' SDPA, with grouped heads kept grouped on the CPU.

ChatGLM2 has 2 key/value heads for 32 query heads. For a pass of several tokens on a cache (a
speculative verification, a prefill after the reused prefix) the causal mask is explicit, and
transformers then copies every cached key and value 16 times to give each query head its own,
which on the CPU costs more than the attention itself (about 20 ms a pass on the 6B model with
a 512-token context). torch's CPU attention takes a mask and grouped heads together, so those
passes go to it directly.

A decode step (one query) on the CPU is two small matrix products per layer, but torch's CPU
flash-attention kernel spent about 2 ms a layer on it with a 512-token context (54 ms of a 190 ms
step on the 6B model, benchmarks/BENCHMARKS.md), so a single query is computed here with plain
products in float32, each group of query heads against its key/value head. Everything else, and
every other device (where a mask with grouped heads may fall back to a slow kernel), stays on
transformers' own path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "codegeex2_sdpa"
"""The attention implementation to put in the model's config."""


def attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query: [B, H, Q, D], key and value: [B, KV, L, D] -> ([B, Q, H, D], None)."""
    if query.device.type == "cpu" and query.shape[2] == 1:
        return _single_query(query, key, value, attention_mask, scaling), None
    grouped = key.shape[1] != query.shape[1]
    if query.device.type == "cpu" and attention_mask is not None and grouped:
        # In float32: torch's masked CPU kernel is about twice as fast there as in bfloat16,
        # and the casts of a few hundred kilobytes cost far less than the difference.
        out = F.scaled_dot_product_attention(
            query.float(),
            key.float(),
            value.float(),
            attn_mask=attention_mask,
            scale=scaling,
            enable_gqa=True,
        )
        return out.to(query.dtype).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


def _single_query(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
) -> torch.Tensor:
    """One query per sequence: [B, H, 1, D] against [B, KV, L, D] -> [B, 1, H, D]."""
    batch, heads, _, dim = query.shape
    groups = key.shape[1]
    scale = scaling if scaling is not None else dim**-0.5
    # [B, KV, H / KV, D]: the query heads that share a key/value head, as rows of one product.
    grouped = query.reshape(batch, groups, heads // groups, dim).float()
    scores = torch.matmul(grouped, key.float().transpose(-1, -2)).mul_(scale)
    if attention_mask is not None:
        # [B, 1, 1, L] (or [B, 1, L]) broadcasts over the key/value heads and their groups.
        mask = attention_mask.reshape(attention_mask.shape[0], 1, 1, -1)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    weights = torch.softmax(scores, dim=-1)
    out = torch.matmul(weights, value.float())
    return out.reshape(batch, 1, heads, dim).to(query.dtype)


AttentionInterface.register(NAME, attention)
AttentionMaskInterface.register(NAME, sdpa_mask)
