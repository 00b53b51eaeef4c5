"""The KV caches generation runs on: each document's reusable prefix, and the static cache of
the compiled decode passes.

Consecutive keystrokes share almost all of their prompt, so the KV cache of each document's
last prompt is kept (within a memory budget, least recently used documents dropped first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, GlmForCausalLM, StaticCache
from transformers.cache_utils import CacheLayerMixin, StaticLayer

from codegeex2_lsp.backends.drafting import DRAFT_TOKENS

STATIC_LENGTH_STEP = 256
"""The static cache's length is rounded up to this, so nearby context settings share one graph."""


def static_length(context_tokens: int) -> int:
    """The static cache length for a context of ``context_tokens``."""
    return -(-context_tokens // STATIC_LENGTH_STEP) * STATIC_LENGTH_STEP


def _kv(layer: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A cache layer's keys and values, once it holds any: [B, groups, T, head_dim] each."""
    if not isinstance(layer, CacheLayerMixin) or layer.keys is None or layer.values is None:
        return None
    return layer.keys, layer.values


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class CacheEntry:
    """One document's reusable KV cache and the token ids it holds."""

    cache: DynamicCache | None = None
    ids: list[int] = field(default_factory=list)

    def nbytes(self) -> int:
        if self.cache is None:
            return 0
        held = (_kv(layer) for layer in self.cache.layers)
        return sum(keys.nbytes + values.nbytes for keys, values in filter(None, held))

    def crop(self, keep: int) -> None:
        """Keep the first ``keep`` tokens."""
        if self.cache is not None and keep < len(self.ids):
            self.cache.crop(keep - len(self.ids))
        del self.ids[keep:]

    def copy(self, keep: int) -> CacheEntry:
        """A new entry holding a copy of the first ``keep`` tokens; this one is left as it is."""
        cache = DynamicCache()
        assert self.cache is not None
        for index, layer in enumerate(self.cache.layers):
            held = _kv(layer)
            if held is not None:
                keys, values = held
                cache.update(keys[:, :, :keep].clone(), values[:, :, :keep].clone(), index)
        return CacheEntry(cache, self.ids[:keep])


class PrefixCache:
    """KV caches of recent prompts, one per document, within a byte budget (LRU).

    Entries are taken out while a generation runs on them and put back afterwards, so a
    generation that fails can never leave a half-updated entry behind. ``nbytes`` is a plain
    number, recounted on every change, so other threads can read it while the model runs.
    """

    def __init__(self) -> None:
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _recount(self) -> int:
        self.nbytes = sum(entry.nbytes() for entry in self._entries.values())
        return self.nbytes

    def take(self, key: str, ids: Sequence[int] = (), *, across_keys: bool = False) -> CacheEntry:
        """The entry to continue ``ids`` from: ``key``'s own, taken out of the cache.

        With ``across_keys`` (a server shared by several editors, where two windows often
        hold the same file), another key's entry that shares a longer prefix with ``ids`` is
        used instead, as a copy of that prefix: its own document keeps it.
        """
        entry = self._entries.pop(key, None) or CacheEntry()
        if across_keys:
            best, length = None, common_prefix_length(entry.ids, ids)
            for other in self._entries.values():
                shared = common_prefix_length(other.ids, ids)
                if shared > length and other.cache is not None:
                    best, length = other, shared
            if best is not None:
                entry = best.copy(length)
        self._recount()
        return entry

    def put(self, key: str, entry: CacheEntry, budget: int) -> None:
        """Keep ``entry`` as the most recent; drop the least recent until all fit ``budget``.

        An entry too big for the budget on its own is cropped to fit: its leading tokens are
        the ones the next keystroke reuses.
        """
        size = entry.nbytes()
        if size > budget and entry.ids:
            entry.crop(len(entry.ids) * budget // size)
            size = entry.nbytes()
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while self._recount() > budget and self._entries:
            self._entries.popitem(last=False)

    def forget(self, key: str | None = None) -> None:
        """Drop one document's entry, or every entry."""
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)
        self._recount()


class StaticDecoder:
    """A static KV cache of fixed length and fixed-shape decode passes, compiled or eager.

    A fixed-shape pass is what ``torch.compile`` turns into one CUDA graph, so a decode step
    costs one launch instead of hundreds of kernels. There are two shapes: one token, and
    ``width`` tokens for checking drafts (fewer drafts are padded; the padding's cache slots lie
    beyond the rewound length, where the causal mask hides them until they are overwritten).
    The prompt's KV is copied in from the prefix cache before each generation; generated
    tokens stay here.
    """

    def __init__(
        self,
        model: GlmForCausalLM,
        length: int,
        *,
        compiled: bool,
        suppress: torch.Tensor,
        width: int = DRAFT_TOKENS + 1,
    ) -> None:
        self.model = model
        self.length = length
        self.compiled = compiled
        self.width = width
        self.cache = StaticCache(config=model.config, max_cache_len=length)
        self._filled = 0
        self._suppress = suppress
        device = next(model.parameters()).device
        self._inputs = {
            n: (
                torch.zeros((1, n), dtype=torch.long, device=device),
                torch.zeros((1, n), dtype=torch.long, device=device),
            )
            for n in (1, width)
        }
        self._pass: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = self._eager_pass
        if compiled:
            mode = "reduce-overhead" if device.type == "cuda" else "default"
            self._pass = torch.compile(self._eager_pass, mode=mode, fullgraph=True, dynamic=False)

    def _eager_pass(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # tokens, positions: [1, N] -> logits after each token: [N, V]
        output = self.model(
            input_ids=tokens,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=tokens.shape[1],
        )
        return output.logits[0]

    def load(self, source: DynamicCache, count: int) -> None:
        """Copy the first ``count`` tokens of ``source`` in, dropping what was here."""
        for layer, given in zip(self.cache.layers, source.layers, strict=True):
            assert isinstance(layer, StaticLayer)
            kv = _kv(given)
            if kv is None:
                raise ValueError("the prompt's KV cache is empty")
            keys, values = kv
            if not layer.is_initialized:
                layer.lazy_initialization(keys[:, :, :1], values[:, :, :1])
            held = _kv(layer)
            assert held is not None
            held[0][:, :, :count].copy_(keys[:, :, :count])
            held[1][:, :, :count].copy_(values[:, :, :count])
            # A tensor on static layers, which the compiled step reads in place.
            layer.cumulative_length.fill_(count)
        self._filled = count

    def run(self, ids: Sequence[int]) -> torch.Tensor:
        """Run ``ids`` at the next positions; the logits after each: [len(ids), V] float32."""
        count = len(ids)
        width = 1 if count == 1 else self.width
        if self._filled + count > self.length:
            raise ValueError(f"the static cache holds {self.length} tokens")
        if count > width or self._filled + width > self.length:
            # No room for the padding near the end: one token at a time, same results.
            return torch.cat([self.run([token]) for token in ids])
        tokens, positions = self._inputs[width]
        if width == 1:
            tokens.fill_(ids[0])
            positions.fill_(self._filled)
        else:
            padded = [*ids, *[0] * (width - count)]
            tokens.copy_(torch.tensor([padded], dtype=torch.long))
            span = range(self._filled, self._filled + width)
            positions.copy_(torch.tensor([span], dtype=torch.long))
        logits = self._pass(tokens, positions)
        self._filled += width
        self.rewind(width - count)
        # A CUDA graph's output is overwritten by its next replay: this makes a new tensor.
        return logits[:count].float() + self._suppress

    def rewind(self, count: int) -> None:
        """Drop the last ``count`` tokens: the next pass overwrites their slots."""
        if count > 0:
            self.cache.crop(-count)
            self._filled -= count

    def warm_up(self, source: DynamicCache, count: int, passes: int = 3) -> None:
        """Compile and record both passes ahead of the first request (CUDA graphs need a few)."""
        for _ in range(passes):
            for width in (1, self.width):
                self.load(source, count)
                self.run([0] * width)
