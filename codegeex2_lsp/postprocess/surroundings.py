"""The per-request context: everything the rules read from the document, derived once.

A request's prefix, suffix, language and options never change while the model writes, yet
the decode loop asks `is_settled` after many tokens; so the scan of the text around the
cursor (the cursor line lexed from the state the document leaves it in, the next lines, the
indentation style) is done here once and the result is shared by every check and by the
final `postprocess` of every candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

from codegeex2_lsp.lsp.text import lf_breaks
from codegeex2_lsp.postprocess.lexer import State, lex, outer_close, state_before
from codegeex2_lsp.postprocess.syntax import Syntax, syntax_for
from codegeex2_lsp.postprocess.whitespace import space_unit
from codegeex2_lsp.postprocess.windows import (
    RULES_PREFIX_CHARS,
    RULES_PREVIOUS_LINES,
    RULES_SUFFIX_CHARS,
    RULES_SUFFIX_LINES,
)
from codegeex2_lsp.settings.fields import Multiline


@dataclass(frozen=True)
class PostContext:
    """Everything the rules derive from the document around the cursor, computed once.

    Build it with `make_context`; it holds only what the rules read, not the document.
    """

    lang: Syntax
    multiline: Multiline
    line_prefix: str
    line_suffix: str
    next_lines: tuple[str, ...]
    previous: tuple[str, ...]
    tab: int
    start_state: State
    cursor_opens: bool  # the cursor's line opened a bracket or block it has not closed
    cursor_brackets: int  # how many brackets that line left open
    in_comment: bool  # the cursor is in a comment
    line_code: str  # the code text of the cursor's line before the cursor
    spaces: bool | None  # indent with spaces (True), tabs (False), or as written (None)
    indent_unit: int | None  # columns per level; None: from the completion's own indents
    eol: str  # the document's line end


def make_context(
    prefix: str,
    suffix: str,
    language_id: str,
    multiline: Multiline = "auto",
    *,
    insert_spaces: bool | None = None,
    tab_size: int | None = None,
) -> PostContext:
    """The context of one request: the document before/after the cursor, its canonical
    language id (`languages.canonical_language_id`; unknown ids get generic rules), the
    multi-line mode, and the client's formatting options when it sent them.
    """
    lang = syntax_for(language_id)
    head = lf_breaks(prefix[-RULES_PREFIX_CHARS:])
    cut = head.rfind("\n")
    line_prefix = head[cut + 1 :]
    tail = lf_breaks(suffix[:RULES_SUFFIX_CHARS]).split("\n")
    next_lines: list[str] = []
    for line in tail[1:]:
        if line.strip():
            next_lines.append(line.rstrip())
            if len(next_lines) == RULES_SUFFIX_LINES:
                break
    before = prefix[: len(prefix) - len(line_prefix)]
    start = state_before(before, lang) if before else None
    code, events, state = lex(line_prefix, lang, start, line_ends=False)
    opened: list[str] = []
    outer_close(events, opened)
    if lang.opener is not None and lang.closer is not None:
        opens = len(lang.opener.findall(code)) > len(lang.closer.findall(code))
    else:
        opens = False
    above = RULES_PREVIOUS_LINES
    previous = head[:cut].rsplit("\n", above)[-above:] if cut >= 0 else []
    spaces = insert_spaces
    if spaces is None:
        tabs, spaced = head.count("\n\t"), head.count("\n ")
        spaces = None if tabs == spaced else spaced > tabs
    unit = tab_size or None
    if unit is None and spaces:
        unit = space_unit(head.split("\n")) or 4
    crlf = "\r\n" in prefix[-RULES_PREFIX_CHARS:] or "\r\n" in suffix[:RULES_SUFFIX_CHARS]
    return PostContext(
        lang=lang,
        multiline=multiline,
        line_prefix=line_prefix,
        line_suffix=tail[0],
        next_lines=tuple(next_lines),
        previous=tuple(line.rstrip() for line in previous),
        tab=tab_size or 4,
        start_state=state,
        cursor_opens=bool(opened) or opens,
        cursor_brackets=len(opened),
        in_comment=_in_comment(line_prefix, lang, start, state),
        line_code=code,
        spaces=spaces,
        indent_unit=unit,
        eol="\r\n" if crlf else "\n",
    )


def _in_comment(line_prefix: str, lang: Syntax, start: State, state: State) -> bool:
    """Whether the cursor is in a comment or docstring: text that leads into the code below."""
    if isinstance(state, str):
        return len(state) == 3
    return state is not None or "\0" not in lex(line_prefix + "\0", lang, start)[0]


def offers_nothing(ctx: PostContext) -> bool:
    """Whether the cursor is in the indentation before code on its line.

    Nothing sensible can be inserted there, whatever the model writes, so a request can be
    answered empty before any model work.
    """
    return bool(ctx.line_suffix.strip()) and not ctx.line_prefix.strip()
