"""The snippet block as the model reads it: comments of the document's language, each snippet
led by its path.

CodeGeeX2 was trained on files that begin with a ``<comment> language: X`` tag line, so the
block continues in that form: ``<comment> path: pkg/module.py`` and then the snippet's lines,
each behind the same comment marker. Commented out, another file's code cannot be taken for
code of this file (which the model would then repeat or close braces against), and the path
line reads like the file headers the model saw after the tag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

from codegeex2_lsp.completion.prompt import printable
from codegeex2_lsp.lsp.text import lf_breaks

EncodeLine = Callable[[str], tuple[int, ...]]

_BLOCK_CLOSERS = ("-->", "*/", "}")


@dataclass(frozen=True)
class Snippet:
    """Text from another file for the prompt, with where it came from (for logs and ``prompt``)."""

    path: str
    text: str
    origin: str
    line: int


@dataclass(frozen=True)
class Block:
    """The rendered snippets: their text and its token ids (line by line, so cached)."""

    snippets: tuple[Snippet, ...] = ()
    text: str = ""
    ids: tuple[int, ...] = ()


EMPTY = Block()


def comment_prefix(tag_line: str | None) -> str | None:
    """The line comment of the tag's language (``#``, ``//``, ``--``), or None for languages
    whose tag is a block comment (HTML, CSS), which get no snippets: a snippet holding the
    closing marker would end the comment early."""
    if not tag_line:
        return None
    prefix, found, rest = tag_line.partition("language:")
    prefix = prefix.strip()
    if not found or not prefix or rest.rstrip().endswith(_BLOCK_CLOSERS):
        return None
    return prefix


def snippet_lines(snippet: Snippet, prefix: str) -> list[str]:
    """The snippet's comment lines, each ending in a newline.

    Lines end where LSP ends them (a lone ``\r`` too: left inside a comment line, it would
    start a line of code), and lone surrogates, which no tokenizer encodes, become U+FFFD, as
    in the file's own window.
    """
    lines = [f"{prefix} path: {printable(snippet.path)}\n"]
    for line in lf_breaks(printable(snippet.text)).split("\n"):
        line = line.rstrip()
        lines.append(f"{prefix} {line}\n" if line else f"{prefix}\n")
    return lines


def cost(snippet: Snippet, prefix: str, encode_line: EncodeLine) -> int:
    return sum(len(encode_line(line)) for line in snippet_lines(snippet, prefix))


def render(snippets: list[Snippet], prefix: str, encode_line: EncodeLine) -> Block:
    """The block for ``snippets``, in the order given (the most relevant last, next to the
    code)."""
    lines = list(chain.from_iterable(snippet_lines(snippet, prefix) for snippet in snippets))
    ids = tuple(chain.from_iterable(encode_line(line) for line in lines))
    return Block(tuple(snippets), "".join(lines), ids)
