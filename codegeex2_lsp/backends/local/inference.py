"""Generation on a local torch model: prefill, decode token by token, reuse recent KV caches.

Consecutive keystrokes share almost all of their prompt, so the KV cache of each document's
last prompt is kept (within a memory budget, least recently used documents dropped first) and
only the tokens after the longest common prefix are prefilled. The decode loop asks the caller
after every token whether to go on, which is where cancellation and the post-processing stop
rules come in. On CUDA, decode can run on a static KV cache through a compiled one-token step,
because batch-1 decode there is bound by per-step overhead as much as by memory. Greedy
decoding can check tokens drafted from the text at hand several per pass (see
:mod:`codegeex2_lsp.backends.local.decoding`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Literal

import torch
from transformers import DynamicCache, GlmForCausalLM

from codegeex2_lsp.backends.drafting import DRAFT_TOKENS, Drafter, DraftTotals
from codegeex2_lsp.backends.generation import (
    Cancelled,
    Continuation,
    Generation,
    SamplingParams,
    StopCheck,
    Totals,
)
from codegeex2_lsp.backends.local.decoding import decode
from codegeex2_lsp.backends.local.kvcache import (
    CacheEntry,
    PrefixCache,
    StaticDecoder,
    common_prefix_length,
    static_length,
)
from codegeex2_lsp.backends.local.memory import return_freed_memory
from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256
"""Prefill in chunks so a cancelled request stops within one chunk, not after the whole prompt."""

DEFAULT_CACHE_BYTES = 256 * 2**20
"""KV memory kept for prefix reuse unless told otherwise: a few full-context documents of the
full-size model in 16-bit (about 28 KiB per token)."""


CPU_DRAFT_TOKENS = 3
"""Most tokens drafted per pass on the CPU. There a pass over n tokens costs more than one
(about a fifth of a step per extra token with the INT8 kernel, see benchmarks/BENCHMARKS.md),
so only short drafts pay; on GPUs a few more tokens cost almost nothing (DRAFT_TOKENS)."""

DecodeMode = Literal["dynamic", "static", "compiled"]
"""How decode runs: on the growing prefix cache, on a static cache eagerly, or compiled."""


def decode_mode(setting: str, device: torch.device) -> DecodeMode:
    """The decode path the ``compile`` setting asks for on ``device``.

    ``auto`` compiles on CUDA only: elsewhere compiling costs a minute and more at start for
    little gain, since CPU decode is bound by the matrix products, not by per-step overhead.
    """
    if setting == "on" or (setting == "auto" and device.type == "cuda"):
        return "compiled"
    return "dynamic"


class _CacheSteps:
    """Decode passes on a document's growing prefix-cache entry."""

    def __init__(self, model: LocalModel, entry: CacheEntry) -> None:
        self._model = model
        self._entry = entry

    def run(self, ids: Sequence[int]) -> torch.Tensor:
        # Generated tokens stay in the prefix cache: when the user types what was suggested,
        # the next prompt reuses them too.
        rows = self._model._forward(self._entry, ids, keep=len(ids))
        self._entry.ids.extend(ids)
        return rows

    def rewind(self, count: int) -> None:
        if count > 0:
            self._entry.crop(len(self._entry.ids) - count)


class LocalModel:
    """One loaded model and its tokenizer; used by exactly one thread at a time."""

    context_tokens: int | None = None

    def __init__(self, model: GlmForCausalLM, tokenizer: ChatGLM2Tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        vocab_size = model.config.vocab_size
        # A float mask added to the logits keeps special and padding ids from ever being produced.
        suppress = torch.zeros(vocab_size, dtype=torch.float32, device=self.device)
        suppress[tokenizer.suppressed_ids(vocab_size)] = float("-inf")
        self._suppress = suppress
        self.prefixes = PrefixCache()
        self._across_keys = False
        self._static: StaticDecoder | None = None
        self.totals = Totals()
        self.background_prefilled = 0
        """Prompt tokens run ahead of requests (:meth:`prefill`), also counted in ``totals``."""
        self.speculation = DraftTotals()
        self.draft_tokens = CPU_DRAFT_TOKENS if self.device.type == "cpu" else DRAFT_TOKENS

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def context_length(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def cached_bytes(self) -> int:
        return self.prefixes.nbytes

    def share_prefixes(self, across_keys: bool) -> None:
        """Whether a document may start from another document's cached prefix (see take)."""
        self._across_keys = across_keys

    @property
    def decode(self) -> DecodeMode:
        """The decode path in use."""
        if self._static is None:
            return "dynamic"
        return "compiled" if self._static.compiled else "static"

    def choose_decode(
        self, setting: str, context_tokens: int, progress: Callable[[str], None]
    ) -> None:
        """Use the ``compile`` setting's decode path for a context of ``context_tokens``."""
        mode = decode_mode(setting, self.device)
        if mode != "dynamic" and self.decode != mode:
            progress("Compiling the decode step")
        try:
            self.set_decode_mode(mode, context_tokens)
        except Exception:
            # A compiler that fails must not cost the user their completions.
            log.exception("preparing %s decode failed; decoding without it", mode)
            self.set_decode_mode("dynamic", context_tokens)

    def status(self) -> dict[str, Any]:
        """The decode path, speculation's counters and the KV memory kept for prefix reuse."""
        return {
            "decode": self.decode,
            "speculation": asdict(self.speculation),
            "prefix_cache": {
                "documents": len(self.prefixes),
                "bytes": self.prefixes.nbytes,
                "prefilled_ahead": self.background_prefilled,
            },
        }

    @torch.inference_mode()
    def set_decode_mode(self, mode: DecodeMode, context_tokens: int) -> None:
        """Switch the decode path; a static one holds ``context_tokens`` and is warmed up now.

        Compiling takes seconds to minutes, so it belongs to loading or to a settings change,
        never to the first keystroke's request.
        """
        length = static_length(context_tokens)
        current = self._static
        if mode == "dynamic":
            self._static = None
            return
        if (
            current is not None
            and current.length == length
            and current.compiled == (mode == "compiled")
        ):
            return
        self._static = None
        decoder = StaticDecoder(
            self.model, length, compiled=mode == "compiled", suppress=self._suppress
        )
        started = time.perf_counter()
        scratch = DynamicCache(config=self.model.config)
        prompt = torch.tensor([self.tokenizer.prefix_ids], dtype=torch.long, device=self.device)
        self.model(input_ids=prompt, cache=scratch, use_cache=True, logits_to_keep=1)
        decoder.warm_up(scratch, prompt.shape[1])
        self._static = decoder
        log.info(
            "%s decode on a static cache of %d tokens, ready in %.1f s",
            mode,
            length,
            time.perf_counter() - started,
        )

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        should_stop: StopCheck | None = None,
        cache_key: str = "",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        observe: Callable[[Generation], None] | None = None,
    ) -> Generation:
        """Continue ``prompt_ids`` (which include ``[gMASK] sop``) by up to ``max_new_tokens``.

        The KV cache kept under ``cache_key`` (a document) is reused up to the longest common
        prefix, and afterwards kept within ``cache_bytes`` for all keys together; 0 turns reuse
        off and frees every kept cache. Raises :class:`Cancelled` as soon as ``cancelled()`` is
        true, checked between prefill chunks and before every decode step; the work done until
        then stays in the cache for the next request. ``observe`` sees the generation after
        every token, which is how a server streams it.
        """
        if not prompt_ids:
            raise ValueError("empty prompt")
        self.totals.generations += 1
        started = time.perf_counter()
        if cache_bytes > 0:
            entry = self.prefixes.take(cache_key, prompt_ids, across_keys=self._across_keys)
        else:
            self.prefixes.forget()
            entry = CacheEntry()
        try:
            return self._generate(entry, list(prompt_ids), params, cancelled, should_stop, observe)
        finally:
            if cache_bytes > 0 and entry.cache is not None:
                self.prefixes.put(cache_key, entry, cache_bytes)
            self.totals.seconds += time.perf_counter() - started

    @torch.inference_mode()
    def prefill(
        self,
        prompt_ids: Sequence[int],
        *,
        cancelled: Callable[[], bool] = lambda: False,
        cache_key: str = "",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> int:
        """Keep the KV of ``prompt_ids`` under ``cache_key`` for a request yet to come.

        The same chunks a request's prefill runs, so a request pre-empting it between two
        chunks finds the finished ones kept; cancellation stops it as it stops a request.
        Returns the tokens run (0 when the kept cache already holds the prompt).
        """
        if not prompt_ids or cache_bytes <= 0:
            return 0
        started = time.perf_counter()
        entry = self.prefixes.take(cache_key, prompt_ids, across_keys=self._across_keys)
        result = Generation(prompt_tokens=len(prompt_ids))
        try:
            self._prefill(entry, list(prompt_ids), result, cancelled, logits=False)
        finally:
            if entry.cache is not None:
                self.prefixes.put(cache_key, entry, cache_bytes)
            self.background_prefilled += result.prefilled_tokens
            self.totals.seconds += time.perf_counter() - started
        if self.device.type == "cpu" and result.prefilled_tokens >= PREFILL_CHUNK:
            return_freed_memory()
        return result.prefilled_tokens

    def _generate(
        self,
        entry: CacheEntry,
        prompt_ids: list[int],
        params: SamplingParams,
        cancelled: Callable[[], bool],
        should_stop: StopCheck | None,
        observe: Callable[[Generation], None] | None,
    ) -> Generation:
        result = Generation(prompt_tokens=len(prompt_ids))
        started = time.perf_counter()
        logits = self._prefill(entry, prompt_ids, result, cancelled)
        assert logits is not None
        result.prefill_seconds = time.perf_counter() - started
        if self.device.type == "cpu" and result.prefilled_tokens >= PREFILL_CHUNK:
            # A long prefill's activations are freed but would stay in the heap (0.3-0.5 GB
            # for the 6B model); giving them back takes milliseconds against its seconds.
            return_freed_memory()

        static = self._static
        if static is not None and len(prompt_ids) + params.max_new_tokens > static.length:
            static = None
        if static is not None:
            assert entry.cache is not None
            static.load(entry.cache, len(entry.ids))
            result.decode_mode = self.decode

        generator = None
        if params.temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        drafter = None
        if params.speculative and generator is None:
            drafter = Drafter(prompt_ids, params.following_ids, max_tokens=self.draft_tokens)

        def counted(grown: Generation) -> None:
            self.totals.generated += 1
            if observe is not None:
                observe(grown)

        rule = Continuation(
            self.tokenizer,
            prompt_ids,
            result,
            should_stop=should_stop,
            limit=params.max_new_tokens,
            on_token=counted,
        )

        def before_pass() -> None:
            if cancelled():
                raise Cancelled

        started = time.perf_counter()
        try:
            decode(
                logits,
                static if static is not None else _CacheSteps(self, entry),
                pick=lambda row: self._pick(row, params, generator),
                emit=rule.add,
                before_pass=before_pass,
                generated=result.ids,
                limit=params.max_new_tokens,
                drafter=drafter,
            )
        finally:
            if drafter is not None:
                self.speculation.add(drafter.totals)
        result.decode_seconds = time.perf_counter() - started
        return result

    def _prefill(
        self,
        entry: CacheEntry,
        ids: list[int],
        result: Generation,
        cancelled: Callable[[], bool],
        *,
        logits: bool = True,
    ) -> torch.Tensor | None:
        """Run the tokens of ``ids`` that ``entry`` lacks, chunk by chunk; the last logits.

        With ``logits`` at least the last prompt token is always run, so there are logits
        to sample from; a prefill ahead of a request needs none and may run nothing.
        """
        keep = common_prefix_length(entry.ids, ids)
        if logits:
            keep = min(keep, len(ids) - 1)
        if entry.cache is not None and keep > 0:
            entry.crop(keep)
        else:
            keep = 0
            entry.cache = DynamicCache(config=self.model.config)
            entry.ids = []
        result.reused_tokens = keep
        self.totals.reused += keep
        last: torch.Tensor | None = None
        for start in range(keep, len(ids), PREFILL_CHUNK):
            if cancelled():
                raise Cancelled
            chunk = ids[start : start + PREFILL_CHUNK]
            last = self._forward(entry, chunk)[-1]
            entry.ids.extend(chunk)
            result.prefilled_tokens += len(chunk)
            self.totals.prefilled += len(chunk)
        return last

    def _forward(self, entry: CacheEntry, ids: Sequence[int], keep: int = 1) -> torch.Tensor:
        # ids: [S] new tokens after those already in the cache -> logits of the last keep: [keep, V]
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        try:
            output = self.model(
                input_ids=input_ids, cache=entry.cache, use_cache=True, logits_to_keep=keep
            )
        except BaseException:
            # A half-updated cache no longer matches its ids; start clean next time.
            entry.cache = None
            entry.ids = []
            raise
        return output.logits[0].float() + self._suppress

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

    def forget(self, key: str | None = None) -> None:
        """Drop one document's reusable KV cache, or all of them, e.g. to free memory."""
        self.prefixes.forget(key)
