"""Whitespace: what the cursor's line already has, and the document's indentation style.

Pure functions on text; the style itself (spaces or tabs, the unit) is decided once per
request in `context.make_context`.
"""

from __future__ import annotations

from functools import reduce
from itertools import pairwise
from math import gcd


def indent_width(line: str, tab: int) -> int:
    """Visual width of a line's leading whitespace."""
    width = 0
    for c in line:
        if c == " ":
            width += 1
        elif c == "\t":
            width += tab - width % tab
        else:
            break
    return width


def leading(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def normalise(completion: str, line_prefix: str) -> str:
    """Drop leading newline noise and the indentation the cursor line already has."""
    text = completion.replace("\r", "")
    if line_prefix.strip():
        if text.startswith("\n"):
            body = text.lstrip(" \t\n")
            rest = text[: len(text) - len(body)]
            return "\n" + rest[rest.rfind("\n") + 1 :] + body
        return text
    dropped = False
    while "\n" in text and not text[: text.index("\n")].strip():
        text = text[text.index("\n") + 1 :]
        dropped = True
    if line_prefix:
        first = leading(text)
        if dropped and first.startswith(line_prefix):
            return text[len(line_prefix) :]
        return text[len(first) :]
    return text


def reindent(
    lines: list[str], spaces: bool | None, unit: int | None, first_is_line_start: bool
) -> list[str]:
    """Re-indent the lines whose leading whitespace is not in the document's style.

    `spaces` is the style (None: leave the lines as written), `unit` the columns per level
    (None: the completion's own smallest indent). Mixed styles are left alone.
    """
    start = 0 if first_is_line_start else 1
    leads = [leading(line) for line in lines[start:]]
    tabbed = any("\t" in lead for lead in leads)
    spaced = any(" " in lead for lead in leads)
    if spaces is None or (spaces and not tabbed) or (not spaces and not spaced):
        return lines
    if unit is None:
        widths = [len(lead) for lead in leads if lead and "\t" not in lead]
        unit = min(max(reduce(gcd, widths, 0), 2), 8) if widths else 4
    out = lines[:start]
    for line, lead in zip(lines[start:], leads, strict=True):
        if spaces:
            new = lead.replace("\t", " " * unit)
        else:
            width = indent_width(lead, unit)
            new = "\t" * (width // unit) + " " * (width % unit)
        out.append(new + line[len(lead) :])
    return out


def space_unit(doc: list[str]) -> int:
    """The document's indentation step in spaces (the smallest indentation change seen)."""
    widths = [len(leading(line)) for line in doc if line.strip() and not line.startswith("\t")]
    steps = {abs(a - b) for a, b in pairwise(widths) if a != b}
    return min(steps) if steps else 0
