"""Loading upstream-layout ChatGLM2 checkpoints onto GlmForCausalLM, and the errors users see."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors import safe_open
from safetensors.torch import save_file

from codegeex2_lsp.backends.local import attention
from codegeex2_lsp.backends.local.checkpoint import (
    glm_config,
    read_config,
    read_weights,
)
from codegeex2_lsp.backends.local.hub import resolve_model_dir
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.errors import LoadError

CPU = torch.device("cpu")


def _copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(model_dir.glob("pytorch_model-*.bin")):
        state.update(torch.load(shard, weights_only=True))
    return state


def _single_file(model_dir: Path) -> dict[str, torch.Tensor]:
    """Replace the shards and index by one state dict, which the caller saves."""
    state = _state_dict(model_dir)
    for shard in model_dir.glob("pytorch_model-*.bin"):
        shard.unlink()
    (model_dir / "pytorch_model.bin.index.json").unlink()
    return state


def _edit_config(model_dir: Path, **changes: object) -> None:
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[1001, 1003, 300, 13, 400, 500, 2]])
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> torch.nn.Module:
    return load_model(tiny_model_dir, device=CPU, dtype=torch.float32)


def test_config_mapping(tiny_model_dir: Path) -> None:
    chatglm = read_config(tiny_model_dir)
    config = glm_config(chatglm)
    assert config.vocab_size == chatglm["padded_vocab_size"]
    assert config.hidden_size == 64
    assert config.intermediate_size == 172
    assert config.num_hidden_layers == 2
    assert config.num_attention_heads == 4
    assert config.num_key_value_heads == 2
    assert config.head_dim == 16
    assert config.max_position_embeddings == 4096
    assert config.rms_norm_eps == 1e-5
    assert config.attention_bias is True
    assert config.tie_word_embeddings is False
    assert config.hidden_act == "silu"
    assert config.rope_parameters["rope_theta"] == 10000.0
    assert config.rope_parameters["partial_rotary_factor"] == 0.5
    assert (config.pad_token_id, config.eos_token_id) == (0, 2)


def test_config_mapping_of_variants(tiny_model_dir: Path) -> None:
    chatglm = read_config(tiny_model_dir)
    long_context = glm_config({**chatglm, "rope_ratio": 50})
    assert long_context.rope_parameters["rope_theta"] == 500000.0
    no_mqa = glm_config({**chatglm, "multi_query_attention": False})
    assert no_mqa.num_key_value_heads == no_mqa.num_attention_heads


def test_loads_bin_shards(model: torch.nn.Module, tiny_model_dir: Path) -> None:
    assert not any(p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not model.training
    assert model.config._attn_implementation == attention.NAME
    assert model.generation_config.eos_token_id == 2
    assert model.generation_config.pad_token_id == 0
    state = _state_dict(tiny_model_dir)
    layer = "transformer.encoder.layers.1.self_attention.query_key_value"
    qkv = torch.cat([getattr(model.model.layers[1].self_attn, f"{n}_proj").weight for n in "qkv"])
    assert torch.equal(qkv, state[f"{layer}.weight"])
    bias = torch.cat([getattr(model.model.layers[1].self_attn, f"{n}_proj").bias for n in "qkv"])
    assert torch.equal(bias, state[f"{layer}.bias"])
    assert torch.equal(model.lm_head.weight, state["transformer.output_layer.weight"])
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_rope_frequencies_are_recomputed_in_float32(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, device=CPU, dtype=torch.bfloat16)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.config.dtype == torch.bfloat16
    inv_freq = model.model.rotary_emb.inv_freq
    assert inv_freq.dtype == torch.float32
    expected = 1.0 / 10000 ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8)
    torch.testing.assert_close(inv_freq, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_embedding_stays_as_stored(
    tiny_model_dir: Path, tmp_path: Path, dtype: torch.dtype
) -> None:
    """A 16-bit table is not widened or converted to the other 16-bit type (on the CPU it stays
    the memory-mapped file), and the lookup's output is cast exactly as a converted table would
    give it."""
    model_dir = _copy(tiny_model_dir, tmp_path)
    state = {name: tensor.to(torch.float16) for name, tensor in _single_file(model_dir).items()}
    save_file(state, model_dir / "model.safetensors")
    model = load_model(model_dir, device=CPU, dtype=dtype)
    table = model.model.embed_tokens.weight
    assert table.dtype == torch.float16
    with safe_open(model_dir / "model.safetensors", "pt") as stored:
        mapped = stored.get_tensor("transformer.embedding.word_embeddings.weight")
    assert torch.equal(table, mapped)
    ids = torch.tensor([[3, 17, 250]])
    looked_up = model.model.embed_tokens(ids)
    assert looked_up.dtype == dtype
    assert torch.equal(looked_up, table.to(dtype)[ids])
    assert all(p.dtype == dtype for n, p in model.named_parameters() if "embed" not in n)


def test_each_tensor_is_read_in_a_mapping_of_its_own_and_never_writes_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "weights.safetensors"
    stored = {
        "a": torch.arange(6, dtype=torch.float32),
        "b": torch.randn(3, 5).half(),
        "c": torch.randint(-128, 127, (4, 8), dtype=torch.int8),
        "empty": torch.zeros(0, 3),
    }
    save_file(stored, path)
    before = path.read_bytes()
    read = dict(read_weights(path))
    assert read.keys() == stored.keys()
    for name, tensor in read.items():
        assert tensor.dtype == stored[name].dtype
        assert torch.equal(tensor, stored[name])
        # Its own bytes only: letting it go releases what was read of it.
        assert tensor.untyped_storage().nbytes() == stored[name].numel() * tensor.element_size()
    read["b"].zero_()
    assert path.read_bytes() == before


def test_a_tensor_outside_its_file_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({"a": torch.arange(64, dtype=torch.float32)}, path)
    path.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(LoadError, match=r"cannot read weights\.safetensors"):
        list(read_weights(path))


def test_a_16_bit_embedding_from_bin_shards_is_kept_as_stored(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    state = {name: tensor.to(torch.float16) for name, tensor in _single_file(model_dir).items()}
    torch.save(state, model_dir / "pytorch_model.bin")
    model = load_model(model_dir, device=CPU, dtype=torch.float32)
    table = model.model.embed_tokens.weight
    assert table.dtype == torch.float16
    assert torch.equal(table, state["transformer.embedding.word_embeddings.weight"])


def test_loads_single_bin(model: torch.nn.Module, tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    torch.save(_single_file(model_dir), model_dir / "pytorch_model.bin")
    single = load_model(model_dir, device=CPU, dtype=torch.float32)
    assert torch.equal(_logits(single), _logits(model))


def test_loads_safetensors(model: torch.nn.Module, tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    save_file(_single_file(model_dir), model_dir / "model.safetensors")
    single = load_model(model_dir, device=CPU, dtype=torch.float32)
    assert torch.equal(_logits(single), _logits(model))


def test_loads_sharded_safetensors(
    model: torch.nn.Module, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    index = json.loads((model_dir / "pytorch_model.bin.index.json").read_text())
    weight_map = {}
    for shard in sorted(model_dir.glob("pytorch_model-*.bin")):
        name = shard.name.replace("pytorch_model", "model").replace(".bin", ".safetensors")
        tensors = torch.load(shard, weights_only=True)
        save_file(tensors, model_dir / name)
        weight_map.update(dict.fromkeys(tensors, name))
        shard.unlink()
    (model_dir / "pytorch_model.bin.index.json").unlink()
    index["weight_map"] = weight_map
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    sharded = load_model(model_dir, device=CPU, dtype=torch.float32)
    assert torch.equal(_logits(sharded), _logits(model))


def test_load_tokenizer(tiny_model_dir: Path) -> None:
    tokenizer = read_tokenizer(tiny_model_dir)
    assert tokenizer.piece_count + 5 <= read_config(tiny_model_dir)["padded_vocab_size"]


def _load_error(model_dir: Path) -> LoadError:
    with pytest.raises(LoadError) as caught:
        load_model(model_dir, device=CPU, dtype=torch.float32)
    assert caught.value.hint
    return caught.value


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="does not exist") as caught:
        resolve_model_dir(str(tmp_path / "nowhere"))
    assert "codegeex2.model" in caught.value.hint
    with pytest.raises(LoadError, match="does not exist"):
        load_model(tmp_path / "nowhere", device=CPU, dtype=torch.float32)
    (tmp_path / "file").write_text("")
    with pytest.raises(LoadError, match="is not a directory"):
        resolve_model_dir(str(tmp_path / "file"))


def test_local_directory_is_used_as_is(tiny_model_dir: Path) -> None:
    assert resolve_model_dir(str(tiny_model_dir)) == tiny_model_dir


def test_not_a_chatglm_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    _edit_config(model_dir, model_type="llama")
    with pytest.raises(LoadError, match="'llama'"):
        resolve_model_dir(str(model_dir))
    (model_dir / "config.json").unlink()
    assert "config.json" in str(_load_error(model_dir))


def test_unsupported_variant(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    _edit_config(model_dir, add_bias_linear=True)
    assert "add_bias_linear" in str(_load_error(model_dir))


def test_incomplete_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    _edit_config(model_dir, kv_channels=None)
    assert "kv_channels" in str(_load_error(model_dir))


def test_quantized_config_with_float_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    _edit_config(model_dir, quantization_bit=4)
    error = _load_error(model_dir)
    assert "INT4" in str(error)
    assert "float32" in str(error)


def test_unknown_quantization_bit(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    _edit_config(model_dir, quantization_bit=3)
    assert "only 4 and 8" in str(_load_error(model_dir))


def test_missing_shard(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    (model_dir / "pytorch_model-00002-of-00002.bin").unlink()
    error = _load_error(model_dir)
    assert "pytorch_model-00002-of-00002.bin" in str(error)
    assert "download" in error.hint


@pytest.mark.parametrize("outside", ["../outside.bin", "sub/../../outside.bin", "ABSOLUTE"])
def test_shards_outside_the_model_directory_are_refused(
    tiny_model_dir: Path, tmp_path: Path, outside: str
) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    # A real shard there, so only the refusal can stop it from being read.
    shutil.copyfile(model_dir / "pytorch_model-00001-of-00002.bin", tmp_path / "outside.bin")
    name = str(tmp_path / "outside.bin") if outside == "ABSOLUTE" else outside
    index_path = model_dir / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {
        tensor: name if file.startswith("pytorch_model-00001") else file
        for tensor, file in index["weight_map"].items()
    }
    index_path.write_text(json.dumps(index))
    error = _load_error(model_dir)
    assert "outside the model directory" in error.message
    assert repr(name) in error.message


def test_wrong_shape(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    shard = model_dir / "pytorch_model-00001-of-00002.bin"
    state = torch.load(shard, weights_only=True)
    name = "transformer.encoder.layers.0.mlp.dense_4h_to_h.weight"
    state[name] = state[name][:, :-1]
    torch.save(state, shard)
    assert name in str(_load_error(model_dir))


def test_missing_and_unexpected_tensors(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    shard = model_dir / "pytorch_model-00002-of-00002.bin"
    state = torch.load(shard, weights_only=True)
    del state["transformer.output_layer.weight"]
    torch.save(state, shard)
    assert "lm_head.weight" in str(_load_error(model_dir))
    state["transformer.encoder.layers.0.mlp.dense_h_to_4h.bias"] = torch.zeros(3)
    torch.save(state, shard)
    assert "dense_h_to_4h.bias" in str(_load_error(model_dir))


def test_damaged_shard(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    (model_dir / "pytorch_model-00001-of-00002.bin").write_bytes(b"not a checkpoint")
    assert "pytorch_model-00001-of-00002.bin" in str(_load_error(model_dir))


def test_missing_tokenizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path)
    (model_dir / "tokenizer.model").unlink()
    with pytest.raises(LoadError, match=r"tokenizer\.model"):
        read_tokenizer(model_dir)
    (model_dir / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(LoadError, match="cannot read") as caught:
        read_tokenizer(model_dir)
    assert "download" in caught.value.hint


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache with downloads off, as HF_HOME and HF_HUB_OFFLINE=1 would set."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return home / "hub"


def test_hub_id_offline_and_not_cached(offline_hub: Path) -> None:
    messages: list[str] = []
    with pytest.raises(LoadError, match="HF_HUB_OFFLINE") as caught:
        resolve_model_dir("THUDM/codegeex2-6b", progress=messages.append)
    assert "THUDM/codegeex2-6b" in str(caught.value)
    assert "local directory" in caught.value.hint
    assert messages == ["Fetching THUDM/codegeex2-6b"]


def test_invalid_hub_id(offline_hub: Path) -> None:
    with pytest.raises(LoadError, match="no local directory or hub repository") as caught:
        resolve_model_dir("not a repo!")
    assert "spelling" in caught.value.hint


def test_hub_id_offline_from_cache(offline_hub: Path, tiny_model_dir: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub / "models--THUDM--codegeex2-6b"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model_dir = resolve_model_dir("THUDM/codegeex2-6b")
    assert model_dir == repo / "snapshots" / commit
    assert read_config(model_dir)["model_type"] == "chatglm"
