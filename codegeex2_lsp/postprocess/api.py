"""The entry points: the final text of a completion, and whether it is settled yet."""

from __future__ import annotations

from codegeex2_lsp.postprocess.repetition import squash
from codegeex2_lsp.postprocess.scope import truncate
from codegeex2_lsp.postprocess.surroundings import PostContext
from codegeex2_lsp.postprocess.whitespace import reindent


def _only_repeats_suffix(lines: list[str], ctx: PostContext) -> bool:
    """True when the kept lines are just the next lines of the document again."""
    mine = [line.strip() for line in lines if line.strip()]
    if ctx.line_prefix.strip() and lines and lines[0].strip():
        return False
    theirs = [line.strip() for line in ctx.next_lines]
    if ctx.line_suffix.strip():
        theirs = [ctx.line_suffix.strip(), *theirs]
    return bool(mine) and mine == theirs[: len(mine)]


# Whole lines made of nothing but these are an empty comment.
_COMMENT_MARKS = "/#*-%"


def postprocess(completion: str, ctx: PostContext) -> str:
    """The text to insert at the cursor for the model's raw `completion` ("" for nothing)."""
    kept, _, tail = truncate(completion, ctx, final=True)
    lines = kept.split("\n")
    mid_line = len(lines) == 1 and bool(ctx.line_suffix.strip())
    if not mid_line:
        lines = [line.rstrip() for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or _only_repeats_suffix(lines, ctx):
        return ""
    visible = squash("".join(lines))
    if len(visible) < 2:
        return ""
    empty_comment = not visible.strip(_COMMENT_MARKS)
    if empty_comment and not ctx.line_prefix.strip() and ctx.start_state is None:
        return ""
    lines = reindent(lines, ctx.spaces, ctx.indent_unit, first_is_line_start=not ctx.line_prefix)
    if tail is not None:
        lines.append(tail)
    return ctx.eol.join(lines)


def is_settled(completion: str, ctx: PostContext) -> bool:
    """Whether more generated text could no longer change `postprocess`'s result.

    The decode loop asks after tokens that end a line or close a bracket, and stops when
    this is True: the rules fire only on whole lines (or, on a single line, on the bracket
    that closes the cursor's context), so the answer can only go from False to True.
    """
    return truncate(completion, ctx, final=False)[1]
