"""Tiny ChatGLM2 checkpoints in the upstream layout, for tests, demos and benchmarks.

The real weights cannot be fetched where the project is tested, so the loading code is exercised
on checkpoints written here: an upstream-style ``config.json``, ``pytorch_model-*.bin`` shards with
the upstream key names and their index, and a SentencePiece ``tokenizer.model`` trained on the fly
the way the real one was (whitespace kept, byte fallback, ``\\n`` = id 13, tab = id 12).

The random weights are given a little structure so greedy decoding is useful for end-to-end tests
(non-empty, multi-line, no short loops, no immediate eos); see ``weights.Weights``. What follows a
prompt depends mostly on its last pieces, so prompts that end alike continue alike.
"""

from codegeex2_lsp.testing.vocab import TINY_CORPUS, train_tokenizer
from codegeex2_lsp.testing.writer import codegeex2_6b_shape, tiny_config, write_tiny_model

__all__ = [
    "TINY_CORPUS",
    "codegeex2_6b_shape",
    "tiny_config",
    "train_tokenizer",
    "write_tiny_model",
]
