"""The tiny checkpoint writer: upstream layout, determinism, speed, and useful greedy output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.testing import train_tokenizer, write_tiny_model

CPU = torch.device("cpu")

PROMPTS = [
    "# language: Python\ndef fibonacci(n):\n",
    "// language: JavaScript\nfunction add(a, b) {\n  return",
    "// language: Rust\nfn main() {\n    let x = ",
    "# language: Python\nimport os\n",
    "// language: C++\nint main() {\n    std::vector<int> v",
    "// language: Go\nfunc (s *Server) handle(w http.ResponseWriter, r *http.Request) {\n    name",
]


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_upstream_layout(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "chatglm"
    assert config["torch_dtype"] == "float32"
    assert config["multi_query_attention"] is True
    assert config["add_qkv_bias"] is True
    assert config["rmsnorm"] is True
    assert config["add_bias_linear"] is False
    pieces = read_tokenizer(tiny_model_dir).piece_count
    assert config["padded_vocab_size"] % 64 == 0
    assert pieces + 5 <= config["padded_vocab_size"] < pieces + 5 + 64

    index = json.loads((tiny_model_dir / "pytorch_model.bin.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors = torch.load(tiny_model_dir / shard, weights_only=True)
        assert {name for name, file in index["weight_map"].items() if file == shard} == set(tensors)
        state.update(tensors)
    assert len(state) == 7 * config["num_layers"] + 4
    assert state["transformer.rotary_pos_emb.inv_freq"].shape == (config["kv_channels"] // 4,)
    qkv = state["transformer.encoder.layers.0.self_attention.query_key_value.weight"]
    assert qkv.shape == ((4 + 2 * 2) * 16, 64)
    assert all(tensor.dtype == torch.float32 for tensor in state.values())
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in state.values())


def test_the_same_seed_writes_the_same_files(tmp_path: Path, tiny_model_dir: Path) -> None:
    first = write_tiny_model(tmp_path / "a")
    assert _files(first) == _files(tiny_model_dir)
    other_seed = _files(write_tiny_model(tmp_path / "b", seed=1))
    assert other_seed["tokenizer.model"] == _files(first)["tokenizer.model"]
    assert (
        other_seed["pytorch_model-00001-of-00002.bin"]
        != _files(first)["pytorch_model-00001-of-00002.bin"]
    )


def test_tokenizer_training_is_deterministic() -> None:
    assert train_tokenizer() == train_tokenizer()


def test_sizes_dtype_and_shards(tmp_path: Path) -> None:
    model_dir = write_tiny_model(
        tmp_path,
        num_layers=3,
        hidden_size=96,
        ffn_hidden_size=200,
        num_attention_heads=6,
        multi_query_group_num=3,
        kv_channels=32,
        seq_length=512,
        shards=3,
        vocab_pieces=600,
        padded_vocab_size=1024,
        dtype=torch.bfloat16,
    )
    config = json.loads((model_dir / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    assert config["padded_vocab_size"] == 1024
    assert read_tokenizer(model_dir).piece_count == 600
    assert len(list(model_dir.glob("pytorch_model-*-of-00003.bin"))) == 3
    model = load_model(model_dir, device=CPU, dtype=torch.bfloat16)
    assert model.config.num_hidden_layers == 3
    assert model.config.num_key_value_heads == 3
    assert model.model.layers[2].mlp.down_proj.weight.shape == (96, 200)


def test_vocabulary_can_match_the_tokenizer_exactly(tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path, vocab_pieces=600, vocab_multiple=1)
    config = json.loads((model_dir / "config.json").read_text())
    # The pieces and the five special tokens, unpadded: 605 is no multiple of 64.
    assert config["padded_vocab_size"] == read_tokenizer(model_dir).piece_count + 5 == 605
    model = load_model(model_dir, device=CPU, dtype=torch.float32)
    assert model.lm_head.weight.shape[0] == 605


def test_padded_vocab_must_hold_the_specials(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="padded_vocab_size"):
        write_tiny_model(tmp_path, padded_vocab_size=1000)


def _greedy(model: torch.nn.Module, ids: list[int], banned: list[int], steps: int) -> list[int]:
    out: list[int] = []
    cache = None
    pending = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(steps):
            result = model(input_ids=pending, cache=cache, use_cache=True)
            cache = result.cache
            logits = result.logits[0, -1]
            logits[banned] = float("-inf")
            token = int(logits.argmax())
            out.append(token)
            if token == 2:
                break
            pending = torch.tensor([[token]])
    return out


def test_greedy_continuations_are_varied(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, device=CPU, dtype=torch.float32)
    tokenizer = read_tokenizer(tiny_model_dir)
    banned = tokenizer.suppressed_ids(model.config.vocab_size)
    texts = []
    for prompt in PROMPTS:
        out = _greedy(model, tokenizer.prompt_ids(prompt), banned, steps=48)
        assert len(out) == 48, "no early eos"
        assert len(set(out)) >= 32, "no short loops"
        assert tokenizer.decode(out).strip()
        texts.append(tokenizer.decode(out))
    assert len(set(texts)) == len(texts)
    assert sum(text.count("\n") for text in texts) >= len(texts), "completions span lines"
