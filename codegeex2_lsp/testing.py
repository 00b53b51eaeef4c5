"""Tiny ChatGLM2 checkpoints in the upstream layout, for tests, demos and benchmarks.

The real weights cannot be fetched where the project is tested, so the loading code is exercised
on checkpoints written here: an upstream-style ``config.json``, ``pytorch_model-*.bin`` shards with
the upstream key names and their index, and a SentencePiece ``tokenizer.model`` trained on the fly
the way the real one was (whitespace kept, byte fallback, ``\\n`` = id 13, tab = id 12).

The random weights are given a little structure so greedy decoding is useful for end-to-end tests
(non-empty, multi-line, no short loops, no immediate eos); see ``_Weights``. What follows a prompt
depends mostly on its last pieces, so prompts that end alike continue alike.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import sentencepiece as spm
import torch

logger = logging.getLogger(__name__)

_EOS_ID = 2
_NEWLINE_ID = 13  # the byte-fallback piece <0x0A>

# Pieces ending in one of these tend to end a line of code.
_LINE_END_CHARS = (":", "{", ";", "}", ")", "]", ",", '"')

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}

# Code in the languages the model completes most, one source line per SentencePiece sentence.
# Indentation uses spaces only: tabs must stay byte-fallback pieces, as in the real tokenizer.
TINY_CORPUS = r'''# language: Python
import os
import zlib
import sys
import json
import logging
from pathlib import Path
from typing import Any, Optional
from dataclasses import dataclass, field
logger = logging.getLogger(__name__)
# write a bubble sort function
def bubble_sort(items: list[int]) -> list[int]:
    """Sort the list in place and return it."""
    n = len(items)
    for i in range(n):
        for j in range(0, n - i - 1):
            if items[j] > items[j + 1]:
                items[j], items[j + 1] = items[j + 1], items[j]
    return items
def fibonacci(n):
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)
class Stack:
    def __init__(self):
        self.items = []
    def push(self, item):
        self.items.append(item)
    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()
    def __len__(self) -> int:
        return len(self.items)
@dataclass
class Config:
    name: str = "default"
    values: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False
def read_json(path: Path) -> dict:
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)
def main() -> None:
    args = sys.argv[1:]
    if not args:
        print("usage: tool FILE", file=sys.stderr)
        sys.exit(1)
    for name in args:
        data = read_json(Path(name))
        print(f"{name}: {len(data)} keys")
if __name__ == "__main__":
    main()
    result = [x * x for x in range(10) if x % 2 == 0]
    total = sum(value for value in result)
    try:
        value = int(text)
    except ValueError as exc:
        logger.warning("bad value %r: %s", text, exc)
        return None
    finally:
        self.close()
    async def fetch(self, url: str) -> bytes:
        async with self.session.get(url) as response:
            return await response.read()
# 计算两个数的最大公约数
def gcd(a, b):
    while b:
        a, b = b, a % b
    return a
// language: JavaScript
const express = require("express");
const app = express();
app.get("/", (req, res) => {
  res.send("Hello World!");
});
app.listen(3000, () => console.log("listening on port 3000"));
function debounce(fn, wait) {
  let timer = null;
  return function (...args) {
    clearTimeout(timer);
    timer = setTimeout(() => fn.apply(this, args), wait);
  };
}
export default function sum(numbers) {
  return numbers.reduce((acc, n) => acc + n, 0);
}
const items = data.filter((item) => item.active).map((item) => item.name);
async function loadUser(id) {
  const response = await fetch(`/api/users/${id}`);
  if (!response.ok) {
    throw new Error(`request failed: ${response.status}`);
  }
  return response.json();
}
document.getElementById("button").addEventListener("click", onClick);
for (let i = 0; i < array.length; i++) {
  console.log(array[i]);
}
// language: TypeScript
interface User {
  id: number;
  name: string;
  email?: string;
}
export class UserService {
  private users: Map<number, User> = new Map();
  constructor(private readonly http: HttpClient) {}
  async get(id: number): Promise<User | undefined> {
    return this.users.get(id);
  }
}
type Result<T> = { ok: true; value: T } | { ok: false; error: string };
export const isString = (value: unknown): value is string => typeof value === "string";
// language: Java
package com.example.demo;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
public class Main {
    public static void main(String[] args) {
        System.out.println("Hello, World!");
        List<String> names = new ArrayList<>();
        Map<String, Integer> counts = new HashMap<>();
        for (String name : names) {
            counts.put(name, counts.getOrDefault(name, 0) + 1);
        }
    }
    private int binarySearch(int[] array, int target) {
        int low = 0, high = array.length - 1;
        while (low <= high) {
            int mid = (low + high) >>> 1;
            if (array[mid] < target) {
                low = mid + 1;
            } else if (array[mid] > target) {
                high = mid - 1;
            } else {
                return mid;
            }
        }
        return -1;
    }
    @Override
    public String toString() {
        return "Main{" + "name='" + name + '\'' + '}';
    }
}
// language: C
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s file\n", argv[0]);
        return 1;
    }
    FILE *fp = fopen(argv[1], "r");
    char buffer[256];
    while (fgets(buffer, sizeof(buffer), fp) != NULL) {
        printf("%s", buffer);
    }
    fclose(fp);
    return 0;
}
static void swap(int *a, int *b) {
    int tmp = *a;
    *a = *b;
    *b = tmp;
}
typedef struct node {
    int value;
    struct node *next;
} node_t;
node_t *node = (node_t *)malloc(sizeof(node_t));
// language: C++
#include <iostream>
#include <vector>
#include <string>
#include <algorithm>
using namespace std;
template <typename T>
class Matrix {
public:
    Matrix(size_t rows, size_t cols) : rows_(rows), cols_(cols), data_(rows * cols) {}
    T& operator()(size_t i, size_t j) { return data_[i * cols_ + j]; }
private:
    size_t rows_, cols_;
    std::vector<T> data_;
};
int main() {
    std::vector<int> v = {5, 3, 1, 4, 2};
    std::sort(v.begin(), v.end());
    for (const auto& x : v) {
        std::cout << x << " ";
    }
    std::cout << std::endl;
    return 0;
}
// language: Go
package main
import (
    "fmt"
    "net/http"
    "strings"
)
type Server struct {
    addr string
    mux  *http.ServeMux
}
func NewServer(addr string) *Server {
    return &Server{addr: addr, mux: http.NewServeMux()}
}
func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
    name := strings.TrimPrefix(r.URL.Path, "/")
    fmt.Fprintf(w, "Hello, %s!", name)
}
func main() {
    s := NewServer(":8080")
    if err := http.ListenAndServe(s.addr, s.mux); err != nil {
        panic(err)
    }
    for i, v := range values {
        fmt.Println(i, v)
    }
}
// language: Rust
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}
impl Point {
    pub fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }
    pub fn distance(&self, other: &Point) -> f64 {
        ((self.x - other.x).powi(2) + (self.y - other.y).powi(2)).sqrt()
    }
}
fn main() -> io::Result<()> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let text = fs::read_to_string("input.txt")?;
    for word in text.split_whitespace() {
        *counts.entry(word.to_string()).or_insert(0) += 1;
    }
    match counts.get("hello") {
        Some(n) => println!("hello: {}", n),
        None => println!("no hello"),
    }
    Ok(())
}
// language: C#
using System;
using System.Collections.Generic;
using System.Linq;
namespace Demo
{
    public class Program
    {
        public static void Main(string[] args)
        {
            var numbers = new List<int> { 1, 2, 3, 4, 5 };
            var evens = numbers.Where(n => n % 2 == 0).ToList();
            Console.WriteLine(string.Join(", ", evens));
        }
    }
}
// language: PHP
<?php
function connect(string $host, int $port): PDO {
    $dsn = "mysql:host=$host;port=$port;dbname=test";
    return new PDO($dsn, $user, $password);
}
foreach ($rows as $key => $row) {
    echo $row['name'] . "\n";
}
?>
# language: Ruby
class Animal
  attr_reader :name
  def initialize(name)
    @name = name
  end
  def to_s
    "#{self.class.name}(#{@name})"
  end
end
[1, 2, 3].each { |x| puts x * 2 }
# language: Shell
#!/bin/bash
set -euo pipefail
for file in "$@"; do
    if [ -f "$file" ]; then
        echo "processing $file"
        wc -l "$file"
    fi
done
-- language: SQL
SELECT id, name, email FROM users WHERE active = 1 ORDER BY name;
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, total REAL);
INSERT INTO orders (user_id, total) VALUES (1, 9.99);
<!--language: HTML-->
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Demo</title>
</head>
<body>
  <div class="container">
    <h1>Hello</h1>
    <p>This is a paragraph.</p>
  </div>
</body>
</html>
/* language: CSS */
.container { display: flex; margin: 0 auto; padding: 16px; }
// language: Kotlin
fun main() {
    val names = listOf("alice", "bob")
    names.forEach { println(it) }
}
// language: swift
func greet(name: String) -> String {
    return "Hello, \(name)!"
}
% language: Lua
local function add(a, b)
  return a + b
end
'''


def _corpus_lines() -> Iterator[str]:
    for line in TINY_CORPUS.splitlines():
        if line.strip():
            yield line


def train_tokenizer(vocab_pieces: int = 1000) -> bytes:
    """A SentencePiece model trained like the ChatGLM2 one, returned as the file's bytes.

    Whitespace-exact (identity normalization, no dummy prefix, no whitespace folding) with byte
    fallback, so any text round-trips and ``\\n``/tab are the byte pieces 13/12; one line per
    sentence, so no piece spans a newline and per-line encoding equals whole-text encoding.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_corpus_lines(),
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
    )
    return model.getvalue()


def tiny_config(
    *,
    num_layers: int,
    hidden_size: int,
    ffn_hidden_size: int,
    num_attention_heads: int,
    multi_query_group_num: int,
    kv_channels: int,
    seq_length: int,
    padded_vocab_size: int,
    dtype: torch.dtype,
) -> dict[str, object]:
    """An upstream ``config.json`` (field names and fixed values as in THUDM/codegeex2-6b)."""
    return {
        "_name_or_path": "THUDM/codegeex2-6b",
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "ffn_hidden_size": ffn_hidden_size,
        "fp32_residual_connection": False,
        "hidden_dropout": 0.0,
        "hidden_size": hidden_size,
        "kv_channels": kv_channels,
        "layernorm_epsilon": 1e-05,
        "multi_query_attention": True,
        "multi_query_group_num": multi_query_group_num,
        "num_attention_heads": num_attention_heads,
        "num_layers": num_layers,
        "original_rope": True,
        "padded_vocab_size": padded_vocab_size,
        "post_layer_norm": True,
        "rmsnorm": True,
        "seq_length": seq_length,
        "use_cache": True,
        "tie_word_embeddings": False,
        "torch_dtype": _DTYPE_NAMES[dtype],
        "transformers_version": "4.27.1",
        "eos_token_id": 2,
    }


class _Weights:
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

    def __init__(self, config: dict[str, object], tokenizer: spm.SentencePieceProcessor, seed: int):
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
        cycle = torch.tensor([_EOS_ID, *range(first_learned, n)])
        cycle = cycle[torch.randperm(len(cycle), generator=g)]
        out = torch.randn((self.vocab, self.hidden), generator=g) * 0.02
        # Each piece of the cycle points at the next; other tokens at a random one of them.
        out[cycle.roll(-1)] += embed[cycle]
        others = torch.tensor(sorted(set(range(n + 5)) - {*cycle.tolist(), _NEWLINE_ID}))
        targets = cycle[torch.randint(len(cycle), (len(others),), generator=g)]
        out.index_add_(0, targets, embed[others])
        out[_NEWLINE_ID] = self._line_end_direction() * self.newline_gain
        return out * (self.output_gain / math.sqrt(self.hidden))


def _balanced_shards(
    shapes: list[tuple[str, tuple[int, ...]]], shards: int
) -> list[list[tuple[str, tuple[int, ...]]]]:
    sizes = [math.prod(shape) for _, shape in shapes]
    per_shard = sum(sizes) / shards
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[] for _ in range(shards)]
    done = 0
    for item, size in zip(shapes, sizes, strict=True):
        index = min(int(done / per_shard), shards - 1)
        groups[index].append(item)
        done += size
    return [group for group in groups if group]


_QUANTIZED_LINEARS = (
    "self_attention.query_key_value.weight",
    "self_attention.dense.weight",
    "mlp.dense_h_to_4h.weight",
    "mlp.dense_4h_to_h.weight",
)


def _official_quantized(name: str, weight: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """One linear weight as upstream's ``quantization.py`` stores it: int8 integers, packed two
    per byte (even column in the high nibble) for INT4, and a float16 scale per row."""
    scale = (weight.abs().amax(dim=1) / (2 ** (bits - 1) - 1)).half()
    q = torch.round(weight / scale.float()[:, None]).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    q = q.to(torch.int8)
    if bits == 4:
        q = ((q[:, 0::2].to(torch.int16) << 4) | (q[:, 1::2].to(torch.int16) & 0xF)) & 0xFF
        q = q.to(torch.uint8).view(torch.int8)
    return {name: q, name + "_scale": scale}


def write_tiny_model(
    directory: str | os.PathLike[str],
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    ffn_hidden_size: int = 172,
    num_attention_heads: int = 4,
    multi_query_group_num: int = 2,
    kv_channels: int = 16,
    seq_length: int = 4096,
    shards: int = 2,
    seed: int = 0,
    vocab_pieces: int = 1000,
    padded_vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    quantization_bit: int | None = None,
) -> Path:
    """Write a ChatGLM2 checkpoint in the upstream layout to ``directory`` and return its path.

    ``quantization_bit`` 4 or 8 writes the official quantized layout instead (as
    THUDM/codegeex2-6b-int4): each layer's four linear weights as int8 integers, two per byte for
    INT4, with a float16 ``weight_scale`` per row, and ``quantization_bit`` in config.json; the
    other tensors in ``dtype`` (float16 upstream).

    Deterministic for the same arguments. ``padded_vocab_size`` defaults to the tokenizer's
    pieces plus the five specials rounded up to 64, as upstream pads; pass 65024 for the real
    model's shapes. Shards are written one at a time, so full-size checkpoints (28 layers, hidden
    4096, ffn 13696, heads 32, kv_channels 128, bf16) need memory for one shard, not the model.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_model = train_tokenizer(vocab_pieces)
    (out / "tokenizer.model").write_bytes(tokenizer_model)
    tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_model)
    piece_count = tokenizer.get_piece_size()
    if padded_vocab_size is None:
        padded_vocab_size = -(-(piece_count + 5) // 64) * 64
    if padded_vocab_size < piece_count + 5:
        raise ValueError(f"padded_vocab_size must be at least {piece_count + 5}")
    config = tiny_config(
        num_layers=num_layers,
        hidden_size=hidden_size,
        ffn_hidden_size=ffn_hidden_size,
        num_attention_heads=num_attention_heads,
        multi_query_group_num=multi_query_group_num,
        kv_channels=kv_channels,
        seq_length=seq_length,
        padded_vocab_size=padded_vocab_size,
        dtype=dtype,
    )
    if quantization_bit is not None:
        if quantization_bit not in (4, 8):
            raise ValueError("quantization_bit must be 4 or 8")
        config["quantization_bit"] = quantization_bit
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    weights = _Weights(config, tokenizer, seed)
    groups = _balanced_shards(list(weights.shapes()), shards)
    weight_map: dict[str, str] = {}
    total_size = 0
    for index, group in enumerate(groups, start=1):
        file_name = f"pytorch_model-{index:05d}-of-{len(groups):05d}.bin"
        state: dict[str, torch.Tensor] = {}
        for name, shape in group:
            tensor = weights.tensor(name, shape)
            if quantization_bit is not None and name.endswith(_QUANTIZED_LINEARS):
                state.update(_official_quantized(name, tensor, quantization_bit))
            else:
                state[name] = tensor.to(dtype)
        torch.save(state, out / file_name)
        for name, tensor in state.items():
            weight_map[name] = file_name
            total_size += tensor.numel() * tensor.element_size()
        del state
        logger.debug("wrote %s", file_name)
    index_json = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(
        json.dumps(index_json, indent=2) + "\n", encoding="utf-8"
    )
    return out
