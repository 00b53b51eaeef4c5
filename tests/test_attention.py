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
