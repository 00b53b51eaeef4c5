"""Drafts for speculative decoding, looked up in the text at hand.

Code repeats itself: identifiers, argument lists, the line above, and very often the text right
after the cursor, when the user rewrites a line. So the tokens that followed an earlier
occurrence of the last few tokens are a good guess of what comes next, and checking several
guessed tokens in one forward pass costs little more than computing one, because a batch-1
decode step is bound by reading the weights. This module only guesses; the model checks.

Pure Python on token ids, no torch: the search runs on the ids packed into bytes, where
``bytes.rfind`` does the work in C, so a draft costs microseconds even for a long prompt.

The drafter adapts to how its drafts fare: a run of drafts the model rejects makes it stop
drafting for a while, longer each time, so text that never repeats costs (almost) nothing.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

DRAFT_TOKENS = 6
"""Most tokens drafted for one verification pass."""

LONGEST_MATCH = 3
"""The longest tail of the text looked up; longer matches are tried first."""

SHORTEST_MATCH = 2
"""The shortest tail looked up. Single tokens match almost anywhere and mostly draft wrongly."""

MISSES_BEFORE_PAUSE = 2
"""Consecutive rejected drafts after which drafting pauses."""

LONGEST_PAUSE = 64
"""Most decode steps a pause lasts; each pause after a rejected draft doubles, up to this."""

_ITEM = "I"
_WIDTH = array(_ITEM).itemsize


@dataclass
class DraftTotals:
    """How speculation fared: verification passes, tokens drafted and tokens accepted."""

    steps: int = 0
    drafted: int = 0
    accepted: int = 0

    def add(self, other: DraftTotals) -> None:
        self.steps += other.steps
        self.drafted += other.drafted
        self.accepted += other.accepted


def _pack(ids: Sequence[int]) -> bytes:
    return array(_ITEM, ids).tobytes()


def _last_before(haystack: bytes | bytearray, needle: bytes, end: int) -> int:
    """Token index of the last occurrence of ``needle`` ending at or before token ``end``."""
    stop = end * _WIDTH
    while True:
        at = haystack.rfind(needle, 0, stop)
        if at < 0 or at % _WIDTH == 0:
            return at // _WIDTH if at >= 0 else -1
        # A match across token boundaries: look for one starting earlier.
        stop = at + len(needle) - 1


def _first(haystack: bytes, needle: bytes) -> int:
    """Token index of the first occurrence of ``needle``, or -1."""
    start = 0
    while True:
        at = haystack.find(needle, start)
        if at < 0 or at % _WIDTH == 0:
            return at // _WIDTH if at >= 0 else -1
        start = at + 1


class Drafter:
    """Drafts for one generation, from its prompt, what it generated, and the text after it.

    ``context`` is the prompt's ids and ``following`` the ids of the text after the cursor
    (tokenized on its own, so its first pieces may differ from the model's: matching realigns
    after them). Call :meth:`propose` before each decode step with the ids generated so far, and
    :meth:`record` after it with how many drafted tokens the model accepted.
    """

    def __init__(
        self,
        context: Sequence[int],
        following: Sequence[int] = (),
        *,
        max_tokens: int = DRAFT_TOKENS,
        longest_match: int = LONGEST_MATCH,
        shortest_match: int = SHORTEST_MATCH,
    ) -> None:
        if not 1 <= shortest_match <= longest_match:
            raise ValueError("need 1 <= shortest_match <= longest_match")
        self.max_tokens = max_tokens
        self.longest_match = longest_match
        self.shortest_match = shortest_match
        self.totals = DraftTotals()
        self._history = list(context)
        self._packed = bytearray(_pack(context))
        self._context_length = len(self._history)
        self._following = list(following)
        self._following_packed = _pack(following)
        self._length = max_tokens
        self._misses = 0
        self._pause = 0
        self._paused_for = 0

    def propose(self, generated: Sequence[int]) -> list[int]:
        """Up to the current draft length of tokens guessed to follow ``generated``; may be []."""
        self._catch_up(generated)
        if self._paused_for > 0:
            self._paused_for -= 1
            return []
        return self._lookup(self._length)

    def record(self, drafted: int, accepted: int) -> None:
        """Adapt to a verification pass that checked ``drafted`` tokens and kept ``accepted``."""
        self.totals.steps += 1
        if drafted == 0:
            return
        self.totals.drafted += drafted
        self.totals.accepted += accepted
        if accepted == drafted:
            self._length = min(self.max_tokens, self._length + 2)
        else:
            self._length = max(1, self._length - 1)
        if accepted > 0:
            self._misses = 0
            self._pause = 0
            return
        self._misses += 1
        if self._misses >= MISSES_BEFORE_PAUSE:
            self._pause = min(LONGEST_PAUSE, max(1, 2 * self._pause))
            self._paused_for = self._pause

    def _catch_up(self, generated: Sequence[int]) -> None:
        new = generated[len(self._history) - self._context_length :]
        if new:
            self._history.extend(new)
            self._packed.extend(_pack(new))

    def _lookup(self, limit: int) -> list[int]:
        history = self._history
        end = len(history)
        for size in range(min(self.longest_match, end), self.shortest_match - 1, -1):
            tail = _pack(history[end - size :])
            at = _first(self._following_packed, tail)
            if at >= 0 and at + size < len(self._following):
                return self._following[at + size : at + size + limit]
            # The occurrence must end before the tail's last token, so something follows it.
            at = _last_before(self._packed, tail, end - 1)
            if at >= 0:
                return _continue(history, at + size, limit)
        return []


def _continue(history: list[int], start: int, limit: int) -> list[int]:
    """What followed ``start``, read on into the draft itself when it reaches the end.

    A repeat that started ``period`` tokens back goes on repeating: in a loop the draft can
    then be longer than the loop.
    """
    draft = history[start : start + limit]
    period = len(history) - start
    while len(draft) < limit:
        draft.append(draft[len(draft) - period])
    return draft
