"""Build the model's prompt from a document snapshot: pure functions on strings and token ids.

The prompt is the language tag line, a newline, the block of snippets from other files (when
there is one), then the text before the cursor, trimmed from the top to a token budget.
Consecutive keystrokes must produce prompts that share almost all of their tokens, so the
engine can reuse the KV cache of the previous prompt; the window's start therefore moves in
coarse steps instead of following every keystroke, and the block changes only when it must.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import chain

from codegeex2_lsp.lsp.text import LspText
from codegeex2_lsp.postprocess.windows import PROMPT_CHARS_PER_TOKEN, PROMPT_WINDOW_GROWTH

Encode = Callable[[str], list[int]]

Context = tuple[str, tuple[int, ...]]
"""Text and token ids of the snippet block that follows the tag line."""

NO_CONTEXT: Context = ("", ())

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Prompt:
    """An immutable prompt, safe to hand to the engine's worker thread.

    ``first_line`` counts lines split at ``"\\n"`` only (a lone ``"\\r"`` does not start a line
    here), which matches the LSP line number for documents with LF or CRLF endings. It equals the
    number of prefix lines when nothing of the prefix is kept.
    """

    text: str
    ids: tuple[int, ...]
    first_line: int
    trimmed: bool


class LineTokenCache:
    """Token ids per line, so a keystroke re-tokenizes only the line that changed.

    Bounded LRU: a long editing session sees many distinct lines, and memory must not grow with
    it. Meant to be used from one thread (the event loop that builds prompts).
    """

    def __init__(self, encode: Encode, max_entries: int = 20000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.encode = encode
        self._max_entries = max_entries
        self._ids: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._walked: tuple[str, int, list[tuple[int, tuple[int, ...]]]] = ("", -1, [])

    def __len__(self) -> int:
        return len(self._ids)

    def encode_line(self, line: str) -> tuple[int, ...]:
        ids = self._ids.get(line)
        if ids is not None:
            self._ids.move_to_end(line)
            return ids
        ids = tuple(self.encode(line))
        self._ids[line] = ids
        if len(self._ids) > self._max_entries:
            self._ids.popitem(last=False)
        return ids

    def lines_from_end(self, text: str, limit: int) -> list[tuple[int, tuple[int, ...]]]:
        """(start, ids) of the lines of ``text``, last first, until they pass ``limit`` tokens.

        ``text`` is whole lines (empty, or ending in ``"\n"``). While the user types on one
        line, the text above it does not change: the last walk is kept and returned as it is,
        so a keystroke costs no work per line of context.
        """
        walked_text, walked_limit, walked = self._walked
        if limit <= walked_limit and text == walked_text:
            return walked
        lines: list[tuple[int, tuple[int, ...]]] = []
        used = 0
        for start, end in _lines_from_end(text):
            ids = self.encode_line(text[start:end])
            lines.append((start, ids))
            used += len(ids)
            if used > limit:
                break
        self._walked = (text, limit, lines)
        return lines


def _lines_from_end(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each line of ``text``, last line first; lines keep their ``"\\n"``.

    Walking from the end touches only the lines that can fit in the budget, however long the
    document is.
    """
    end = len(text)
    while end > 0:
        start = text.rfind("\n", 0, end - 1) + 1
        yield start, end
        end = start


def _line_count(text: str) -> int:
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def _tail(encode: Encode, line: str, budget: int) -> tuple[str, tuple[int, ...]]:
    """The end of ``line`` that encodes to at most ``budget`` tokens, and its ids.

    The cut lies on a grid of a quarter of the budget in characters, so that typing at the end
    of the line keeps the cut (and the prompt's first tokens) in place until the budget forces a
    jump, while at most a quarter of the budget goes unused (less with real tokens, which are
    longer than one character). When the grid would keep nothing, the cut is searched character
    by character.

    The search is a bisection: token counts of suffixes are not strictly monotonic, but the
    result always fits, because the upper end of the interval only ever moves to a fitting cut.
    Each cut tried is encoded once; the chosen one's ids are those already computed.
    """
    encoded: dict[int, tuple[int, ...]] = {len(line): ()}

    def fits(cut: int) -> bool:
        if cut not in encoded:
            encoded[cut] = tuple(encode(line[cut:]))
        return len(encoded[cut]) <= budget

    grid = max(1, budget // 4)
    cut = _first_fitting(fits, [*range(0, len(line), grid), len(line)])
    if cut == len(line) and grid > 1:
        cut = _first_fitting(fits, list(range(max(0, cut - grid), len(line) + 1)))
    fits(cut)
    return line[cut:], encoded[cut]


def _first_fitting(fits: Callable[[int], bool], positions: list[int]) -> int:
    """The first position that fits, found by bisection, assuming the last one does."""
    lo, hi = -1, len(positions) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(positions[mid]):
            hi = mid
        else:
            lo = mid
    return positions[hi]


def _head(
    tag_line: str | None, cache: LineTokenCache, budget: int, context: Context = NO_CONTEXT
) -> tuple[str, tuple[int, ...]]:
    """The tag line (with its newline) and the snippet block, and their ids; the block is
    dropped when both do not fit, and both when the tag line alone does not."""
    if tag_line:
        tag_ids = cache.encode_line(tag_line + "\n")
        if len(tag_ids) + len(context[1]) <= budget:
            return tag_line + "\n" + context[0], tag_ids + context[1]
        if len(tag_ids) <= budget:
            return tag_line + "\n", tag_ids
    return "", ()


def build_prompt(
    prefix: str,
    *,
    tag_line: str | None,
    cache: LineTokenCache,
    budget: int,
    step_lines: int = 16,
    context: Context = NO_CONTEXT,
) -> Prompt:
    """The tag line, the snippet block ``context`` and as much of ``prefix`` as fits in
    ``budget`` tokens, kept from the end.

    The kept prefix starts at a line whose index is a multiple of ``step_lines`` (the smallest
    such that the rest fits), so appending text at the cursor leaves the start, and the prompt's
    leading tokens, unchanged until the budget forces a jump of at least ``step_lines`` lines.
    When no step-aligned line fits, the start falls back to the first line that fits; when not
    even the last line fits, the tail of that line is kept (cut by characters, measured in
    tokens), because the model needs the text right before the cursor more than anything else.

    The tag line and the block count against the budget; the caller keeps the block small
    enough that the text before the cursor keeps priority. The prompt never exceeds the budget:
    when the tag line and the block do not fit, the block is dropped; when the tag line alone
    does not fit, it is dropped and the prefix gets the whole budget, since the code
    before the cursor says more than the tag. ``ids`` equals ``encode(text)`` as long as the
    tokenizer never merges across ``"\\n"``, which holds for the ChatGLM2 tokenizer.
    """
    if step_lines < 1:
        raise ValueError(f"step_lines must be at least 1, got {step_lines}")
    line_count = _line_count(prefix)
    if budget <= 0:
        return Prompt(text="", ids=(), first_line=line_count, trimmed=bool(prefix))

    head_text, head_ids = _head(tag_line, cache, budget, context)
    remaining = budget - len(head_ids)

    kept: list[tuple[int, tuple[int, ...]]] = []
    used = 0
    tail_start = prefix.rfind("\n") + 1
    if tail_start < len(prefix):
        # The unfinished last line changes with every keystroke: caching it would only churn
        # the cache.
        ids = tuple(cache.encode(prefix[tail_start:]))
        if len(ids) <= remaining:
            kept.append((tail_start, ids))
            used = len(ids)
    if len(kept) == (1 if tail_start < len(prefix) else 0):
        for start, ids in cache.lines_from_end(prefix[:tail_start], remaining):
            if used + len(ids) > remaining:
                break
            kept.append((start, ids))
            used += len(ids)

    if len(kept) == line_count:
        return Prompt(
            text=head_text + prefix, ids=head_ids + _concat(kept), first_line=0, trimmed=False
        )

    first_fitting = line_count - len(kept)
    aligned = -(-first_fitting // step_lines) * step_lines
    if aligned < line_count:
        kept = kept[: line_count - aligned]
    if kept:
        start = kept[-1][0]
        return Prompt(
            text=head_text + prefix[start:],
            ids=head_ids + _concat(kept),
            first_line=line_count - len(kept),
            trimmed=True,
        )

    last_start = prefix.rfind("\n", 0, len(prefix) - 1) + 1
    tail, ids = _tail(cache.encode, prefix[last_start:], remaining)
    return Prompt(
        text=head_text + tail,
        ids=head_ids + ids,
        first_line=line_count - 1 if tail else line_count,
        trimmed=True,
    )


def _concat(kept: list[tuple[int, tuple[int, ...]]]) -> tuple[int, ...]:
    """Ids of the kept lines in document order (``kept`` runs from the last line up)."""
    return tuple(chain.from_iterable(ids for _, ids in reversed(kept)))


def printable(text: str) -> str:
    """``text`` with lone surrogates (which no tokenizer can encode) as U+FFFD.

    Editors send them (a UTF-16 buffer cut inside a pair, a file read with a wrong
    encoding); the prompt keeps every other character in place.
    """
    return _SURROGATE.sub("\ufffd", text)


def prompt_at(
    text: LspText,
    offset: int,
    *,
    tag_line: str | None,
    cache: LineTokenCache,
    budget: int,
    step_lines: int = 16,
    context: Context = NO_CONTEXT,
) -> Prompt:
    """:func:`build_prompt` for the text before ``offset``, reading only a window of it.

    A keystroke then costs time in proportion to the window, not to the document or to the
    cursor's line. The window grows until the budget, not the window, limits the prompt.
    """
    head_text, head_ids = _head(tag_line, cache, budget, context)
    remaining = budget - len(head_ids)
    grid = max(1, remaining // 4)
    chars = max(1, budget) * PROMPT_CHARS_PER_TOKEN
    line = text.line_of(offset)
    line_start = text.line_start(line)
    while True:
        window, start = prefix_window(text, offset, chars, step_lines=step_lines, grid=grid)
        window = printable(window)
        if start > line_start and budget > 0:
            # Inside the cursor's line: only its end can be kept, so the line's other lines
            # need not be looked at (nor the whole window encoded first, as build_prompt does).
            tail, ids = _tail(cache.encode, window, remaining)
            if len(tail) < len(window):
                first = line if tail else line + 1
                return Prompt(head_text + tail, head_ids + ids, first_line=first, trimmed=True)
        else:
            prompt = build_prompt(
                window,
                tag_line=tag_line,
                cache=cache,
                budget=budget,
                step_lines=step_lines,
                context=context,
            )
            if start == 0 or prompt.trimmed:
                return replace(prompt, first_line=prompt.first_line + text.line_of(start))
        chars *= PROMPT_WINDOW_GROWTH


def first_window_end(
    text: LspText,
    *,
    tag_line: str | None,
    cache: LineTokenCache,
    budget: int,
    context: Context = NO_CONTEXT,
) -> int:
    """Where the document's first window ends: after the last whole line from the top whose
    tokens, with the tag line's, fit in ``budget``; the document's end when all of it fits.

    A request anywhere in this window builds its prompt from the document's first line, so
    the prompt of a cursor here shares with it everything above that cursor: the prompt a
    later request at an unknown place shares the most with. Lines are read from the top
    only until the budget is spent. ``context`` is the snippet block the prompt will hold.
    """
    _, head_ids = _head(tag_line, cache, budget, context)
    remaining = budget - len(head_ids)
    chars = max(1, budget) * PROMPT_CHARS_PER_TOKEN
    while True:
        window = printable(text.slice(0, chars))
        whole = len(window) >= len(text)
        used = start = 0
        while start < len(window):
            end = window.find("\n", start) + 1 or len(window)
            if end == len(window) and not whole and not window.endswith("\n"):
                break
            used += len(cache.encode_line(window[start:end]))
            if used > remaining:
                return start
            start = end
        if whole:
            return len(text)
        chars *= PROMPT_WINDOW_GROWTH


def prefix_window(
    text: LspText, offset: int, chars: int, *, step_lines: int, grid: int
) -> tuple[str, int]:
    """(text, start offset) of the end of the text before ``offset``, at least ``chars`` long
    unless the document is shorter, for the prompt to be built from instead of the whole
    document.

    The window starts at a line whose number is a multiple of ``step_lines``, or, when the
    cursor's own line alone is longer than ``chars``, at a multiple of ``grid`` characters from
    that line's start. Both are the places :func:`build_prompt` cuts at, so while the window
    holds more than the token budget the prompt is the one the whole document would give, and
    its start moves in the same coarse steps.
    """
    line_start = text.line_start(text.line_of(offset))
    if offset - line_start > chars:
        start = line_start + (offset - chars - line_start) // grid * grid
    else:
        first = text.line_of(max(0, offset - chars))
        start = text.line_start(first // step_lines * step_lines)
    return text.slice(start, offset), start
