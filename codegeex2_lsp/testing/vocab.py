"""The tiny models' tokenizer: SentencePiece trained on a small code corpus the way ChatGLM2's was.

The corpus (``corpus.txt``, shipped with the package) is code in the languages the model
completes most, one source line per SentencePiece sentence. Indentation uses spaces only: tabs
must stay byte-fallback pieces, as in the real tokenizer.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

import sentencepiece as spm

TINY_CORPUS = (
    resources.files("codegeex2_lsp.testing").joinpath("corpus.txt").read_text(encoding="utf-8")
)
"""The training text; tests also use it as text the tokenizer has seen."""


def _corpus_lines() -> Iterator[str]:
    for line in TINY_CORPUS.splitlines():
        if line.strip():
            yield line


def train_tokenizer(
    vocab_pieces: int = 1000, lines: Iterable[str] | None = None, sample: int | None = None
) -> bytes:
    """A SentencePiece model trained like the ChatGLM2 one, returned as the file's bytes.

    Whitespace-exact (identity normalization, no dummy prefix, no whitespace folding) with byte
    fallback, so any text round-trips and ``\\n``/tab are the byte pieces 13/12; one line per
    sentence, so no piece spans a newline and per-line encoding equals whole-text encoding.
    ``lines`` replaces the tiny corpus (a benchmark's larger vocabulary), of which ``sample``
    lines, drawn at random, are used when given.
    """
    sampling: dict[str, Any] = {}
    if sample is not None:
        sampling = {"input_sentence_size": sample, "shuffle_input_sentence": True}
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines) if lines is not None else _corpus_lines(),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_pieces,
        character_coverage=1.0,
        byte_fallback=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        max_sentencepiece_length=16,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
        **sampling,
    )
    return model.getvalue()
