"""Drafts from the text at hand: what the drafter proposes, and how it backs off."""

from __future__ import annotations

import itertools

import pytest

from codegeex2_lsp.backends.drafting import LONGEST_PAUSE, MISSES_BEFORE_PAUSE, Drafter


def test_the_tokens_after_an_earlier_occurrence_of_the_tail_are_drafted() -> None:
    drafter = Drafter([1, 2, 3, 4, 5, 6, 9, 2, 3], max_tokens=3)
    assert drafter.propose([]) == [4, 5, 6]


def test_the_latest_occurrence_wins() -> None:
    drafter = Drafter([2, 3, 4, 2, 3, 7, 8, 2, 3], max_tokens=2)
    assert drafter.propose([]) == [7, 8]


def test_longer_matches_win_over_recent_ones() -> None:
    # [1, 2, 3] occurs once, early; [2, 3] alone later.
    drafter = Drafter([1, 2, 3, 40, 41, 5, 2, 3, 50, 51, 1, 2, 3], max_tokens=2)
    assert drafter.propose([]) == [40, 41]


def test_generated_tokens_are_part_of_the_text() -> None:
    drafter = Drafter([10, 11, 12], max_tokens=2)
    assert drafter.propose([]) == []
    assert drafter.propose([13, 14, 10, 11]) == [12, 13]


def test_the_text_after_the_cursor_comes_first() -> None:
    # The user rewrites a line: the rest of it is right after the cursor.
    drafter = Drafter([7, 8, 9, 1, 2, 30], following=[1, 2, 20, 21], max_tokens=2)
    assert drafter.propose([1, 2]) == [20, 21]


def test_the_following_text_is_matched_wherever_its_tokens_realign() -> None:
    drafter = Drafter([5, 6], following=[99, 5, 6, 7, 8, 9], max_tokens=3)
    assert drafter.propose([]) == [7, 8, 9]


def test_a_loop_is_drafted_beyond_its_length() -> None:
    drafter = Drafter([4, 1, 2, 1, 2], max_tokens=5)
    assert drafter.propose([]) == [1, 2, 1, 2, 1]


def test_matches_never_straddle_token_boundaries() -> None:
    # Packed four little-endian bytes to an id, 256, 65536, 0 hold the bytes of 1, 256 one byte
    # off: a byte match that is no token match, found before the true one further back.
    straddling = [256, 65536, 0, 5]
    assert Drafter([*straddling, 1, 256], max_tokens=1).propose([]) == []
    assert Drafter([1, 256, 42, *straddling, 1, 256], max_tokens=1).propose([]) == [42]
    assert Drafter([9, 1, 256], following=[*straddling, 1, 256, 42]).propose([]) == [42]


def test_nothing_is_drafted_without_a_repeat() -> None:
    assert Drafter(list(range(100))).propose(list(range(100, 120))) == []


def test_single_tokens_are_not_looked_up_by_default() -> None:
    assert Drafter([1, 2, 3, 9, 1]).propose([]) == []
    assert Drafter([1, 2, 3, 9, 1], shortest_match=1, max_tokens=2).propose([]) == [2, 3]


def test_accepted_drafts_grow_and_rejected_ones_shrink_the_draft_length() -> None:
    drafter = Drafter(list(range(20)) * 2, max_tokens=6)
    drafter.record(2, 2)
    assert len(drafter.propose([])) == 6
    drafter.record(6, 1)
    drafter.record(5, 1)
    assert len(drafter.propose([])) == 4


def pauses(drafter: Drafter, steps: int) -> list[bool]:
    """Which of ``steps`` decode steps drafted nothing, with every draft rejected."""
    out = []
    for _ in range(steps):
        drafts = drafter.propose([])
        drafter.record(len(drafts), 0)
        out.append(not drafts)
    return out


def test_rejected_drafts_pause_drafting_for_longer_and_longer() -> None:
    skipped = pauses(Drafter([1, 2, 3] * 4), 400)
    assert skipped[:MISSES_BEFORE_PAUSE] == [False] * MISSES_BEFORE_PAUSE
    drafting = [i for i, skip in enumerate(skipped) if not skip]
    gaps = [b - a for a, b in itertools.pairwise(drafting)]
    assert gaps == sorted(gaps)
    assert max(gaps) == LONGEST_PAUSE + 1
    # Once paused at the longest, drafting costs one pass in LONGEST_PAUSE + 1.
    assert sum(not skip for skip in skipped[-200:]) <= 200 // LONGEST_PAUSE + 1


def test_an_accepted_draft_starts_the_pauses_over() -> None:
    drafter = Drafter([1, 2, 3] * 4)
    pauses(drafter, 100)
    while not (drafts := drafter.propose([])):
        drafter.record(0, 0)
    drafter.record(len(drafts), 1)
    assert pauses(drafter, MISSES_BEFORE_PAUSE + 2) == [False] * MISSES_BEFORE_PAUSE + [
        True,
        False,
    ]


def test_totals_count_steps_drafts_and_accepted_tokens() -> None:
    drafter = Drafter([1, 2, 3] * 4)
    drafter.record(0, 0)
    drafter.record(4, 3)
    drafter.record(2, 0)
    assert (drafter.totals.steps, drafter.totals.drafted, drafter.totals.accepted) == (3, 6, 3)


def test_match_lengths_are_checked() -> None:
    with pytest.raises(ValueError):
        Drafter([1], shortest_match=3, longest_match=2)
