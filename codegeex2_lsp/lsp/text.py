"""Document text as LSP sees it: lines end at ``\\n``, ``\\r\\n`` or ``\\r`` and nowhere else.

Python's ``str.splitlines`` also breaks at ``\\f``, ``\\v``, ``\\x1c``-``\\x1e``, ``\\x85``,
U+2028 and U+2029; a document store built on it puts every edit after such a character on the
wrong line. This store never splits lines itself except with the protocol's three breaks.

The text is kept as a list of chunks of at most a few thousand characters, with the number of
line breaks in each, so that an edit, a position lookup or a window around the cursor costs
time in proportion to a chunk and the number of chunks, never to the document's length: a
keystroke in a 10 MB file or on a 1 MB line copies one chunk. A ``\\r\\n`` pair is never split
between two chunks, so every chunk's breaks can be counted on its own.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import accumulate
from typing import Literal

PositionEncoding = Literal["utf-16", "utf-8", "utf-32"]

CHUNK = 8192
"""Characters per chunk at most (one more when a chunk would end between ``\\r`` and ``\\n``)."""

_BREAK = re.compile(r"\r\n|\r|\n")


def lf_breaks(text: str) -> str:
    """``text`` with each of LSP's line breaks as ``\\n``, for reading its lines by ``\\n``."""
    return _BREAK.sub("\n", text)


def _count_breaks(chunk: str) -> int:
    return chunk.count("\n") + chunk.count("\r") - chunk.count("\r\n")


def units(text: str, encoding: PositionEncoding) -> int:
    """Length of ``text`` in code units of ``encoding``; a lone surrogate counts as one character.

    Encoded in C rather than counted per character, since lines can be a megabyte long.
    """
    if encoding == "utf-32" or text.isascii():
        return len(text)
    if encoding == "utf-16":
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    return len(text.encode("utf-8", "surrogatepass"))


def _char_units(char: str, encoding: PositionEncoding) -> int:
    code = ord(char)
    if encoding == "utf-16":
        return 2 if code > 0xFFFF else 1
    if encoding == "utf-8":
        return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
    return 1


def chars_within(text: str, limit: int, encoding: PositionEncoding) -> int:
    """How many characters of ``text`` fit in ``limit`` code units.

    A limit that falls inside a character (half a surrogate pair, part of a UTF-8 sequence)
    stops before that character.
    """
    if encoding == "utf-32" or units(text, encoding) == len(text):
        return min(limit, len(text))
    used = 0
    for index, char in enumerate(text):
        used += _char_units(char, encoding)
        if used > limit:
            return index
    return len(text)


class LspText:
    """Mutable text with LSP line breaks, positions in any of the protocol's encodings."""

    def __init__(self, text: str = "") -> None:
        self._chunks: list[str] = []
        self._breaks: list[int] = []
        self._length = 0
        self._index: tuple[list[int], list[int]] | None = None
        # A keystroke asks for the same position several times (the edit's range, the prompt,
        # the word before the cursor): the last answer is kept until the next edit.
        self._last_offset: tuple[tuple[int, int, str], int] | None = None
        self.replace(0, 0, text)

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return "".join(self._chunks)

    @property
    def line_count(self) -> int:
        """Lines as LSP counts them: a document ending in a break has an empty last line."""
        return self._indexed()[1][-1] + 1

    def sha256(self) -> str:
        """Hash of the text as UTF-8 (lone surrogates passed through), to compare with a copy."""
        digest = hashlib.sha256()
        for chunk in self._chunks:
            digest.update(chunk.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    # -- reading ------------------------------------------------------------------------------

    def _indexed(self) -> tuple[list[int], list[int]]:
        """Offset and line breaks before each chunk (and in all, last), rebuilt after an edit.

        Rebuilding costs two passes in C over the chunk lengths; every lookup is a bisection.
        """
        if self._index is None:
            self._index = (
                list(accumulate(map(len, self._chunks), initial=0)),
                list(accumulate(self._breaks, initial=0)),
            )
        return self._index

    def _locate(self, offset: int) -> tuple[int, int]:
        """(index, start offset) of the chunk holding ``offset``; the end is in the last chunk."""
        starts = self._indexed()[0]
        index = min(bisect_right(starts, offset), len(self._chunks)) - 1
        return index, starts[index]

    def slice(self, start: int, end: int) -> str:
        """``str(self)[start:end]``, touching only the chunks in between."""
        start, end = max(0, start), min(self._length, end)
        if start >= end:
            return ""
        index, base = self._locate(start)
        pieces = []
        while base < end:
            chunk = self._chunks[index]
            pieces.append(chunk[max(0, start - base) : end - base])
            base += len(chunk)
            index += 1
        return "".join(pieces)

    def chunks_from(self, offset: int) -> Iterator[str]:
        """The text from ``offset`` to the end, a chunk at a time."""
        if offset >= self._length:
            return
        index, base = self._locate(offset)
        yield self._chunks[index][offset - base :]
        for i in range(index + 1, len(self._chunks)):
            yield self._chunks[i]

    def line_start(self, line: int) -> int:
        """Offset where ``line`` starts; a line past the last one starts at the end."""
        if line <= 0:
            return 0
        starts, lines = self._indexed()
        if line > lines[-1]:
            return self._length
        index = bisect_left(lines, line) - 1
        left = line - lines[index]
        for found in _BREAK.finditer(self._chunks[index]):
            left -= 1
            if left == 0:
                return starts[index] + found.end()
        raise AssertionError("line breaks miscounted")

    def line_end(self, offset: int) -> int:
        """Offset of the first line break at or after ``offset`` (the end when there is none)."""
        base = offset
        for chunk in self.chunks_from(offset):
            found = _first_break(chunk)
            if found >= 0:
                return base + found
            base += len(chunk)
        return self._length

    def line_of(self, offset: int) -> int:
        """The line that ``offset`` is on."""
        offset = max(0, min(offset, self._length))
        if offset == 0 or not self._chunks:
            return 0
        index, base = self._locate(offset)
        chunk = self._chunks[index][: offset - base]
        return (
            self._indexed()[1][index]
            + _count_breaks(chunk)
            - _split_pair(self._chunks[index], offset - base)
        )

    def offset(self, line: int, character: int, encoding: PositionEncoding) -> int:
        """Offset of an LSP position.

        Stale positions are clamped, as clients send them while the document changes under
        them: a character past its line's end means the line's end, a line past the last
        means the document's end. A character inside a multi-unit character means its start.
        Negative values break the protocol and raise ``ValueError``.
        """
        if line < 0 or character < 0:
            raise ValueError(f"negative position: line {line}, character {character}")
        key = (line, character, encoding)
        if self._last_offset is not None and self._last_offset[0] == key:
            return self._last_offset[1]
        offset = self._offset(line, character, encoding)
        self._last_offset = (key, offset)
        return offset

    def holds(self, line: int, character: int, encoding: PositionEncoding) -> bool:
        """Whether the position is in the text as it is: no clamping, as :meth:`offset` does
        for a client's stale positions, for a position the user typed."""
        if line < 0 or character < 0 or line >= self.line_count:
            return False
        start = self.line_start(line)
        return character <= units(self.slice(start, self.line_end(start)), encoding)

    def _offset(self, line: int, character: int, encoding: PositionEncoding) -> int:
        if line >= self.line_count:
            return self._length
        start = self.line_start(line)
        if encoding == "utf-32":
            return min(start + character, self.line_end(start))
        offset = start
        left = character
        for chunk in self.chunks_from(start):
            found = _first_break(chunk)
            piece = chunk if found < 0 else chunk[:found]
            size = units(piece, encoding)
            if size > left:
                return offset + chars_within(piece, left, encoding)
            offset += len(piece)
            left -= size
            if found >= 0:
                break
        return offset

    # -- editing ------------------------------------------------------------------------------

    def replace(self, start: int, end: int, text: str) -> None:
        """Replace the characters from ``start`` to ``end`` (clamped, either order) by ``text``."""
        start, end = sorted((max(0, min(start, self._length)), max(0, min(end, self._length))))
        if not self._chunks:
            first, last, head, tail = 0, -1, "", ""
        else:
            first, first_base = self._locate(start)
            last, last_base = self._locate(end)
            head = self._chunks[first][: start - first_base]
            tail = self._chunks[last][end - last_base :]
        pieces = _split(head + text + tail)
        self._chunks[first : last + 1] = pieces
        self._breaks[first : last + 1] = [_count_breaks(p) for p in pieces]
        self._length += len(text) - (end - start)
        self._index = None
        self._last_offset = None
        low = max(0, first - 1)
        high = min(len(self._chunks), first + len(pieces) + 1)
        self._repair(low, high)

    def _repair(self, low: int, high: int) -> None:
        """Keep ``\\r\\n`` pairs in one chunk and small neighbours merged, in ``[low, high)``."""
        i = low
        while i < min(high, len(self._chunks)) - 1:
            left, right = self._chunks[i], self._chunks[i + 1]
            if len(left) + len(right) <= CHUNK:
                self._chunks[i : i + 2] = [left + right]
                self._breaks[i : i + 2] = [_count_breaks(left + right)]
                high -= 1
                continue
            if left.endswith("\r") and right.startswith("\n"):
                left, right = left + "\n", right[1:]
                self._chunks[i], self._breaks[i] = left, _count_breaks(left)
                if right:
                    self._chunks[i + 1], self._breaks[i + 1] = right, _count_breaks(right)
                else:
                    del self._chunks[i + 1], self._breaks[i + 1]
                    high -= 1
                    continue
            i += 1


def _first_break(text: str) -> int:
    """Index of the first ``\\r`` or ``\\n`` in ``text``, or -1; two memchr scans, no regex."""
    cr, lf = text.find("\r"), text.find("\n")
    return lf if cr < 0 else cr if lf < 0 else min(cr, lf)


def _split_pair(chunk: str, at: int) -> int:
    """1 when ``at`` falls between the ``\\r`` and ``\\n`` of a pair (counted twice), else 0."""
    return int(0 < at < len(chunk) and chunk[at - 1] == "\r" and chunk[at] == "\n")


def _split(text: str) -> list[str]:
    """``text`` cut into chunks of about ``CHUNK`` characters, never inside a ``\\r\\n``."""
    pieces = []
    start = 0
    while start < len(text):
        end = min(start + CHUNK, len(text))
        if end < len(text) and text[end - 1] == "\r" and text[end] == "\n":
            end += 1
        pieces.append(text[start:end])
        start = end
    return pieces
