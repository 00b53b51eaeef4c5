"""The lexer: code text and bracket events of one line, per language syntax.

It knows strings, character literals and comments well enough to find the brackets and
quotes that matter for the rules, and carries its state (an open string or block comment)
from line to line.
"""

from __future__ import annotations

import re
from functools import cache

from codegeex2_lsp.postprocess.syntax import Syntax

OPEN_TO_CLOSE = {"(": ")", "[": "]", "{": "}"}
CLOSE_TO_OPEN = {")": "(", "]": "[", "}": "{"}

# Lexer states carried across lines: None (code), a string delimiter, or a block comment's
# closing delimiter wrapped in a one-element tuple.
State = str | tuple[str] | None


_CHAR_LITERAL = re.compile(r"'(?:\\.[^']*|[^'\\])'")
_BRACKETS = "()[]{}"


@cache
def _string_end(delimiter: str) -> re.Pattern[str]:
    return re.compile(r"(?:\\.|[^\\])*?" + re.escape(delimiter), re.S)


def lex(
    line: str, lang: Syntax, state: State, *, line_ends: bool = True
) -> tuple[str, list[tuple[int, str]], State]:
    """Code text of a line (strings emptied, comments removed), its structural events, end state.

    Events are brackets in code, and the closing quote of a string that was already open
    when the line began (index, quote): both can close something opened before the cursor.
    With `line_ends` False the text stops at the cursor, so a string open there stays open.
    """
    code: list[str] = []
    events: list[tuple[int, str]] = []
    i = start = 0
    inherited = isinstance(state, str)
    special = lang.special
    while True:
        if isinstance(state, tuple):
            end = line.find(state[0], i)
            if end < 0:
                return "".join(code), events, state
            i = start = end + len(state[0])
            state = None
        elif state is not None:
            m = _string_end(state).match(line, i)
            if m is None:
                # Only triple-quoted and template strings go on past the end of a line.
                keeps = len(state) == 3 or state == "`" or not line_ends
                return "".join(code), events, state if keeps else None
            if inherited:
                events.append((m.end() - len(state), state[0]))
            inherited = False
            code.append(state[0] * 2)
            i = start = m.end()
            state = None
        m = special.search(line, i)
        if m is None:
            break
        token = m.group()
        i = m.start()
        if token in _BRACKETS:
            events.append((i, token))
            i += 1
        elif lang.block_comment is not None and token == lang.block_comment[0]:
            code.append(line[start:i])
            state = (lang.block_comment[1],)
            i += len(token)
        elif token in lang.line_comments:
            code.append(line[start:i])
            return "".join(code), events, None
        elif token == "'" and lang.char_literals:
            literal = _CHAR_LITERAL.match(line, i)
            at_cursor = not line_ends and len(line) - i <= 3 and "'" not in line[i + 1 :]
            if literal is None and at_cursor:
                code.append(line[start:i])
                state = "'"  # the cursor is inside a character literal
                i += 1
            elif literal is None:
                i += 1
            else:
                code.append(line[start:i] + "' '")
                i = start = literal.end()
        else:
            code.append(line[start:i])
            triple = lang.triple_quotes and line.startswith(token * 3, i)
            state = token * 3 if triple else token
            i += len(state)
    code.append(line[start:])
    return "".join(code), events, state


def state_before(prefix: str, lang: Syntax) -> State:
    """Whether the line the cursor is on begins inside a docstring or a block comment."""
    if lang.triple_quotes:
        # A top-level `def`/`class` line is code, so counting quotes can start there.
        start = max(prefix.rfind("\ndef "), prefix.rfind("\nclass "), 0)
        for quote in ('"""', "'''"):
            if prefix.count(quote, start) % 2:
                return quote
    if lang.block_comment is not None:
        open_mark, close_mark = lang.block_comment
        at = prefix.rfind(open_mark)
        if at >= 0 and prefix.find(close_mark, at + len(open_mark)) < 0:
            line_start = prefix.rfind("\n", 0, at) + 1
            line_end = prefix.find("\n", at)
            line = prefix[line_start : len(prefix) if line_end < 0 else line_end]
            if isinstance(lex(line, lang, None)[2], tuple):
                return (close_mark,)
    return None


def outer_close(events: list[tuple[int, str]], stack: list[str]) -> int:
    """Index of the first event closing something opened before the text, or -1.

    Updates `stack` with the brackets the text opened and left open; a closer that matches
    nothing the text opened is not counted again.
    """
    first = -1
    for index, char in events:
        if char in OPEN_TO_CLOSE:
            stack.append(char)
        elif char in CLOSE_TO_OPEN and stack and stack[-1] == CLOSE_TO_OPEN[char]:
            stack.pop()
        elif first < 0 and not stack:
            first = index
    return first
