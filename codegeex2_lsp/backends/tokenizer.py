"""The ChatGLM2 tokenizer, read with sentencepiece directly (no remote code).

Special ids follow the SentencePiece pieces, so they are derived from the piece count: with N
pieces, ``[MASK]`` is N, ``[gMASK]`` N+1, ``[sMASK]`` N+2, ``sop`` N+3 and ``eop`` N+4. A
completion prompt is ``[gMASK, sop]`` followed by the plain SentencePiece ids of the text.

Decoding does not go through ``SentencePieceProcessor.decode``: each id is turned into its bytes
(a byte-fallback piece is one raw byte, a learned piece is its text with ``▁`` as a space) and the
bytes are decoded as UTF-8. That is exact for any split of the ids, which is what streaming needs:
a character spread over several byte pieces comes out whole once its last byte arrives.
"""

from __future__ import annotations

import codecs
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from codegeex2_lsp.errors import LoadError

logger = logging.getLogger(__name__)

# SentencePiece's stand-in for a space inside pieces.
_SPACE_SYMBOL = "\u2581"

TOKENIZER_FILE = "tokenizer.model"
"""The tokenizer's file in a checkpoint directory (and on the hub)."""

# UTF-8 sequences are at most four bytes long: this many bytes of context always hold the start
# of any character the continuation might finish.
_MAX_UTF8_LEN = 4


class ChatGLM2Tokenizer:
    """Encodes prompts and decodes generated ids the way the ChatGLM2 model saw them in training."""

    unk_id = 0
    bos_id = 1
    eos_id = 2

    def __init__(self, model_file: str | os.PathLike[str]) -> None:
        self._sp = spm.SentencePieceProcessor(model_file=os.fspath(model_file))
        self.piece_count: int = self._sp.get_piece_size()
        n = self.piece_count
        self.mask_id, self.gmask_id, self.smask_id, self.sop_id, self.eop_id = range(n, n + 5)
        self.prefix_ids: tuple[int, int] = (self.gmask_id, self.sop_id)
        self._bytes = [self._piece_bytes(i) for i in range(n)]
        logger.debug("tokenizer %s: %d pieces", model_file, n)

    def _piece_bytes(self, piece_id: int) -> bytes:
        if self._sp.is_byte(piece_id):
            # Byte pieces are named "<0xAB>".
            return bytes([int(self._sp.id_to_piece(piece_id)[3:5], 16)])
        if self._sp.is_control(piece_id) or self._sp.is_unknown(piece_id):
            return b""
        return self._sp.id_to_piece(piece_id).replace(_SPACE_SYMBOL, " ").encode("utf-8")

    def _ids_bytes(self, ids: Sequence[int]) -> bytes:
        n = self.piece_count
        return b"".join(self._bytes[i] for i in ids if 0 <= i < n)

    def encode(self, text: str) -> list[int]:
        """SentencePiece ids of ``text`` with nothing added, as the model saw text in training."""
        return list(self._sp.encode(text, out_type=int))

    def prompt_ids(self, text: str) -> list[int]:
        """Ids of a completion prompt of ``text``."""
        return self.with_prefix(self.encode(text))

    def with_prefix(self, ids: Sequence[int]) -> list[int]:
        """A completion prompt of the text's ``ids``: the model expects ``[gMASK, sop]`` first.

        The one place a prompt gets its prefix; every backend takes prompts that carry it.
        """
        return [*self.prefix_ids, *ids]

    def has_prefix(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` start with ``[gMASK, sop]``, as every prompt a backend takes does."""
        return tuple(ids[: len(self.prefix_ids)]) == self.prefix_ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special and padding ids carry no text and are skipped."""
        return self._ids_bytes(ids).decode("utf-8", errors="replace")

    def decode_continuation(self, context_ids: Sequence[int], ids: Sequence[int]) -> str:
        """Text that ``ids`` add after ``context_ids``, holding back an unfinished character.

        Called once per generated token with everything before it as context, the pieces join
        up to exactly ``decode(all generated ids)`` (once the last character is complete),
        because a character split across byte pieces is emitted by the call that completes it.
        """
        return self.text_after(context_ids).add(ids)

    def text_after(self, context_ids: Sequence[int]) -> TextStream:
        """A decoder for ids generated after ``context_ids``, fed as they come."""
        return TextStream(self, context_ids)

    def suppressed_ids(self, vocab_size: int) -> list[int]:
        """Ids generation must never produce: unk, bos, the specials and embedding padding rows.

        ``vocab_size`` is the model's (padded) vocabulary; eos stays allowed since it ends
        generation.
        """
        banned = [self.unk_id, self.bos_id, *range(self.piece_count, vocab_size)]
        return [i for i in banned if i < vocab_size]


def read_tokenizer(
    directory: Path, missing_hint: str = "the download is incomplete; download the model again"
) -> ChatGLM2Tokenizer:
    """The ``tokenizer.model`` in ``directory``; ``missing_hint`` says what to do without one."""
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        raise LoadError(f"{directory} has no {TOKENIZER_FILE}", missing_hint)
    try:
        return ChatGLM2Tokenizer(path)
    except (OSError, RuntimeError) as error:
        raise LoadError(
            f"cannot read {path}: {error}", "the file is damaged; download it again"
        ) from error


class TextStream:
    """The text of generated ids, fed a few at a time: each id's bytes are decoded once.

    Re-decoding every generated id at every token would cost time growing with the answer;
    an incremental UTF-8 decoder holds back only an unfinished character. Its start is found
    in the last few bytes of the context, so the first piece decodes as it would after them.
    """

    def __init__(self, tokenizer: ChatGLM2Tokenizer, context_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        context = bytearray()
        for token in reversed(context_ids):
            if len(context) >= _MAX_UTF8_LEN:
                break
            context[:0] = tokenizer._ids_bytes((token,))
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._decoder.decode(bytes(context), final=False)

    def add(self, ids: Sequence[int]) -> str:
        """The text ``ids`` complete, after all the ids added before."""
        return self._decoder.decode(self._tokenizer._ids_bytes(ids), final=False)
