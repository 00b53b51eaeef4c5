"""The path from a document and a cursor to suggestions, shared by the server and the CLI.

It knows neither LSP nor torch: it builds an immutable request from a snapshot of the
document (on the caller's thread), with the post-processing context built once for it, and
describes the model work to run on the engine's thread, which post-processes each candidate
once and answers finished, distinct suggestions.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from codegeex2_lsp.backends.generation import (
    CompletionModel,
    Generation,
    Prefills,
    SamplingParams,
)
from codegeex2_lsp.completion.languages import canonical_language_id, tag_line
from codegeex2_lsp.completion.prompt import (
    NO_CONTEXT,
    Context,
    LineTokenCache,
    Prompt,
    first_window_end,
    prompt_at,
)
from codegeex2_lsp.lsp.text import LspText, PositionEncoding
from codegeex2_lsp.postprocess import (
    PostContext,
    is_settled,
    make_context,
    offers_nothing,
    postprocess,
)
from codegeex2_lsp.postprocess.windows import (
    DRAFT_SUFFIX_CHARS,
    REQUEST_LINE_CHARS,
    REQUEST_PREFIX_CHARS,
    REQUEST_SUFFIX_CHARS,
)
from codegeex2_lsp.settings.fields import Settings

log = logging.getLogger(__name__)

CANDIDATE_TEMPERATURE = 0.8
"""Extra candidates are sampled this hot at least, so they differ from the greedy first one."""

_GARBAGE = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

ContextSource = Callable[[LspText, int, str | None, int], Context]
"""Gives the snippet block for (document, cursor offset, canonical language id, token budget)."""

_SETTLING_CHARACTERS = frozenset("\n)]}")
"""Only a new token holding one of these can make a suggestion settled, so only then we ask."""


@dataclass(frozen=True)
class CompletionRequest:
    """Everything one completion needs, snapshotted from the document."""

    prefix: str
    suffix: str
    prompt: Prompt
    candidates: int
    sampling: SamplingParams
    post: PostContext
    cache_key: str = ""
    cache_bytes: int = 0


@dataclass(frozen=True)
class Suggestion:
    """One finished text to insert, and the generation it came from (for logs and benchmarks)."""

    text: str
    generation: Generation


def prepare(
    text: str | LspText,
    line: int,
    character: int,
    *,
    settings: Settings,
    cache: LineTokenCache,
    language_id: str | None,
    uri: str | None = None,
    encoding: PositionEncoding = "utf-16",
    invoked: bool = False,
    context: ContextSource | None = None,
) -> CompletionRequest | None:
    """Cut the document at the cursor and build the prompt within the token budget.

    None where nothing is offered (the cursor in the indentation before code), decided here
    before any tokenizing or model work. ``invoked`` is true for an explicit request (a key
    the user pressed), which gets several candidates; automatic requests get one. Only
    windows around the cursor are read, so the cost does not grow with the document. The
    prefix kept starts on a grid of ``REQUEST_PREFIX_CHARS`` (``REQUEST_LINE_CHARS`` in a long
    line), so it grows as the user types along a suggestion (as typed-ahead needs) rather
    than sliding.

    ``context`` gives the snippets from other files, within :func:`context_budget`.
    """
    document = text if isinstance(text, LspText) else LspText(text)
    offset = document.offset(line, character, encoding)
    prefix_start = max(
        0, (offset - REQUEST_PREFIX_CHARS) // REQUEST_PREFIX_CHARS * REQUEST_PREFIX_CHARS
    )
    line_start = document.line_start(document.line_of(offset))
    if offset - line_start > REQUEST_LINE_CHARS:
        within = (
            (offset - line_start - REQUEST_LINE_CHARS) // REQUEST_LINE_CHARS * REQUEST_LINE_CHARS
        )
        prefix_start = max(prefix_start, line_start + within)
    prefix = document.slice(prefix_start, offset)
    suffix = document.slice(offset, offset + REQUEST_SUFFIX_CHARS)
    canonical = canonical_language_id(language_id, uri)
    post = make_context(prefix, suffix, canonical or "plaintext", settings.multiline)
    if offers_nothing(post):
        return None
    tag = tag_line(canonical)
    budget = settings.prompt_budget()
    block = NO_CONTEXT
    if context is not None:
        room = context_budget(settings, budget, tag, cache)
        if room > 0:
            block = context(document, offset, canonical, room)
    prompt = prompt_at(document, offset, tag_line=tag, cache=cache, budget=budget, context=block)
    sampling = SamplingParams(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        speculative=settings.speculative,
    )
    return CompletionRequest(
        prefix=prefix,
        suffix=suffix,
        prompt=prompt,
        candidates=settings.candidates if invoked else 1,
        sampling=sampling,
        post=post,
        cache_key=uri or "",
        cache_bytes=settings.prefix_cache_mb * 2**20,
    )


@dataclass(frozen=True)
class PrefillRequest:
    """A document's prompt to run into the model's kept cache before any request asks."""

    prompt: Prompt
    cache_key: str
    cache_bytes: int


def prepare_prefill(
    text: str | LspText,
    *,
    settings: Settings,
    cache: LineTokenCache,
    language_id: str | None,
    uri: str | None = None,
    context: ContextSource | None = None,
) -> PrefillRequest | None:
    """The prompt a request would build at the end of the document's first window.

    Where the user will ask is unknown; a request anywhere in the first window shares this
    prompt's tokens above its cursor (see :func:`first_window_end`), and the prompt is built
    by the same function as a request's, so those tokens are the same ids. None where there
    is nothing to keep: no cache to keep it in, or not even the first line fits. With
    ``context``, the snippet block is the one a request at that place gets; a later request
    shares the whole prefill only while its block is the same (see ``context.select``).
    """
    if settings.prefix_cache_mb <= 0:
        return None
    document = text if isinstance(text, LspText) else LspText(text)
    canonical = canonical_language_id(language_id, uri)
    tag = tag_line(canonical)
    budget = settings.prompt_budget()
    end = first_window_end(document, tag_line=tag, cache=cache, budget=budget)
    block = NO_CONTEXT
    if context is not None:
        room = context_budget(settings, budget, tag, cache)
        if room > 0:
            block = context(document, end, canonical, room)
            end = first_window_end(
                document, tag_line=tag, cache=cache, budget=budget, context=block
            )
    if end == 0:
        return None
    prompt = prompt_at(document, end, tag_line=tag, cache=cache, budget=budget, context=block)
    return PrefillRequest(prompt, uri or "", settings.prefix_cache_mb * 2**20)


def prefill(request: PrefillRequest, model: CompletionModel, cancelled: Callable[[], bool]) -> int:
    """Run ``request``'s prompt into the model's kept cache, on the engine's thread; the
    tokens run. A backend that keeps no cache of its own (see :class:`Prefills`) runs none."""
    if not isinstance(model, Prefills):
        return 0
    return model.prefill(
        _prompt_ids(request, model),
        cancelled=cancelled,
        cache_key=request.cache_key,
        cache_bytes=request.cache_bytes,
    )


def _grid_below(position: int, step: int) -> int:
    """The multiple of ``step`` at or below ``position``."""
    return position // step * step


def context_budget(settings: Settings, budget: int, tag: str | None, cache: LineTokenCache) -> int:
    """Tokens the snippet block may take: ``contextTokens``, and never more than half of what
    the tag line leaves, so the text before the cursor keeps priority."""
    if settings.context_tokens <= 0 or not tag:
        return 0
    return min(settings.context_tokens, (budget - len(cache.encode_line(tag + "\n"))) // 2)


def generate(
    request: CompletionRequest, model: CompletionModel, cancelled: Callable[[], bool]
) -> list[Suggestion]:
    """Run the model for ``request``: up to ``candidates`` finished, distinct suggestions.

    Runs on the engine's thread. The first candidate uses the configured sampling (greedy by
    default); further ones are sampled hotter. Every candidate after the first reuses the
    prompt's KV cache (kept under the document's ``cache_key``, within ``cache_bytes``), so
    extra candidates cost decode time only.
    """
    ids = _prompt_ids(request, model)
    first = _first_sampling(request, model)
    suggestions: list[Suggestion] = []
    seen: set[str] = set()
    attempts = request.candidates * 2 if request.candidates > 1 else 1
    for attempt in range(attempts):
        sampling = first
        if attempt > 0:
            temperature = max(sampling.temperature, CANDIDATE_TEMPERATURE)
            sampling = dataclasses.replace(sampling, temperature=temperature, seed=attempt)
        generation = model.generate(
            ids,
            sampling,
            cancelled=cancelled,
            should_stop=_stop_rule(request.post),
            cache_key=request.cache_key,
            cache_bytes=request.cache_bytes,
        )
        text = finish(request, generation.text)
        if text and text not in seen:
            seen.add(text)
            suggestions.append(Suggestion(text, generation))
        if len(suggestions) >= request.candidates:
            break
    return suggestions


def generate_raw(
    request: CompletionRequest, model: CompletionModel, cancelled: Callable[[], bool]
) -> Generation:
    """The first candidate without the early stop or post-processing: what the model wrote."""
    return model.generate(
        _prompt_ids(request, model),
        _first_sampling(request, model),
        cancelled=cancelled,
        should_stop=None,
        cache_key=request.cache_key,
        cache_bytes=request.cache_bytes,
    )


def _prompt_ids(request: CompletionRequest | PrefillRequest, model: CompletionModel) -> list[int]:
    return model.tokenizer.with_prefix(request.prompt.ids)


def _first_sampling(request: CompletionRequest, model: CompletionModel) -> SamplingParams:
    first = request.sampling
    if first.speculative and first.temperature == 0:
        following = model.tokenizer.encode(request.suffix[:DRAFT_SUFFIX_CHARS])
        first = dataclasses.replace(first, following_ids=tuple(following))
    return first


def finish(request: CompletionRequest, raw_text: str) -> str:
    """The text to insert for one generation.

    Sampling can pick byte pieces that form no valid UTF-8, or control characters; the text
    is cut before the first such character, which no editor should receive.
    """
    garbage = _GARBAGE.search(raw_text)
    if garbage is not None:
        raw_text = raw_text[: garbage.start()]
    return postprocess(raw_text, request.post)


def _stop_rule(ctx: PostContext) -> Callable[[str], bool]:
    seen = 0

    def should_stop(text: str) -> bool:
        nonlocal seen
        new_from, seen = seen, len(text)
        if _SETTLING_CHARACTERS.isdisjoint(text[new_from:]) and not _line_began(text, new_from):
            return False
        return is_settled(text, ctx)

    return should_stop


def _line_began(text: str, new_from: int) -> bool:
    """Whether the first visible character of the last line is among the new characters.

    A line's first character can settle a suggestion (a dedent out of the block), and the
    rest of that line would only be decoded to be thrown away.
    """
    line_start = text.rfind("\n") + 1
    line = text[line_start:]
    visible = len(line) - len(line.lstrip(" \t"))
    return visible < len(line) and line_start + visible >= new_from
