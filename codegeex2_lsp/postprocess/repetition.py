"""Repetition: how a base model loops, and when a line only repeats the document.

CodeGeeX2 never stops by itself; once its answer is written it tends to copy the lines
around it or repeat a line or a pattern. These tests find where that starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher


def squash(text: str) -> str:
    return "".join(text.split())


def similar(mine: str, theirs: str) -> bool:
    """Equal, or the same line with a slip (a base model rewriting the next line)."""
    if mine == theirs:
        return True
    longest = max(len(mine), len(theirs))
    if longest < 12 or abs(len(mine) - len(theirs)) > longest // 10:
        return False
    return SequenceMatcher(None, mine, theirs, autojunk=False).ratio() >= 0.9


def repeats(lines: list[str], j: int, floor: int) -> int:
    """Where to cut when line j completes a repetition, or -1: a loop the model fell into.

    `lines` starts with the document's lines before the completion (`floor` of them), so
    copying the lines just above the cursor counts too; the cut never reaches back into
    them. A line seen three times in a row keeps one copy; a block of lines written twice in
    a row keeps the first.
    """
    line = lines[j]
    if is_trivial(line):
        return -1
    if j >= 2 and lines[j - 1] == line and lines[j - 2] == line:
        run = j - 2
        while run > 0 and lines[run - 1] == line:
            run -= 1
        return max(run, floor) + 1
    for size in range(2, min(8, (j + 1) // 2) + 1):
        second = j - size + 1
        if second < floor:
            break
        block = lines[second : j + 1]
        if lines[second - size : second] == block and any(not is_trivial(s) for s in block):
            return second
    return -1


def last_written(lines: Sequence[str]) -> str:
    return next((line for line in reversed(lines) if line.strip()), "")


def is_trivial(line: str) -> bool:
    """Too short to call a repetition a loop (`}`, `end`, a blank line)."""
    return len(squash(line)) < 4


def ends_in_loop(line: str, complete: bool) -> bool:
    """A line that ends by repeating one short pattern (a degenerate generation).

    A line cut off by the token limit needs only a dozen characters of it; a finished line
    has to repeat the pattern a dozen times, so `0, 0, 0, 0` initialisers stay.
    """
    tail = line.rstrip()
    n = len(tail)
    for size in range(1, min(16, n // (12 if complete else 4)) + 1):
        unit = tail[n - size :]
        count = 1
        while n - (count + 1) * size >= 0 and tail.startswith(unit, n - (count + 1) * size):
            count += 1
        long_enough = count >= 12 if complete else count * size >= 12
        if count >= 4 and long_enough and any(c.isalnum() for c in unit):
            return True
    return False
