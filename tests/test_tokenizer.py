"""The ChatGLM2 tokenizer on the tiny tokenizer, trained the way the real one was."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm

from codegeex2_lsp.backends.generation import Continuation, Generation
from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer

# Byte-fallback pieces follow unk/bos/eos, so byte b is id 3 + b, as in the real tokenizer.
NEWLINE_ID = 13
TAB_ID = 12
CR_ID = 16

# Realistic code that is not in the training corpus, so rare words split and bytes fall back.
SAMPLE = """# language: Python
# -*- coding: utf-8 -*-
def quick_sort(values: list[float]) -> list[float]:
    '''Return a sorted copy (快速排序).'''
    if len(values) <= 1:
        return list(values)
    pivot, *rest = values
\tleft = [v for v in rest if v < pivot]  # tab-indented on purpose
    return quick_sort(left) + [pivot] + quick_sort([v for v in rest if v >= pivot])


// language: JavaScript
const greet = (name) => `Hello, ${name} 👋`;\r
export { greet };\r
// language: Go
func Sum(xs []int) (total int) {
\tfor _, x := range xs {
\t\ttotal += x
\t}
\treturn
}
// language: Rust
fn main() { println!("Grüße, мир! {}", 2_u8.pow(7)); }
   trailing spaces   \n\n\n
"""

ROUND_TRIP = [
    "",
    " ",
    "  leading and trailing  ",
    "\n",
    "\n\n\n",
    "\t",
    "\tindented\n\t\tdeeper\n",
    "line one\r\nline two\r\n",
    "mixed\r\n\n\r\t \r",
    "中文注释: 计算最大公约数",
    "emoji 😀🎉 and flags 🇨🇳",
    "combining e\u0301 and zero\u200bwidth",
    "null \x00 byte and bell \x07",
    "<s></s><unk>[gMASK]sop",
    "    return self.items.pop()\n",
    SAMPLE,
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> ChatGLM2Tokenizer:
    return ChatGLM2Tokenizer(tiny_model_dir / "tokenizer.model")


def test_special_ids_follow_the_pieces(tokenizer: ChatGLM2Tokenizer, tiny_model_dir: Path) -> None:
    n = spm.SentencePieceProcessor(model_file=str(tiny_model_dir / "tokenizer.model")).piece_size()
    assert tokenizer.piece_count == n
    assert (tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)
    specials = (
        tokenizer.mask_id,
        tokenizer.gmask_id,
        tokenizer.smask_id,
        tokenizer.sop_id,
        tokenizer.eop_id,
    )
    assert specials == (n, n + 1, n + 2, n + 3, n + 4)
    assert tokenizer.prefix_ids == (n + 1, n + 3)


def test_whitespace_is_byte_fallback_as_upstream(tokenizer: ChatGLM2Tokenizer) -> None:
    assert tokenizer.encode("\n") == [NEWLINE_ID]
    assert tokenizer.encode("\t") == [TAB_ID]
    assert tokenizer.encode("\r\n") == [CR_ID, NEWLINE_ID]


def test_prompt_ids_are_prefix_then_plain_ids(tokenizer: ChatGLM2Tokenizer) -> None:
    text = "# language: Python\n# write a bubble sort function\n"
    ids = tokenizer.prompt_ids(text)
    assert ids[:2] == [tokenizer.gmask_id, tokenizer.sop_id]
    assert ids[2:] == tokenizer.encode(text)
    # No dummy prefix: "#" opens both lines with the same id, and each line ends with 13.
    first_hash = ids[2]
    second_line = ids.index(NEWLINE_ID) + 1
    assert ids[second_line] == first_hash
    assert ids[-1] == NEWLINE_ID
    assert tokenizer.bos_id not in ids


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_round_trips_exactly(tokenizer: ChatGLM2Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_decode_skips_special_and_padding_ids(tokenizer: ChatGLM2Tokenizer) -> None:
    ids = tokenizer.encode("x = 1\n")
    noisy = [*tokenizer.prefix_ids, *ids, tokenizer.eos_id, tokenizer.eop_id, 10_000]
    assert tokenizer.decode(noisy) == "x = 1\n"


def test_rare_characters_are_split_into_bytes(tokenizer: ChatGLM2Tokenizer) -> None:
    ids = tokenizer.encode("🎉")
    assert ids == [3 + b for b in "🎉".encode()]


@pytest.mark.parametrize("text", ROUND_TRIP[8:])
def test_streaming_decode_equals_decoding_at_once(tokenizer: ChatGLM2Tokenizer, text: str) -> None:
    prompt = tokenizer.prompt_ids("// language: Go\n")
    ids = tokenizer.encode(text)
    pieces = [
        tokenizer.decode_continuation(prompt + ids[:i], ids[i : i + 1]) for i in range(len(ids))
    ]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_unfinished_character_is_held_back(tokenizer: ChatGLM2Tokenizer) -> None:
    first, second, third, fourth = tokenizer.encode("😀")
    assert tokenizer.decode_continuation([], [first, second]) == ""
    assert tokenizer.decode_continuation([first, second], [third]) == ""
    assert tokenizer.decode_continuation([first, second, third], [fourth, NEWLINE_ID]) == "😀\n"


def test_continuation_after_a_character_split_across_context(
    tokenizer: ChatGLM2Tokenizer,
) -> None:
    context = tokenizer.encode("x = '中")
    ids = tokenizer.encode("🎉'")
    assert tokenizer.decode_continuation(context + ids[:1], ids[1:]) == "🎉'"


def test_continuation_keeps_the_leading_space(tokenizer: ChatGLM2Tokenizer) -> None:
    context = tokenizer.encode("def")
    ids = tokenizer.encode(" main():")
    assert tokenizer.decode_continuation(context, ids) == " main():"


def test_per_line_encoding_equals_whole_text(tokenizer: ChatGLM2Tokenizer) -> None:
    from codegeex2_lsp.testing import TINY_CORPUS

    for text in (SAMPLE, TINY_CORPUS, SAMPLE.replace("\n", "\r\n")):
        lines = text.splitlines(keepends=True)
        per_line = [token for line in lines for token in tokenizer.encode(line)]
        assert per_line == tokenizer.encode(text)


def test_suppressed_ids(tokenizer: ChatGLM2Tokenizer) -> None:
    n = tokenizer.piece_count
    vocab_size = -(-(n + 5) // 64) * 64 + 64
    suppressed = tokenizer.suppressed_ids(vocab_size)
    assert suppressed == [0, 1, *range(n, vocab_size)]
    assert tokenizer.eos_id not in suppressed
    assert tokenizer.suppressed_ids(n + 3) == [0, 1, n, n + 1, n + 2]


@pytest.mark.parametrize("text", ROUND_TRIP[8:])
def test_the_per_token_rule_decodes_each_id_once(tokenizer: ChatGLM2Tokenizer, text: str) -> None:
    prompt = tokenizer.prompt_ids("// language: Go\n")
    ids = tokenizer.encode(text)
    decoded: list[int] = []
    ids_bytes = tokenizer._ids_bytes

    def counting(chunk: Sequence[int]) -> bytes:
        decoded.extend(chunk)
        return ids_bytes(chunk)

    tokenizer._ids_bytes = counting  # type: ignore[method-assign]
    try:
        grown: list[str] = []
        result = Generation()
        rule = Continuation(
            tokenizer,
            prompt,
            result,
            should_stop=None,
            on_token=lambda generation: grown.append(generation.text),
        )
        assert not any(rule.add(token) for token in ids)
    finally:
        del tokenizer._ids_bytes
    assert result.text == text
    assert result.ids == ids
    assert grown[-1] == text and len(grown) == len(ids)
    # The generated ids once each, after the few context ids a first character may continue.
    assert decoded[-len(ids) :] == ids
    assert len(decoded) - len(ids) <= 4


def test_the_per_token_rule_ends_at_eos_the_stop_check_or_the_limit(
    tokenizer: ChatGLM2Tokenizer,
) -> None:
    prompt = tokenizer.prompt_ids("x = ")
    ids = tokenizer.encode("1 + 2\nprint(x)")

    def run(**rule: Any) -> Generation:
        result = Generation()
        continuation = Continuation(tokenizer, prompt, result, **rule)
        for token in [*ids, tokenizer.eos_id, *ids]:
            if continuation.add(token):
                break
        return result

    ended = run(should_stop=None)
    assert (ended.text, ended.finish_reason, ended.ids) == (tokenizer.decode(ids), "eos", ids)
    stopped = run(should_stop=lambda text: "\n" in text)
    assert stopped.finish_reason == "stop"
    assert stopped.text.endswith("\n") and stopped.text.count("\n") == 1
    limited = run(should_stop=None, limit=2)
    assert (limited.generated_tokens, limited.finish_reason) == (2, "length")
