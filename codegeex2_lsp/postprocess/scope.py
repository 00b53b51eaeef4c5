"""Scope: how much of the completion belongs to the place the cursor is in.

With code after the cursor on its line, one line (`single_line`); in an empty pair, a
body; at the end of a line, the statement or the block (`Scanner`), walked line by line so
that a rule fires only on whole lines and `is_settled` can stop decoding early.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from codegeex2_lsp.postprocess.lexer import CLOSE_TO_OPEN, OPEN_TO_CLOSE, lex, outer_close
from codegeex2_lsp.postprocess.repetition import (
    ends_in_loop,
    is_trivial,
    last_written,
    repeats,
    similar,
    squash,
)
from codegeex2_lsp.postprocess.surroundings import PostContext, offers_nothing
from codegeex2_lsp.postprocess.syntax import Syntax
from codegeex2_lsp.postprocess.whitespace import indent_width, leading, normalise


def first_close_in(text: str, ctx: PostContext) -> int:
    """Where text after the cursor first closes a bracket or string opened before it, or -1."""
    return outer_close(lex(text, ctx.lang, ctx.start_state)[1], [])


def single_line(first: str, ctx: PostContext) -> tuple[str, bool]:
    """The part of the first line to insert before the text already after the cursor.

    The line ends where the completion closes a bracket or string opened before the cursor
    (the editor already shows that closer, usually auto-inserted). Text after the cursor up
    to its own first such closer (`, 0` in `, 0);`) is dropped from the end when repeated.
    Brackets the completion opened itself are never cut in half: without an outer closer,
    only the suffix's text before its first closer can be repeated.
    """
    at = first_close_in(first, ctx)
    settled = at >= 0
    line = first[:at] if settled else first
    suffix_at = first_close_in(ctx.line_suffix, ctx)
    head = ctx.line_suffix[:suffix_at] if suffix_at >= 0 else ctx.line_suffix
    squashed = squash(head)
    body = line.rstrip()
    if squashed and squash(body).endswith(squashed):
        k = len(body)
        need = len(squashed)
        while need and k:
            k -= 1
            if not body[k].isspace():
                need -= 1
        line = body[:k]
    elif _is_word(ctx.line_prefix[-1:]) and _is_word(ctx.line_suffix[:1]):
        # Inside a word, text that does not end by rejoining the rest of it garbles it.
        return "", settled
    if ctx.line_suffix[:1].isspace() or not ctx.line_suffix.strip():
        line = line.rstrip()
    return line, settled


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


@dataclass
class _Scan:
    """How many lines of the completion to keep, and whether that number is final."""

    keep: int
    settled: bool


def _is_closing_line(stripped: str, lang: Syntax) -> str:
    """The closing token a line starts with ('}' or 'end'…), or ''."""
    if stripped[:1] in CLOSE_TO_OPEN:
        return stripped[0]
    if lang.closing_line is not None:
        m = lang.closing_line.match(stripped)
        if m:
            return m.group(0)
    return ""


class Scanner:
    """Walks the completion line by line and finds the first line it should stop at.

    Multi-line mode only. Only the first `complete` lines are known to be whole; a rule
    fires only on them, so the result never depends on text still being generated. With
    `final`, the last line is whole too (generation ended).
    """

    def __init__(self, lines: list[str], ctx: PostContext, one_statement: bool = True) -> None:
        self.lines = lines
        self.one_statement = one_statement
        self.ctx = ctx
        self.lang = ctx.lang
        self.base: int | None = indent_width(ctx.line_prefix, ctx.tab) if ctx.line_prefix else None
        self.next_line = ctx.next_lines[0] if ctx.next_lines else None
        self.next_indent = (
            indent_width(self.next_line, ctx.tab) if self.next_line is not None else 0
        )
        self.next_squashed = squash(self.next_line or "")
        self.stack: list[str] = []  # brackets the completion opened and has not closed
        self.end_depth = 0  # the same for block keywords (do … end)
        self.opened = False  # the completion is inside a block it opened
        self.closed = False  # … and has closed it again: a construct is complete
        self.deeper = False  # some line went deeper than the cursor's block
        self.content = False
        self.blank_run = 0
        self.state = ctx.start_state
        self.full = [ctx.line_prefix + lines[0], *lines[1:]]
        self.history = [*ctx.previous, *(line.rstrip() for line in self.full)]
        self.floor = len(ctx.previous)

    def scan(self, complete: int, final: bool) -> _Scan:
        limit = len(self.lines) if final else complete
        for j in range(limit):
            keep = self.step(j, complete=j < complete)
            if keep is not None:
                return _Scan(keep, True)
        if not final and complete < len(self.lines) and self.dedents(complete):
            return _Scan(complete, True)
        return _Scan(limit, False)

    def dedents(self, j: int) -> bool:
        """Whether line j, still being written, already ends the completion before it.

        Its first visible character fixes its indentation; a line left of the cursor's block
        that cannot be a closing line ends the completion whatever follows on it, so decoding
        can stop there instead of finishing a line that is thrown away.
        """
        line = self.full[j]
        stripped = line.strip()
        if j == 0 or not stripped or self.base is None or self.state is not None:
            return False
        if self.stack or self.end_depth or self.lang.closing_line is not None:
            return False
        return stripped[0] not in CLOSE_TO_OPEN and indent_width(line, self.ctx.tab) < self.base

    def step(self, j: int, complete: bool) -> int | None:
        """Account for line j; the number of lines to keep when the completion ends here."""
        line = self.full[j]
        stripped = line.strip()
        if not stripped:
            if self.content:
                self.blank_run += 1
                if self.blank_run >= 2:
                    return j - 1
            return None
        indent = indent_width(line, self.ctx.tab)
        if self.base is None:
            self.base = indent
        in_string = self.state is not None
        code, events, state = lex(line if j else self.lines[0], self.lang, self.state)
        starts_line = j > 0 or not self.ctx.line_prefix.strip()
        closing = ""
        if starts_line and not in_string and not self.stack and not self.end_depth:
            closing = _is_closing_line(stripped, self.lang)
            if closing in ")]" and self.lang.kind == "end":
                closing = ""
        stack = list(self.stack)
        outer = outer_close(events, stack)
        end_depth = self.end_depth
        if self.lang.opener is not None and self.lang.closer is not None:
            end_depth += len(self.lang.opener.findall(code)) - len(self.lang.closer.findall(code))
            end_depth = max(end_depth, 0)
        reopens = bool(closing) and (bool(stack) or end_depth > 0)
        if starts_line and not in_string:
            verdict = self.verdict(j, stripped, indent, closing, reopens)
            if verdict == "before":
                return j
            if verdict == "after":
                return j + 1
        if j == 0 and self.rewrites_line_above():
            return 0
        repeat = repeats(self.history, self.floor + j, self.floor)
        if repeat >= 0:
            return repeat - self.floor
        if ends_in_loop(line, complete):
            return j
        self.state = state
        if reopens:
            # `} else {`: the block it opens continues the one it closed, which was opened
            # before the cursor, so its closer is again one the document may already have.
            stack, end_depth = [], 0
        self.stack, self.end_depth = stack, end_depth
        depth = len(stack) + end_depth
        if j > 0 and indent > self.base:
            self.deeper = True
        if depth > 0:
            self.opened = True
        elif (self.opened or outer >= 0) and j > 0 and indent <= self.base:
            self.closed = True
            self.opened = False
        self.content = True
        self.blank_run = 0
        if (
            j == 0
            and self.one_statement
            and not starts_line
            and self.lines[0].strip()
            and self.finishes_line(code, events)
        ):
            return 1
        if self.lang.kind == "sql" and depth == 0 and code.rstrip().endswith(";"):
            return j + 1
        return None

    def rewrites_line_above(self) -> bool:
        """Whether the completion's first line only makes the cursor's line a copy of the
        line above, the way a base model starts looping."""
        line = self.history[self.floor]
        if not self.lines[0].strip() or is_trivial(line):
            return False
        return squash(line) == squash(last_written(self.ctx.previous))

    def finishes_line(self, code: str, events: list[tuple[int, str]]) -> bool:
        """Whether the completion's first line ends the statement the cursor was typing.

        Completing a line is a request for that line: further statements are a guess the
        user did not ask for. A line that opens a block, leaves a bracket open or ends in an
        operator goes on.
        """
        if self.stack or self.end_depth or self.state is not None or self.ctx.in_comment:
            return False
        if self.full[0].lstrip().startswith(("@", "#[")):
            return False  # a decorator or attribute belongs to the definition below it
        outer = 0
        own = 0
        for _, char in events:
            if char in OPEN_TO_CLOSE:
                own += 1
            elif own:
                own -= 1
            elif char in CLOSE_TO_OPEN:
                outer += 1
        if outer < self.ctx.cursor_brackets:
            return False
        lang = self.lang
        if lang.opener is not None and lang.closer is not None:
            line = self.ctx.line_code + code
            if len(lang.opener.findall(line)) > len(lang.closer.findall(line)):
                return False
        last = code.rstrip()[-1:]
        return not last or last not in ",+-*/%\\&|=<>([{:.?"

    def closer_is_theirs(self, closing: str) -> bool:
        """Whether the document's next line already closes the block a closing line closes."""
        if self.next_line is None or not self.next_line.strip().startswith(closing):
            return False
        # When the cursor's own line opened the block, a closer further out belongs to an
        # enclosing block; the indentation tells which.
        return not self.ctx.cursor_opens or self.next_indent == self.base

    def verdict(self, j: int, stripped: str, indent: int, closing: str, reopens: bool) -> str:
        """Whether a new line ends the completion: 'before' it, 'after' it, or '' (go on)."""
        base = self.base if self.base is not None else indent
        if closing:
            if self.closer_is_theirs(closing):
                return "" if reopens else "before"
            if self.next_line is not None and self.next_indent > indent:
                return "before"
            if reopens:
                return ""
            return "after" if self.content else "before"
        next_line = self.next_line
        if (
            next_line is not None
            and (indent == self.next_indent or not (self.stack or self.end_depth))
            and similar(squash(stripped), self.next_squashed)
        ):
            return "before"
        if indent < base and not self.stack:
            return "before"
        if indent > base or j == 0:
            return ""
        lang = self.lang
        if lang.continuation is not None and lang.continuation.match(stripped):
            return ""
        finished = self.closed or (
            self.deeper and lang.kind in ("indent", "generic") and not self.stack
        )
        if finished and (base == 0 or self.blank_run):
            return "before"
        if base == 0 and self.blank_run and self.content:
            # At the top level a blank line ends a group (imports, a statement run).
            return "before"
        defines = lang.definition is not None and lang.definition.match(stripped)
        if defines and self.content and (finished or self.blank_run):
            return "before"
        return ""


_AUTO_CLOSED = re.compile(r"^[\)\]\}]+[;,]?$")


def pair_closer(ctx: PostContext) -> str:
    """The closer after the cursor when it sits inside an empty pair, `{█}`, or ''.

    There the model usually breaks the line and writes the body; the closer the editor
    inserted then belongs on its own line after it, so multi-line text is allowed.
    """
    before = ctx.line_prefix.rstrip()
    after = ctx.line_suffix.strip()
    opener = before[-1:]
    if opener in OPEN_TO_CLOSE and _AUTO_CLOSED.match(after) and after[0] == OPEN_TO_CLOSE[opener]:
        return after
    return ""


def truncate(completion: str, ctx: PostContext, final: bool) -> tuple[str, bool, str | None]:
    """The kept text (before whitespace and style clean-up), whether it is settled, and the
    indentation of a last line to add so a closer after the cursor lands on a line of its own.
    """
    if offers_nothing(ctx):
        return "", True, None
    text = normalise(completion, ctx.line_prefix)
    has_tail = bool(ctx.line_suffix.strip())
    multiline = ctx.multiline
    newline = text.find("\n")
    first = text if newline < 0 else text[:newline]
    closer = pair_closer(ctx) if multiline != "never" and has_tail else ""
    if closer and newline == 0:
        inner = replace(
            ctx,
            line_suffix="",
            next_lines=(leading(ctx.line_prefix) + closer, *ctx.next_lines),
            cursor_opens=True,
        )
        lines = text.split("\n")
        scan = Scanner(lines, inner).scan(len(lines) - 1, final)
        return "\n".join(lines[: scan.keep]), scan.settled, leading(ctx.line_prefix)
    if multiline == "never" or (has_tail and multiline == "auto"):
        line, settled = single_line(first, ctx)
        return line, settled or newline >= 0, None
    if has_tail:
        at = first_close_in(first, ctx)
        if at >= 0:
            return single_line(first, ctx)[0], True, None
    lines = text.split("\n")
    scan = Scanner(lines, ctx, one_statement=multiline == "auto").scan(len(lines) - 1, final)
    return "\n".join(lines[: scan.keep]), scan.settled, None
