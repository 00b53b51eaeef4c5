"""Prompt building: budgets, stable windows, cached line ids, and LSP positions."""

from __future__ import annotations

import random
import re
import zlib
from itertools import pairwise
from pathlib import Path

import pytest

from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.completion.pipeline import prepare
from codegeex2_lsp.completion.prompt import (
    LineTokenCache,
    Prompt,
    build_prompt,
    prompt_at,
)
from codegeex2_lsp.lsp.text import LspText
from codegeex2_lsp.postprocess.windows import (
    PROMPT_CHARS_PER_TOKEN,
    REQUEST_LINE_CHARS,
    REQUEST_PREFIX_CHARS,
    REQUEST_SUFFIX_CHARS,
)
from codegeex2_lsp.settings.fields import Settings

TAG = "# language: Python"


def char_encode(text: str) -> list[int]:
    """One id per character: token counts are character counts, easy to reason about."""
    return [ord(char) for char in text]


_WORD = re.compile(r"\w+|\s|[^\w\s]")


def word_encode(text: str) -> list[int]:
    """One id per word, space or symbol; like a real tokenizer, it never merges across a newline."""
    return [zlib.crc32(piece.encode()) % 50_000 for piece in _WORD.findall(text)]


class CountingEncoder:
    def __init__(self, encode=char_encode) -> None:
        self.calls: list[str] = []
        self._encode = encode

    def __call__(self, text: str) -> list[int]:
        self.calls.append(text)
        return self._encode(text)


def lines(count: int, width: int = 7) -> str:
    return "".join(f"{i:0{width - 1}d}\n" for i in range(count))


def check(prompt: Prompt, prefix: str, budget: int, encode=char_encode, tag: str | None = TAG):
    """The invariants every prompt keeps, whatever the budget."""
    assert list(prompt.ids) == encode(prompt.text)
    assert len(prompt.ids) <= max(budget, 0)
    kept = prompt.text
    if tag and kept.startswith(tag + "\n"):
        kept = kept[len(tag) + 1 :]
    assert prefix.endswith(kept)
    assert prompt.trimmed == (kept != prefix)


# --- LineTokenCache -------------------------------------------------------------------------


def test_cache_encodes_each_line_once() -> None:
    encode = CountingEncoder()
    cache = LineTokenCache(encode)
    assert cache.encode_line("x = 1\n") == tuple(char_encode("x = 1\n"))
    assert cache.encode_line("x = 1\n") == tuple(char_encode("x = 1\n"))
    assert encode.calls == ["x = 1\n"]


def test_cache_evicts_the_least_recently_used_line() -> None:
    encode = CountingEncoder()
    cache = LineTokenCache(encode, max_entries=2)
    cache.encode_line("a\n")
    cache.encode_line("b\n")
    cache.encode_line("a\n")
    cache.encode_line("c\n")
    assert len(cache) == 2
    cache.encode_line("a\n")
    cache.encode_line("b\n")
    assert encode.calls == ["a\n", "b\n", "c\n", "b\n"]


def test_cache_needs_room_for_one_line() -> None:
    with pytest.raises(ValueError):
        LineTokenCache(char_encode, max_entries=0)


# --- build_prompt: what is kept -------------------------------------------------------------


def build(prefix: str, budget: int, *, tag: str | None = TAG, step: int = 4, encode=char_encode):
    return build_prompt(
        prefix, tag_line=tag, cache=LineTokenCache(encode), budget=budget, step_lines=step
    )


def test_everything_fits() -> None:
    prefix = "def f(x):\n    return x"
    prompt = build(prefix, 1000)
    assert prompt == Prompt(
        text=TAG + "\n" + prefix,
        ids=tuple(char_encode(TAG + "\n" + prefix)),
        first_line=0,
        trimmed=False,
    )


def test_without_a_tag_the_prompt_is_the_prefix() -> None:
    prompt = build("x = 1\ny = ", 1000, tag=None)
    assert prompt.text == "x = 1\ny = "
    check(prompt, "x = 1\ny = ", 1000, tag=None)


@pytest.mark.parametrize("tag", [TAG, None])
def test_empty_document(tag: str | None) -> None:
    prompt = build("", 100, tag=tag)
    assert prompt.text == (f"{tag}\n" if tag else "")
    assert (prompt.first_line, prompt.trimmed) == (0, False)
    check(prompt, "", 100, tag=tag)


def test_cursor_at_the_start_of_a_line_keeps_the_line_before() -> None:
    prefix = "a = 1\nb = 2\n"
    prompt = build(prefix, len(TAG) + 1 + 6, step=1)
    assert prompt.text == TAG + "\nb = 2\n"
    assert (prompt.first_line, prompt.trimmed) == (1, True)


@pytest.mark.parametrize("budget", [0, -5])
def test_no_budget_gives_an_empty_prompt(budget: int) -> None:
    prompt = build("a\nb\n", budget)
    assert (prompt.text, prompt.ids, prompt.trimmed) == ("", (), True)
    assert build("", budget).trimmed is False


def test_a_tag_line_larger_than_the_budget_is_dropped() -> None:
    prefix = "x = 1\ny = 2"
    prompt = build(prefix, len(TAG), step=1)
    assert not prompt.text.startswith("#")
    check(prompt, prefix, len(TAG))
    assert prompt.text.endswith("y = 2")


def test_tag_and_nothing_else() -> None:
    prompt = build("abc", len(TAG) + 1)
    assert prompt.text == TAG + "\n"
    assert (prompt.first_line, prompt.trimmed) == (1, True)


def test_the_start_is_aligned_to_the_step() -> None:
    prefix = lines(40)
    tag_cost = len(TAG) + 1
    prompt = build(prefix, tag_cost + 7 * 10, step=4)
    # Ten lines would fit from line 30; the aligned start is line 32.
    assert (prompt.first_line, prompt.trimmed) == (32, True)
    assert prompt.text == TAG + "\n" + "".join(f"{i:06d}\n" for i in range(32, 40))
    check(prompt, prefix, tag_cost + 70)


def test_without_an_aligned_line_that_fits_the_first_fitting_line_is_kept() -> None:
    prefix = lines(6)
    prompt = build(prefix, len(TAG) + 1 + 7 * 3, step=16)
    assert prompt.first_line == 3
    check(prompt, prefix, len(TAG) + 1 + 21)


def test_a_line_longer_than_the_budget_keeps_its_tail() -> None:
    prefix = "short = 1\n" + "x = [" + ", ".join(str(i) for i in range(500))
    budget = len(TAG) + 1 + 100
    prompt = build(prefix, budget)
    check(prompt, prefix, budget)
    assert prompt.text.endswith("498, 499")
    assert (prompt.first_line, prompt.trimmed) == (1, True)
    # Most of the budget is used, not just a sliver of it.
    assert len(prompt.ids) > budget * 3 // 4


def test_a_long_line_before_the_cursor_keeps_its_tail() -> None:
    prefix = "y" * 1000 + "\n"
    prompt = build(prefix, 50, tag=None)
    assert prompt.text.endswith("y\n")
    assert prompt.first_line == 0
    check(prompt, prefix, 50, tag=None)


def test_the_tail_of_text_dense_in_tokens_fits_too() -> None:
    def byte_encode(text: str) -> list[int]:
        return list(text.encode())

    prefix = "注释" * 200
    prompt = build(prefix, 40, tag=None, encode=byte_encode)
    check(prompt, prefix, 40, encode=byte_encode, tag=None)
    assert 30 <= len(prompt.ids) <= 40


def test_crlf_lines_keep_their_carriage_returns() -> None:
    prefix = "a = 1\r\nb = 2\r\nc = "
    prompt = build(prefix, len(TAG) + 1 + 11, step=1)
    assert prompt.text == TAG + "\nb = 2\r\nc = "
    assert prompt.first_line == 1
    check(prompt, prefix, len(TAG) + 12)


def test_step_must_be_positive() -> None:
    with pytest.raises(ValueError):
        build("x", 10, step=0)


@pytest.mark.parametrize("encode", [char_encode, word_encode], ids=["chars", "words"])
@pytest.mark.parametrize("tag", [TAG, None], ids=["tag", "no-tag"])
def test_invariants_over_many_budgets(encode, tag: str | None) -> None:
    prefix = (
        "import os\r\n\n"
        + "".join(f"def f{i}(x):\n    return x * {i}  # 注释 😀\n" for i in range(30))
        + "long = '"
        + "abc " * 60
    )
    cache = LineTokenCache(encode)
    for budget in [*range(-1, 60), *range(60, 700, 7), 10_000]:
        for step in (1, 3, 16):
            prompt = build_prompt(prefix, tag_line=tag, cache=cache, budget=budget, step_lines=step)
            check(prompt, prefix, budget, encode=encode, tag=tag)


# --- build_prompt: stability while typing ---------------------------------------------------


def test_typing_moves_the_start_only_in_steps() -> None:
    step = 8
    budget = len(TAG) + 1 + 7 * 20
    cache = LineTokenCache(char_encode)
    document = lines(50)
    starts = []
    previous: Prompt | None = None
    for char in "value = compute(alpha, beta, gamma, delta) + adjust(epsilon)":
        document += char
        prompt = build_prompt(document, tag_line=TAG, cache=cache, budget=budget, step_lines=step)
        check(prompt, document, budget)
        assert prompt.first_line % step == 0
        if previous is not None and prompt.first_line == previous.first_line:
            # Only the line being typed changed: everything before it is a shared prefix.
            shared = len(previous.ids) - (len(document) - 1 - document.rfind("\n"))
            assert prompt.ids[:shared] == previous.ids[:shared]
        starts.append(prompt.first_line)
        previous = prompt
    assert starts == sorted(starts)
    moves = [b - a for a, b in pairwise(starts) if b != a]
    assert moves, "the budget should force at least one move"
    assert all(move >= step for move in moves)
    assert len(set(starts)) <= 3


def test_typing_on_a_line_longer_than_the_budget_keeps_the_cut_for_a_while() -> None:
    cache = LineTokenCache(char_encode)
    document = "x" * 300
    budget = 100
    texts = []
    for char in "abcdefghij":
        document += char
        prompt = build_prompt(document, tag_line=None, cache=cache, budget=budget)
        check(prompt, document, budget, tag=None)
        texts.append(prompt.text)
    unchanged = sum(1 for a, b in pairwise(texts) if b.startswith(a))
    assert unchanged >= len(texts) // 2


def test_unchanged_lines_are_not_encoded_again() -> None:
    encode = CountingEncoder()
    cache = LineTokenCache(encode)
    document = lines(30) + "resu"
    build_prompt(document, tag_line=TAG, cache=cache, budget=10_000)
    encode.calls.clear()
    build_prompt(document + "l", tag_line=TAG, cache=cache, budget=10_000)
    assert encode.calls == ["resul"]


# --- build_prompt with the real tokenizer ---------------------------------------------------


def test_ids_equal_the_real_tokenizer_on_the_whole_text(tiny_model_dir: Path) -> None:
    tokenizer = ChatGLM2Tokenizer(tiny_model_dir / "tokenizer.model")
    prefix = (
        "import os\r\n"
        "\tdef hello(name):\n"
        "        print(f'你好, {name} 😀')\n"
        "\n"
        "class Point:\n"
        "    x: int = 0  # ünïcödé\n"
        "    def norm(self) -> float:\n"
        "        return (self.x ** 2) ** 0.5\n"
        "    def __repr__(self):\n"
        "        return f'Point({self.x})'\n"
        "def main():\n"
        "    p = Point()\n"
        "    print(p.no"
    )
    cache = LineTokenCache(tokenizer.encode)
    full = build_prompt(prefix, tag_line=TAG, cache=cache, budget=100_000)
    assert full.text == TAG + "\n" + prefix
    assert list(full.ids) == tokenizer.encode(full.text)
    for budget in range(len(full.ids) - 1, 0, -7):
        for step in (1, 4):
            prompt = build_prompt(prefix, tag_line=TAG, cache=cache, budget=budget, step_lines=step)
            check(prompt, prefix, budget, encode=tokenizer.encode)


# --- prompt_at: a window of the document gives the whole document's prompt -----------------


@pytest.mark.parametrize("encode", [char_encode, word_encode])
def test_prompt_at_equals_the_prompt_of_the_whole_prefix(encode) -> None:
    rng = random.Random(7)
    words = ["x", "foo", " ", "  ", "(", ")", "bar_baz", "1234", ",", "é", "😀"]
    for _ in range(40):
        rows = []
        for _ in range(rng.randrange(1, 200)):
            width = rng.choice([1, 5, 20, 300, 3000])
            rows.append("".join(rng.choice(words) for _ in range(rng.randrange(width))))
        document = "\n".join(rows)
        text = LspText(document)
        budget = rng.choice([20, 64, 200, 1000])
        step = rng.choice([1, 4, 16])
        for offset in rng.sample(range(len(document) + 1), 5):
            cache = LineTokenCache(encode)
            expected = build_prompt(
                document[:offset], tag_line=TAG, cache=cache, budget=budget, step_lines=step
            )
            got = prompt_at(text, offset, tag_line=TAG, cache=cache, budget=budget, step_lines=step)
            assert (got.text, got.ids, got.trimmed) == (
                expected.text,
                expected.ids,
                expected.trimmed,
            )


def test_prompt_at_reads_a_window_of_a_long_line() -> None:
    """On a megabyte-long line only a window before the cursor is encoded."""
    encode = CountingEncoder()
    text = LspText("x = 1\n" + "y" * 1_000_000)
    prompt = prompt_at(text, len(text), tag_line=TAG, cache=LineTokenCache(encode), budget=100)
    whole = build_prompt(str(text), tag_line=TAG, cache=LineTokenCache(char_encode), budget=100)
    assert prompt == whole
    assert max(len(call) for call in encode.calls) <= 100 * PROMPT_CHARS_PER_TOKEN * 2


def test_prompt_at_replaces_lone_surrogates() -> None:
    text = LspText("a = '\ud83d'\nb = ")
    prompt = prompt_at(text, len(text), tag_line=None, cache=LineTokenCache(char_encode), budget=99)
    assert prompt.text == "a = '\ufffd'\nb = "
    assert list(prompt.ids) == char_encode(prompt.text)


# --- prepare: what a request keeps of a huge document --------------------------------------


def test_a_request_keeps_bounded_windows_of_a_huge_document() -> None:
    lines = "".join(f"line_{i} = {i}\n" for i in range(50_000))
    long_line = "x = [" + "1, " * 100_000
    text = LspText(lines + long_line + "\nafter = 1\n" * 3000)
    settings = Settings(max_context_tokens=512)
    cache = LineTokenCache(char_encode)
    at_end_of_long_line = prepare(
        text, 50_000, len(long_line), settings=settings, cache=cache, language_id="python"
    )
    assert REQUEST_LINE_CHARS <= len(at_end_of_long_line.prefix) < 2 * REQUEST_LINE_CHARS
    assert long_line.endswith(at_end_of_long_line.prefix)
    assert at_end_of_long_line.suffix == ("\nafter = 1\n" * 3000)[:REQUEST_SUFFIX_CHARS]
    assert len(at_end_of_long_line.prompt.ids) <= settings.prompt_budget()
    end_of_a_line = len("line_39999 = 39999")
    in_the_lines = prepare(
        text, 39_999, end_of_a_line, settings=settings, cache=cache, language_id="python"
    )
    assert in_the_lines is not None
    assert REQUEST_PREFIX_CHARS <= len(in_the_lines.prefix) < 2 * REQUEST_PREFIX_CHARS
    assert in_the_lines.prefix.endswith("line_39998 = 39998\nline_39999 = 39999")
    assert in_the_lines.suffix.startswith("\nline_40000 = 40000\n")
