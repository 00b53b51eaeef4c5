"""The tiny models' weights: random, with just enough structure to decode like a program."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from typing import Any

import sentencepiece as spm
import torch

from codegeex2_lsp.backends.local.checkpoint import EOS_ID

_NEWLINE_ID = 13  # the byte-fallback piece <0x0A>

# Pieces ending in one of these tend to end a line of code.
_LINE_END_CHARS = (":", "{", ";", "}", ")", "]", ",", '"')


class Weights:
    """Deterministic upstream-named tensors, each from its own seed so shards can be made apart.

    Random, with just enough structure that greedy decoding reads like a (nonsense) program:

    - the output layer maps each token's embedding to a successor, the successors forming one
      cycle through the learned pieces and eos, so greedy decoding walks hundreds of distinct
      tokens before it repeats or stops;
    - pieces that end lines of code (``:``, ``{``, ``;`` ...) share a direction in embedding
      space that the newline row of the output layer picks up, so lines end now and then;
    - the first layer's attention looks at the previous token (RoPE-relative, through the q/k
      biases) and copies part of its embedding, and the newline embedding cancels the line-end
      direction, so after a newline the chain goes on from the piece that ended the line;
    - the other blocks are modest random noise, so the context nudges the argmax now and then.
    """

    noise_gain = 0.2
    copy_gain = 1.0
    output_gain = 4.0
    newline_gain = 1.5
    # Attention logit lost per rotary frequency by looking anywhere but one token back.
    previous_token_focus = 56.0

    def __init__(
        self, config: dict[str, Any], tokenizer: spm.SentencePieceProcessor, seed: int
    ) -> None:
        self.hidden = int(config["hidden_size"])
        self.vocab = int(config["padded_vocab_size"])
        self.heads = int(config["num_attention_heads"])
        self.groups = int(config["multi_query_group_num"])
        self.head_dim = int(config["kv_channels"])
        self.ffn = int(config["ffn_hidden_size"])
        self.layers = int(config["num_layers"])
        self.sp = tokenizer
        self.seed = seed

    def _generator(self, name: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))

    def _normal(self, name: str, shape: tuple[int, ...], std: float) -> torch.Tensor:
        return torch.randn(shape, generator=self._generator(name)) * std

    def shapes(self) -> Iterator[tuple[str, tuple[int, ...]]]:
        """Upstream names and shapes, in upstream order."""
        hidden, kv = self.hidden, self.head_dim
        yield "transformer.embedding.word_embeddings.weight", (self.vocab, hidden)
        yield "transformer.rotary_pos_emb.inv_freq", (kv // 4,)
        for n in range(self.layers):
            p = f"transformer.encoder.layers.{n}."
            yield p + "input_layernorm.weight", (hidden,)
            yield p + "self_attention.query_key_value.weight", (self._qkv_rows(), hidden)
            yield p + "self_attention.query_key_value.bias", (self._qkv_rows(),)
            yield p + "self_attention.dense.weight", (hidden, self.heads * kv)
            yield p + "post_attention_layernorm.weight", (hidden,)
            yield p + "mlp.dense_h_to_4h.weight", (2 * self.ffn, hidden)
            yield p + "mlp.dense_4h_to_h.weight", (hidden, self.ffn)
        yield "transformer.encoder.final_layernorm.weight", (hidden,)
        yield "transformer.output_layer.weight", (self.vocab, hidden)

    def _qkv_rows(self) -> int:
        return (self.heads + 2 * self.groups) * self.head_dim

    def tensor(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The float32 value of one upstream tensor."""
        if name.endswith("inv_freq"):
            return self._inv_freq()
        if name.endswith("layernorm.weight"):
            return 1.0 + self._normal(name, shape, 0.1)
        if name.endswith("word_embeddings.weight"):
            return self._embeddings()
        if name.endswith("output_layer.weight"):
            return self._output_layer()
        first_layer = name.startswith("transformer.encoder.layers.0.self_attention.")
        if name.endswith("query_key_value.bias"):
            noise = self._normal(name, shape, 0.1)
            return noise + self._previous_token_bias() if first_layer else noise
        if name.endswith("query_key_value.weight") and first_layer:
            return self._copy_qkv(name, shape)
        if name.endswith("self_attention.dense.weight") and first_layer:
            return self._copy_output(name, shape)
        gain = self.noise_gain if name.endswith(("dense.weight", "dense_4h_to_h.weight")) else 1.0
        return self._normal(name, shape, gain / math.sqrt(shape[1]))

    def _inv_freq(self) -> torch.Tensor:
        dim = self.head_dim // 2
        return 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

    def _previous_token_bias(self) -> torch.Tensor:
        """q/k biases whose RoPE-rotated dot product peaks one position back.

        Each rotary pair is a complex number turned by position x frequency; with k = a and
        q = a * exp(-i * freq), q.k = a^2 * cos((distance - 1) * freq), largest at distance 1.
        """
        inv_freq = self._inv_freq()
        amplitude = math.sqrt(self.previous_token_focus * math.sqrt(self.head_dim))
        q = torch.zeros(self.head_dim)
        k = torch.zeros(self.head_dim)
        q[0 : 2 * len(inv_freq) : 2] = amplitude * inv_freq.cos()
        q[1 : 2 * len(inv_freq) : 2] = -amplitude * inv_freq.sin()
        k[0 : 2 * len(inv_freq) : 2] = amplitude
        v = torch.zeros(self.groups * self.head_dim)
        return torch.cat([q.repeat(self.heads), k.repeat(self.groups), v])

    def _copy_basis(self) -> torch.Tensor:
        """Orthonormal columns [hidden, groups * head_dim]: what the value heads copy."""
        width = min(self.groups * self.head_dim, self.hidden)
        basis, _ = torch.linalg.qr(self._normal("copy-basis", (self.hidden, width), 1.0))
        return basis

    def _copy_qkv(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        weight = self._normal(name, shape, 0.02 / math.sqrt(self.hidden))
        basis = self._copy_basis()
        v_start = (self.heads + self.groups) * self.head_dim
        weight[v_start : v_start + basis.shape[1]] += basis.T
        return weight

    def _copy_output(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        weight = self._normal(name, shape, 0.02 / math.sqrt(shape[1]))
        basis = self._copy_basis()
        per_group = self.heads // self.groups
        for head in range(self.heads):
            group = head // per_group
            columns = basis[:, group * self.head_dim : (group + 1) * self.head_dim]
            block = slice(head * self.head_dim, head * self.head_dim + columns.shape[1])
            weight[:, block] += columns * (self.copy_gain / per_group)
        return weight

    def _line_end_direction(self) -> torch.Tensor:
        direction = self._normal("line-end", (self.hidden,), 1.0)
        return direction * (math.sqrt(self.hidden) / direction.norm())

    def _line_enders(self) -> list[int]:
        return [
            i
            for i in range(self.sp.get_piece_size())
            if self.sp.id_to_piece(i).endswith(_LINE_END_CHARS)
        ]

    def _embeddings(self) -> torch.Tensor:
        embed = self._base_embeddings()
        embed[self._line_enders()] += self._line_end_direction()
        return embed

    def _base_embeddings(self) -> torch.Tensor:
        """Random embeddings, except newline's, which undoes the line end that the copy brings."""
        name = "transformer.embedding.word_embeddings.weight"
        embed = self._normal(name, (self.vocab, self.hidden), 1.0)
        basis = self._copy_basis()
        copied_line_end = basis @ (basis.T @ self._line_end_direction())
        # A line-ending embedding has about twice a plain one's energy, so RMSNorm halves it.
        embed[_NEWLINE_ID] = -self.copy_gain * copied_line_end / math.sqrt(2)
        return embed

    def _output_layer(self) -> torch.Tensor:
        n = self.sp.get_piece_size()
        embed = self._base_embeddings()
        g = self._generator("transformer.output_layer.weight")
        first_learned = 3 + 256  # unk, bos, eos, then the 256 byte pieces
        cycle = torch.tensor([EOS_ID, *range(first_learned, n)])
        cycle = cycle[torch.randperm(len(cycle), generator=g)]
        out = torch.randn((self.vocab, self.hidden), generator=g) * 0.02
        # Each piece of the cycle points at the next; other tokens at a random one of them.
        out[cycle.roll(-1)] += embed[cycle]
        others = torch.tensor(sorted(set(range(n + 5)) - {*cycle.tolist(), _NEWLINE_ID}))
        targets = cycle[torch.randint(len(cycle), (len(others),), generator=g)]
        out.index_add_(0, targets, embed[others])
        out[_NEWLINE_ID] = self._line_end_direction() * self.newline_gain
        return out * (self.output_gain / math.sqrt(self.hidden))
