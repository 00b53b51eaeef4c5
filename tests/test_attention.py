"""The model's attention gives transformers' SDPA results, also where it takes its own path."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from codegeex2_lsp.backends.local import attention


class _Module(torch.nn.Module):
    is_causal = True

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("queries", "masked"), [(1, False), (3, True), (5, False)])
def test_same_as_transformers_sdpa(dtype: torch.dtype, queries: int, masked: bool) -> None:
    generator = torch.Generator().manual_seed(5)
    keys = 40
    query = torch.randn(1, 8, queries, 16, generator=generator).to(dtype)
    key = torch.randn(1, 2, keys, 16, generator=generator).to(dtype)
    value = torch.randn(1, 2, keys, 16, generator=generator).to(dtype)
    mask = None
    if masked:
        # The last `queries` tokens after a cache: each sees the cache and the ones before it.
        mask = torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries)[None, None]
    if not masked and queries > 1:
        key, value = key[:, :, :queries], value[:, :, :queries]
    module = _Module(groups=4)
    got, _ = attention.attention(module, query, key, value, mask, scaling=0.25)
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert got.shape == want.shape == (1, queries, 8, 16)
    assert got.dtype == dtype
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert float((got.float() - want.float()).abs().max()) < tolerance


@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
def test_a_single_query_respects_a_mask_that_hides_keys(mask_kind: str) -> None:
    """A decode step beside padding: the hidden keys get no weight on the own path either."""
    generator = torch.Generator().manual_seed(6)
    query = torch.randn(2, 8, 1, 16, generator=generator)
    key = torch.randn(2, 2, 30, 16, generator=generator)
    value = torch.randn(2, 2, 30, 16, generator=generator)
    visible = torch.ones(2, 1, 1, 30, dtype=torch.bool)
    visible[0, ..., :7] = False
    mask = visible
    if mask_kind == "additive":
        mask = torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)
    module = _Module(groups=4)
    got, _ = attention.attention(module, query, key, value, mask, scaling=0.25)
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert float((got - want).abs().max()) < 1e-5
    # The hidden keys changed nothing: the first sequence without them gives the same.
    alone, _ = attention.attention(module, query[:1], key[:1, :, 7:], value[:1, :, 7:], None)
    assert float((got[:1] - alone).abs().max()) < 1e-5
