"""The document text against an independent model of LSP's rules, under random edits."""

from __future__ import annotations

import random

import pytest

from codegeex2_lsp.lsp import text as text_module
from codegeex2_lsp.lsp.documents import Document
from codegeex2_lsp.lsp.text import LspText, PositionEncoding

ENCODINGS: tuple[PositionEncoding, ...] = ("utf-16", "utf-8", "utf-32")


class Model:
    """A document as one string, with LSP positions computed character by character."""

    def __init__(self, text: str) -> None:
        self.text = text

    def line_starts(self) -> list[int]:
        starts = [0]
        text = self.text
        i = 0
        while i < len(text):
            if text[i] == "\r" and i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
            if text[i] in "\r\n":
                starts.append(i + 1)
            i += 1
        return starts

    @staticmethod
    def width(char: str, encoding: PositionEncoding) -> int:
        if encoding == "utf-32":
            return 1
        if encoding == "utf-16":
            return 2 if ord(char) > 0xFFFF else 1
        return len(char.encode("utf-8", "surrogatepass"))

    def offset(self, line: int, character: int, encoding: PositionEncoding) -> int:
        starts = self.line_starts()
        if line >= len(starts):
            return len(self.text)
        i = starts[line]
        used = 0
        while i < len(self.text) and self.text[i] not in "\r\n":
            used += self.width(self.text[i], encoding)
            if used > character:
                break
            i += 1
        return i

    def line_of(self, offset: int) -> int:
        return max(i for i, start in enumerate(self.line_starts()) if start <= offset)


PIECES = [
    "a", "b", "xyz", " ", "\t", "\n", "\r", "\r\n", "\f", "\v", "\x1c", "\x1d", "\x1e",
    "\x85", "\u2028", "\u2029", "😀", "中", "é", "\ud83d", "\ude00", "🎉🎉",
]  # fmt: skip


def random_text(rng: random.Random, pieces: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(pieces))


def random_position(rng: random.Random, model: Model) -> tuple[int, int]:
    lines = len(model.line_starts())
    line = rng.randrange(lines + 2)
    return line, rng.randrange(12)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("chunk", [3, 8, 8192])
def test_random_edits_match_the_model(
    encoding: PositionEncoding, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_module, "CHUNK", chunk)
    rng = random.Random(f"{encoding}-{chunk}")
    for _ in range(20):
        initial = random_text(rng, rng.randrange(30))
        model, text = Model(initial), LspText(initial)
        for _ in range(60):
            start = random_position(rng, model)
            end = random_position(rng, model) if rng.random() < 0.5 else start
            new = random_text(rng, rng.randrange(4))
            a, b = model.offset(*start, encoding), model.offset(*end, encoding)
            assert text.offset(*start, encoding) == a
            assert text.offset(*end, encoding) == b
            a, b = min(a, b), max(a, b)
            model.text = model.text[:a] + new + model.text[b:]
            text.replace(text.offset(*start, encoding), text.offset(*end, encoding), new)
            assert str(text) == model.text
            assert len(text) == len(model.text)
            assert text.line_count == len(model.line_starts())
            for offset in rng.sample(range(len(model.text) + 1), min(5, len(model.text) + 1)):
                assert text.line_of(offset) == model.line_of(offset)
                assert (
                    text.slice(offset - 3, offset + 4)
                    == model.text[max(0, offset - 3) : offset + 4]
                )


def test_form_feed_is_not_a_line_break() -> None:
    text = LspText("a\fb\nc\n")
    at = text.offset(1, 0, "utf-16")
    text.replace(at, at, "X")
    assert str(text) == "a\fb\nXc\n"


def test_crlf_typed_in_two_edits_is_one_break(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_module, "CHUNK", 2)
    text = LspText("ab\ncd")
    text.replace(2, 2, "\r")
    assert text.line_count == 2
    assert text.offset(1, 0, "utf-16") == 4
    text.replace(2, 3, "")
    text.replace(2, 2, "xy\r")
    text.replace(5, 5, "")
    assert str(text) == "abxy\r\ncd"
    assert text.line_count == 2
    assert text.offset(1, 1, "utf-16") == 7


@pytest.mark.parametrize(
    ("source", "line", "character", "offset"),
    [
        ("", 0, 0, 0),
        ("", 3, 7, 0),
        ("abc\ndef", 0, 0, 0),
        ("abc\ndef", 1, 2, 6),
        ("abc\ndef", 0, 99, 3),
        ("abc\ndef", 1, 99, 7),
        ("abc\ndef\n", 2, 0, 8),
        ("abc\ndef", 9, 0, 7),
        # CRLF: a character past the line's end stops before the "\r".
        ("ab\r\ncd", 0, 5, 2),
        ("ab\r\ncd", 1, 1, 5),
        # A lone CR ends a line too; nothing else does.
        ("a\rb\rc", 2, 0, 4),
        ("a\rb\nc\r\nd", 3, 1, 8),
        ("a\r\n\r\nb", 2, 0, 5),
        ("a\u2028b\x85c\nd", 1, 0, 6),
    ],
)
def test_offsets_of_positions(source: str, line: int, character: int, offset: int) -> None:
    assert LspText(source).offset(line, character, "utf-16") == offset


@pytest.mark.parametrize(
    ("encoding", "character", "before"),
    [
        ("utf-16", 1, "a"),
        ("utf-16", 2, "a"),  # inside the surrogate pair
        ("utf-16", 3, "a😀"),
        ("utf-16", 4, "a😀中"),
        ("utf-16", 5, "a😀中b"),
        ("utf-8", 1, "a"),
        ("utf-8", 4, "a"),  # inside the emoji's four bytes
        ("utf-8", 5, "a😀"),
        ("utf-8", 7, "a😀"),  # inside the CJK character's three bytes
        ("utf-8", 8, "a😀中"),
        ("utf-32", 2, "a😀"),
        ("utf-32", 3, "a😀中"),
        ("utf-32", 9, "a😀中b"),
    ],
)
def test_characters_count_code_units(encoding: PositionEncoding, character: int, before: str):
    text = LspText("x\na😀中b\ny")
    assert text.offset(1, character, encoding) == 2 + len(before)


def test_negative_positions_are_rejected() -> None:
    with pytest.raises(ValueError):
        LspText("abc").offset(-1, 0, "utf-16")
    with pytest.raises(ValueError):
        LspText("abc").offset(0, -1, "utf-16")


@pytest.mark.parametrize(
    ("source", "character", "word", "units"),
    [
        ("x = foo_bar", 11, "foo_bar", 7),
        ("x = foo_bar", 7, "foo", 3),
        ("a\fbc", 4, "bc", 2),  # a form feed is inside the line, not a line start
        ("ab\u2028cd", 5, "cd", 2),
        ("x = é$ü", 7, "é$ü", 3),
        ("first\nsecond", 0, "", 0),
    ],
)
def test_word_before(source: str, character: int, word: str, units: int) -> None:
    document = Document("file:///a", None, 1, LspText(source))
    line = source.count("\n")
    at = document.text.offset(line, character if line == 0 else 0, "utf-16")
    assert document.word_before(at, "utf-16") == (word, units)


def test_a_long_line_and_a_big_document_stay_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    line = "x" * 100_000
    text = LspText(("y = 1\n" * 50_000) + line)
    model = Model(str(text))
    at = text.offset(50_000, 99_999, "utf-16")
    assert at == model.offset(50_000, 99_999, "utf-16")
    text.replace(at, at, "😀\r")
    model.text = model.text[:at] + "😀\r" + model.text[at:]
    assert str(text) == model.text
    assert text.offset(50_001, 1, "utf-16") == model.offset(50_001, 1, "utf-16")
    assert text.line_of(len(model.text)) == 50_001


def test_holds_tells_a_position_in_the_text_from_one_outside_it() -> None:
    text = LspText("ab\r\nc\rdé\n")
    inside = [(0, 0), (0, 2), (1, 1), (2, 2), (3, 0)]
    outside = [(0, 3), (1, 2), (2, 3), (4, 0), (-1, 0), (0, -1)]
    assert all(text.holds(line, character, "utf-16") for line, character in inside)
    assert not any(text.holds(line, character, "utf-16") for line, character in outside)
    assert text.holds(2, 3, "utf-8") and not text.holds(2, 4, "utf-8")
