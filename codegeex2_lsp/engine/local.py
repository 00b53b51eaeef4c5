"""Generation on a local torch model: prefill, decode token by token, reuse the last KV cache.

Consecutive keystrokes share almost all of their prompt, so the KV cache of the previous
request is kept and only the tokens after the longest common prefix are prefilled. The decode
loop asks the caller after every token whether to go on, which is where cancellation and the
post-processing stop rules come in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, GlmForCausalLM

from codegeex2_lsp.engine.tokenizer import ChatGLM2Tokenizer

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256
"""Prefill in chunks so a cancelled request stops within one chunk, not after the whole prompt."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token; temperature 0 means greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 0
    seed: int = 0


@dataclass
class Generation:
    """What one generation produced and what it cost, for logs, tests and benchmarks."""

    text: str = ""
    ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    finish_reason: str = "length"
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


@dataclass
class Totals:
    """Tokens run through the model since it was loaded, including cancelled work."""

    prefilled: int = 0
    generated: int = 0


class Cancelled(Exception):
    """The request was cancelled or superseded while it ran; its partial work is not answered."""


StopCheck = Callable[[str], bool]
"""Called with the text generated so far after each token; True ends generation."""


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class LocalModel:
    """One loaded model and its tokenizer; used by exactly one thread at a time."""

    def __init__(self, model: GlmForCausalLM, tokenizer: ChatGLM2Tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        vocab_size = model.config.vocab_size
        # A float mask added to the logits keeps special and padding ids from ever being produced.
        suppress = torch.zeros(vocab_size, dtype=torch.float32, device=self.device)
        suppress[tokenizer.suppressed_ids(vocab_size)] = float("-inf")
        self._suppress = suppress
        self._cache: DynamicCache | None = None
        self._cache_ids: list[int] = []
        self.totals = Totals()

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        should_stop: StopCheck | None = None,
    ) -> Generation:
        """Continue ``prompt_ids`` (which include ``[gMASK] sop``) by up to ``max_new_tokens``.

        Raises :class:`Cancelled` as soon as ``cancelled()`` is true, checked between prefill
        chunks and before every decode step.
        """
        if not prompt_ids:
            raise ValueError("empty prompt")
        result = Generation(prompt_tokens=len(prompt_ids))
        started = time.perf_counter()
        logits = self._prefill(list(prompt_ids), result, cancelled)
        result.prefill_seconds = time.perf_counter() - started

        generator = None
        if params.temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        context = list(prompt_ids[-8:])
        started = time.perf_counter()
        while True:
            token = self._pick(logits, params, generator)
            if token == self.tokenizer.eos_id:
                result.finish_reason = "eos"
                break
            result.ids.append(token)
            result.generated_tokens += 1
            self.totals.generated += 1
            result.text = self.tokenizer.decode_continuation(context, result.ids)
            if should_stop is not None and should_stop(result.text):
                result.finish_reason = "stop"
                break
            if result.generated_tokens >= params.max_new_tokens:
                break
            if cancelled():
                raise Cancelled
            logits = self._forward([token])
            self._cache_ids.append(token)
        result.decode_seconds = time.perf_counter() - started
        return result

    def _prefill(
        self, ids: list[int], result: Generation, cancelled: Callable[[], bool]
    ) -> torch.Tensor:
        # At least the last prompt token is always run, so there are logits to sample from.
        keep = min(common_prefix_length(self._cache_ids, ids), len(ids) - 1)
        if self._cache is not None and keep > 0:
            self._cache.crop(keep - len(self._cache_ids))
            del self._cache_ids[keep:]
        else:
            keep = 0
            self._cache = DynamicCache(config=self.model.config)
            self._cache_ids = []
        result.reused_tokens = keep
        logits: torch.Tensor | None = None
        for start in range(keep, len(ids), PREFILL_CHUNK):
            if cancelled():
                raise Cancelled
            chunk = ids[start : start + PREFILL_CHUNK]
            logits = self._forward(chunk)
            self._cache_ids.extend(chunk)
            result.prefilled_tokens += len(chunk)
            self.totals.prefilled += len(chunk)
        assert logits is not None
        return logits

    def _forward(self, ids: list[int]) -> torch.Tensor:
        # ids: [S] new tokens after those already in the cache -> logits of the last one: [V]
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        try:
            output = self.model(
                input_ids=input_ids, cache=self._cache, use_cache=True, logits_to_keep=1
            )
        except BaseException:
            # A half-updated cache no longer matches its ids; start clean next time.
            self._cache = None
            self._cache_ids = []
            raise
        return output.logits[0, -1].float() + self._suppress

    def _pick(
        self, logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
    ) -> int:
        # logits: [V] float32 with suppressed ids at -inf
        if generator is None:
            return int(torch.argmax(logits))
        logits = logits / params.temperature
        if params.top_k > 0:
            k = min(params.top_k, logits.numel())
            threshold = torch.topk(logits, k).values[-1]
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # Keep the smallest set whose mass reaches top_p; the first token always stays.
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= params.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator))

    def forget(self) -> None:
        """Drop the reusable KV cache, e.g. to free memory."""
        self._cache = None
        self._cache_ids = []
