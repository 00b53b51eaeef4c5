"""This project beside llama.cpp, fastllm and chatglm.cpp: same random 6B-shape weights, same
prompt, one run.

Every engine runs the same CodeGeeX2-6B-shaped checkpoint with random weights (written once, in
the upstream layout and names, float16 safetensors) on the same 512 prompt token ids, greedy,
each configuration in its own process and the configurations interleaved round by round, so
they share whatever else the machine is doing. Each measurement is one JSON line:

    prefill_tok_s (the prompt, to the first token), decode_ms (median, best; per token after
    the first), rss_after_load_gb, rss_after_decode_gb, peak_rss_gb, load_s, version, load
    average before and after, weight_bytes (what a decode step reads of the weights), hog (busy
    loops running beside it), load_number (the configuration's loads so far in the run)

Engines and their forms of the weights:

- ``ours-int8``: this project as a user runs it on a CPU: ``codegeex2-lsp convert --quantize
  int8`` output, loaded with the default settings (the INT8 CPU kernel, float32), generating
  through ``LocalModel.generate`` (the server's decode loop) with the prefix cache off, plain
  decoding; ``ours-int8-speculative`` the same with speculation on (the server's default; on
  random weights and a random prompt the drafts hardly ever hit, so this shows its overhead);
  ``ours-int4`` the ``--quantize int4`` conversion (this project's INT4 CPU kernel, bfloat16
  activations), ``ours-int4-speculative`` the same with speculation on, and ``ours-bf16`` the
  float16 checkpoint loaded in bfloat16, mainly for its memory. Speculating configurations also
  report the drafter's counters (passes, tokens drafted, tokens accepted);
- ``fastllm-int4``/``fastllm-int8``: ``ftllm`` loading the safetensors directory, quantizing at
  load, one thread (its pool busy-waits: two threads on two cores ran about 20 times slower);
- ``chatglm.cpp-q4_0``/``q8_0``: ``chatglm-cpp`` (built from source) on GGML files written by its
  own converter's functions from the same tensors;
- ``llama.cpp-q4_0``/``q8_0``: ``llama-cpp-python`` built from source for this CPU, on GGUF files
  written by llama.cpp's own ``convert_hf_to_gguf.py`` (see :func:`write_gguf`) and quantized by
  its ``llama_model_quantize`` with default parameters; ``llama.cpp-q4_0-nommap`` loads without
  mmap, for its memory;
- ``bandwidth``: torch summing 2 GiB of float32 on the same threads, the memory's read speed.

This project's layout cache lives in a cache directory of the run's own, emptied at its start,
so each configuration's first load writes its layout and later ones map it. ``--hog N`` also
measures the ``--hog-configs`` beside N busy-looping processes.

Peers live in their own virtual environments, made by this script under ``--cache`` (outside the
repository, reused across runs), like the weights and converted forms.

    python benchmarks/bench_peers.py --rounds 2 --out benchmarks/results/peers.jsonl
    python benchmarks/bench_peers.py --rounds 2 --hog 2 --hog-configs ours-int4,llama.cpp-q4_0 \
        --configs ours-int4,ours-int8,llama.cpp-q4_0,llama.cpp-q8_0,bandwidth
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import runpy
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from machine import cpu_name, read_speeds

FTLLM = "ftllm==1.9.0"
CHATGLM_CPP = "chatglm-cpp==0.4.2"
LLAMA_CPP = "llama-cpp-python==0.3.36"
TORCH = "torch==2.13.0"

# name: (engine, form of the weights)
CONFIGS = {
    "ours-int8": ("ours", "int8"),
    "ours-int8-speculative": ("ours", "int8"),
    "ours-int4": ("ours", "int4"),
    "ours-int4-speculative": ("ours", "int4"),
    "ours-bf16": ("ours", "bf16"),
    "fastllm-int4": ("fastllm", "int4"),
    "fastllm-int8": ("fastllm", "int8"),
    "chatglm.cpp-q4_0": ("chatglm.cpp", "q4_0"),
    "chatglm.cpp-q8_0": ("chatglm.cpp", "q8_0"),
    "llama.cpp-q4_0": ("llama.cpp", "q4_0"),
    "llama.cpp-q4_0-nommap": ("llama.cpp", "q4_0"),
    "llama.cpp-q8_0": ("llama.cpp", "q8_0"),
    "bandwidth": ("bandwidth", ""),
}

DEFAULT_CACHE = Path.home() / ".cache" / "codegeex2-lsp" / "peers"


def _run(command: list[str], **env: str) -> None:
    subprocess.run(command, check=True, env={**os.environ, **env})


def peer_python(cache: Path, engine: str) -> Path:
    """The peer's virtual environment, made and filled on first use."""
    package = {"fastllm": FTLLM, "chatglm.cpp": CHATGLM_CPP, "llama.cpp": LLAMA_CPP}[engine]
    venv = cache / package.replace("==", "-")
    python = venv / "bin" / "python"
    if (venv / "ready").exists():
        return python
    _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    pip = [str(python), "-m", "pip", "install", "-q"]
    if engine == "llama.cpp":
        # Built from source for this CPU (about 11 minutes on two cores); the converter that
        # writes its GGUF files comes from the same source archive (see llama_cpp_source).
        source = llama_cpp_source(cache)
        _run([*pip, str(source.archive)], CMAKE_ARGS="-DGGML_NATIVE=ON")
        _run([*pip, TORCH, "numpy", "sentencepiece", "transformers", "protobuf"])
        _run([*pip, str(source.llama_cpp / "gguf-py")])
    elif engine == "fastllm":
        # Its declared dependencies pull CUDA builds of torch; the CPU library is bundled.
        _run([*pip, "--no-deps", FTLLM, "numpy", "pillow"])
    else:
        # Builds from source (many minutes on two cores); its bundled SentencePiece still asks
        # for a CMake policy older than CMake 4 keeps by default, and its setup.py builds with
        # an unlimited `make -j` unless the generator is Ninja (needs ninja on PATH), which
        # keeps to the cores. The converter needs torch.
        _run([*pip, CHATGLM_CPP], CMAKE_POLICY_VERSION_MINIMUM="3.5", CMAKE_GENERATOR="Ninja")
        _run([*pip, TORCH, "safetensors", "tabulate", "tqdm", "transformers"])
    (venv / "ready").touch()
    return python


def write_weights(directory: Path) -> Path:
    """The random 6B-shape checkpoint: upstream names and config, float16 safetensors shards."""
    if (directory / "ready").exists():
        return directory
    import sentencepiece as spm
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaTokenizerFast

    from codegeex2_lsp.backends.local.checkpoint import CONFIG_FILE, SAFETENSORS_INDEX
    from codegeex2_lsp.backends.tokenizer import TOKENIZER_FILE
    from codegeex2_lsp.testing import codegeex2_6b_shape, tiny_config, train_tokenizer
    from codegeex2_lsp.testing.weights import Weights

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_model = train_tokenizer(1000)
    (directory / TOKENIZER_FILE).write_bytes(tokenizer_model)
    shape = codegeex2_6b_shape()
    shape["dtype"] = torch.float16
    config = tiny_config(**shape)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # fastllm reads a tokenizer only through tokenizer.json and a class it knows; it is never
    # used here (every engine gets token ids), but loading fails without it.
    fast = LlamaTokenizerFast(vocab_file=str(directory / TOKENIZER_FILE), legacy=True)
    fast.save_pretrained(str(directory))
    tokenizer_config = directory / "tokenizer_config.json"
    fields = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    fields["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config.write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")
    tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_model)
    weights = Weights(config, tokenizer, seed=0)
    block = torch.randn(2**24 + 1, generator=torch.Generator().manual_seed(0)).mul_(0.02)
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    shard_bytes = 0
    shards = 0

    def flush() -> None:
        nonlocal shard, shard_bytes, shards
        shards += 1
        name = f"model-{shards:05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard, shard_bytes = {}, 0

    for index, (name, size) in enumerate(weights.shapes()):
        if name.endswith(("inv_freq", "layernorm.weight")):
            tensor = weights.tensor(name, size)
        else:
            # A block of normal values laid out from a different offset in each tensor:
            # random enough for speed, and written in a minute rather than half an hour.
            count = math.prod(size)
            start = (index * 7919) % block.numel()
            tensor = block.roll(-start).repeat(-(-count // block.numel()))[:count].view(size)
        shard[name] = tensor.to(torch.float16)
        shard_bytes += shard[name].nbytes
        if shard_bytes >= 2 * 10**9:
            flush()
    if shard:
        flush()
    index_json = {"metadata": {}, "weight_map": weight_map}
    (directory / SAFETENSORS_INDEX).write_text(json.dumps(index_json) + "\n", encoding="utf-8")
    (directory / "ready").touch()
    return directory


Source = Callable[[], Path]
"""The float16 checkpoint, written when first asked for: the converted forms are kept, so a
later run that has them all never needs the 12.5 GB of it."""


def convert_ours(source: Source, destination: Path, quantize: str) -> Path:
    """``codegeex2-lsp convert --quantize int8|int4``, as a user would prepare the model for a CPU;
    bf16 loads the float16 checkpoint itself."""
    if quantize == "bf16":
        return source()
    if not (destination / "ready").exists():
        command = [sys.executable, "-m", "codegeex2_lsp", "convert", str(source())]
        _run([*command, str(destination), "--quantize", quantize])
        (destination / "ready").touch()
    return destination


class LlamaCppSource:
    """llama-cpp-python's source archive, and its unpacked copy of llama.cpp."""

    def __init__(self, cache: Path) -> None:
        self.directory = cache / LLAMA_CPP.replace("==", "-src-")
        name = LLAMA_CPP.replace("-", "_").replace("==", "-")
        self.archive = self.directory / f"{name}.tar.gz"
        self.llama_cpp = self.directory / name / "vendor" / "llama.cpp"


def llama_cpp_source(cache: Path) -> LlamaCppSource:
    """Downloaded and unpacked on first use: the wheel is built from it, and its
    ``convert_hf_to_gguf.py`` is the converter a llama.cpp user runs."""
    import tarfile

    source = LlamaCppSource(cache)
    if not source.llama_cpp.exists():
        source.directory.mkdir(parents=True, exist_ok=True)
        download = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        _run([*download, "-d", str(source.directory), LLAMA_CPP])
        with tarfile.open(source.archive) as archive:
            archive.extractall(source.directory, filter="data")
    return source


def convert_gguf(python: Path, cache: Path, source: Source, ggml_type: str) -> Path:
    """A GGUF file for llama.cpp: llama.cpp's converter writes float16, and its quantizer
    (``llama_model_quantize``, default parameters) makes ``ggml_type`` of it."""
    destination = cache / f"llama-{ggml_type}.gguf"
    if not destination.exists():
        f16 = cache / "llama-f16.gguf"
        if not f16.exists():
            converter = llama_cpp_source(cache).llama_cpp
            _run([str(python), __file__, "--gguf", str(converter), str(source()), str(f16)])
        _run([str(python), __file__, "--quantize-gguf", ggml_type, str(f16), str(destination)])
    return destination


def write_gguf(converter: Path, source: Path, destination: Path) -> None:
    """llama.cpp's ``convert_hf_to_gguf.py``, unchanged but for the vocabulary: its ChatGLM
    vocabulary step loads the upstream tokenizer class (remote code, not at hand), so this
    gives it the same list from ``tokenizer.model`` directly: the SentencePiece pieces, then
    ``[MASK] [gMASK] [sMASK] sop eop`` as control tokens, then padding pieces up to
    ``padded_vocab_size``, with the ``chatglm-spm`` pre-tokenizer."""
    sys.path.insert(0, str(converter))
    import sentencepiece as spm
    from conversion import chatglm
    from conversion.base import SentencePieceTokenTypes as Types

    def set_vocab(self: Any) -> None:
        processor = spm.SentencePieceProcessor(model_file=str(source / "tokenizer.model"))
        tokens: list[bytes] = []
        scores: list[float] = []
        types: list[int] = []
        for token_id in range(processor.vocab_size()):
            tokens.append(processor.id_to_piece(token_id).encode("utf-8"))
            scores.append(processor.get_score(token_id))
            kind = Types.NORMAL
            if processor.is_unknown(token_id):
                kind = Types.UNKNOWN
            elif processor.is_control(token_id):
                kind = Types.CONTROL
            elif processor.is_byte(token_id):
                kind = Types.BYTE
            types.append(kind)
        for special in ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"):
            tokens.append(special.encode("utf-8"))
            scores.append(0.0)
            types.append(Types.CONTROL)
        while len(tokens) < self.hparams["padded_vocab_size"]:
            tokens.append(f"[PAD{len(tokens)}]".encode())
            scores.append(0.0)
            types.append(Types.UNUSED)
        self.gguf_writer.add_tokenizer_model("llama")
        self.gguf_writer.add_tokenizer_pre("chatglm-spm")
        self.gguf_writer.add_token_list(tokens)
        self.gguf_writer.add_token_scores(scores)
        self.gguf_writer.add_token_types(types)

    chatglm.ChatGLMModel.set_vocab = set_vocab
    partial = destination.with_suffix(".partial")
    sys.argv = ["convert_hf_to_gguf.py", str(source), "--outtype", "f16", "--outfile", str(partial)]
    runpy.run_path(str(converter / "convert_hf_to_gguf.py"), run_name="__main__")
    partial.rename(destination)


def quantize_gguf(ggml_type: str, source: Path, destination: Path) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ggml_type.upper()}")
    partial = destination.with_suffix(".partial")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params) != 0:
        raise RuntimeError(f"llama_model_quantize failed for {ggml_type}")
    partial.rename(destination)


def convert_ggml(python: Path, source: Source, destination: Path, ggml_type: str) -> Path:
    """A GGML file for chatglm.cpp, written by its converter's own functions."""
    if not destination.exists():
        _run([str(python), __file__, "--ggml", ggml_type, str(source()), str(destination)])
    return destination


def write_ggml(ggml_type: str, source: Path, destination: Path) -> None:
    """chatglm.cpp's converter, fed from the safetensors directly (it would load the model
    through the upstream remote code, which is not at hand): config, tokenizer, tensors in the
    order and float32 precision it reads them in."""
    from types import SimpleNamespace

    import torch
    from chatglm_cpp.convert import ChatGLM2Converter, GGMLType
    from safetensors import safe_open

    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    index = json.loads((source / "model.safetensors.index.json").read_text(encoding="utf-8"))

    class Tensors:
        def __getitem__(self, name: str) -> torch.Tensor:
            with safe_open(str(source / index["weight_map"][name]), "pt") as shard:
                return shard.get_tensor(name).float()

    # What the upstream config class adds to config.json: the pad id (0) and no prefix tuning.
    fields = {"pad_token_id": 0, "pre_seq_len": None, **config}
    model = SimpleNamespace(config=SimpleNamespace(**fields), state_dict=Tensors)
    tokenizer_proto = (source / "tokenizer.model").read_bytes()
    tokenizer = SimpleNamespace(
        tokenizer=SimpleNamespace(
            sp_model=SimpleNamespace(serialized_model_proto=lambda: tokenizer_proto)
        )
    )
    partial = destination.with_suffix(".partial")
    with open(partial, "wb") as f:
        ChatGLM2Converter.convert(f, model, tokenizer, GGMLType[ggml_type.upper()])
    partial.rename(destination)


def prompt_ids(length: int) -> list[int]:
    """The same random prompt for every engine."""
    rng = random.Random(1)
    return [rng.randrange(100, 60000) for _ in range(length)]


def _memory(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) * 1024 / 1e9, 2)
    return 0.0


Stepper = Callable[[list[int], int], list[float]]
"""Runs the prompt and ``n`` tokens after it; the times at which each token was known."""

COUNTERS: dict[str, int] = {}
"""What an engine counted during its run, reported beside the timings."""


def load_ours(path: Path, threads: int, speculative: bool, dtype: str) -> tuple[Stepper, str]:
    import torch

    import codegeex2_lsp
    from codegeex2_lsp.backends.generation import SamplingParams
    from codegeex2_lsp.backends.local.loader import load_local
    from codegeex2_lsp.settings.fields import Settings

    torch.set_num_threads(threads)
    # A converted checkpoint loads as stored; the float16 one is asked for in bfloat16.
    spec = Settings(model=str(path)).load_spec()
    if dtype == "bf16":
        spec = Settings(model=str(path), dtype="bfloat16", quantize="none").load_spec()
    model, description = load_local(spec)
    COUNTERS["weight_bytes"] = module_weight_bytes(model.model)

    def run(ids: list[int], n: int) -> list[float]:
        times: list[float] = []

        def stamp(text: str) -> bool:
            times.append(time.perf_counter())
            return False

        params = SamplingParams(max_new_tokens=n, speculative=speculative)
        result = model.generate(ids, params, should_stop=stamp, cache_bytes=0)
        if result.generated_tokens != n:
            raise RuntimeError(f"stopped after {result.generated_tokens} tokens")
        if speculative:
            COUNTERS.update({f"speculation_{k}": v for k, v in asdict(model.speculation).items()})
        return times

    version = f"codegeex2-lsp {codegeex2_lsp.__version__}, torch {torch.__version__}, "
    version += f"speculative {'on' if speculative else 'off'}: "
    # The cache directory says nothing about the engine, and is this machine's own.
    return run, version + description.replace(str(path), path.name)


def load_fastllm(path: Path, dtype: str, threads: int) -> tuple[Stepper, str]:
    import ctypes
    from importlib.metadata import version

    from ftllm import llm

    llm.set_cpu_threads(threads)
    model = llm.model(str(path), dtype=dtype)
    lib = llm.fastllm_lib

    def run(ids: list[int], n: int) -> list[float]:
        handle = lib.launch_response_llm_model(
            model.model,
            len(ids),
            (ctypes.c_int * len(ids))(*ids),
            n,
            0,
            False,
            1.0,
            1,
            1.0,
            1.0,
            False,
            0,
            None,
        )
        times = []
        for _ in range(n):
            if lib.fetch_response_llm_model(model.model, handle) < 0:
                raise RuntimeError(f"stopped after {len(times)} tokens")
            times.append(time.perf_counter())
        return times

    return run, f"ftllm {version('ftllm')}, {dtype}, {threads} thread(s)"


def load_chatglm_cpp(path: Path, threads: int) -> tuple[Stepper, str]:
    import chatglm_cpp

    pipeline = chatglm_cpp.Pipeline(str(path))

    def run(ids: list[int], n: int) -> list[float]:
        # 0.4.2 takes no thread count: ggml picks its own.
        config = chatglm_cpp._C.GenerationConfig(
            max_length=len(ids) + n + 1, max_new_tokens=n, do_sample=False
        )
        # As its own pipeline calls it: the whole sequence, and how much of it is cached.
        times = []
        sequence = list(ids)
        for _ in range(n):
            token = pipeline.model.generate_next_token(
                sequence, None, config, len(sequence) - 1 if times else 0, len(ids)
            )
            times.append(time.perf_counter())
            sequence.append(token)
        return times

    return run, f"chatglm-cpp {chatglm_cpp.__version__}, {path.stem}, ggml's own thread count"


def load_llama_cpp(path: Path, threads: int, mmap: bool, context: int) -> tuple[Stepper, str]:
    import llama_cpp

    model = llama_cpp.Llama(
        str(path),
        n_ctx=context,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        use_mmap=mmap,
        verbose=False,
    )
    COUNTERS["weight_bytes"] = gguf_weight_bytes(path)

    def run(ids: list[int], n: int) -> list[float]:
        times = []
        for _ in model.generate(ids, top_k=1, temp=0.0, reset=True):
            times.append(time.perf_counter())
            if len(times) == n:
                break
        return times

    version = f"llama-cpp-python {llama_cpp.__version__}, {path.stem}, {threads} threads"
    return run, version + f", mmap {'on' if mmap else 'off'}"


def module_weight_bytes(model: Any) -> int:
    """What one decode step of a torch model reads of its weights: every tensor but the
    embedding's, whose one row per token is too little to count."""
    total = 0
    for name, module in model.named_modules():
        if "embedding" not in name:
            tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
            total += sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    return total


def gguf_weight_bytes(path: Path) -> int:
    """The same for a GGUF file, from its tensor table."""
    from gguf import GGUFReader

    tensors = GGUFReader(str(path)).tensors
    return sum(int(tensor.n_bytes) for tensor in tensors if tensor.name != "token_embd.weight")


def measure_bandwidth(threads: int) -> dict[str, Any]:
    """The memory's read speed here, on the same threads as the engines."""
    import torch

    torch.set_num_threads(threads)
    speeds = read_speeds()
    return {
        "config": "bandwidth",
        "version": f"torch {torch.__version__}, float32 sum of 2 GiB",
        "threads": threads,
        "read_gb_s": round(max(speeds), 1),
        "read_gb_s_median": round(statistics.median(speeds), 1),
    }


def measure(name: str, path: Path, prompt: int, decode: int, threads: int) -> dict[str, Any]:
    engine, form = CONFIGS[name]
    if engine == "bandwidth":
        return measure_bandwidth(threads)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    if engine == "ours":
        run, version = load_ours(path, threads, name.endswith("speculative"), form)
    elif engine == "fastllm":
        run, version = load_fastllm(path, form, threads)
    elif engine == "llama.cpp":
        mmap = not name.endswith("nommap")
        run, version = load_llama_cpp(path, threads, mmap, prompt + decode + 16)
    else:
        run, version = load_chatglm_cpp(path, threads)
    load_s = time.perf_counter() - started
    rss_after_load = _memory("VmRSS")
    ids = prompt_ids(prompt)
    started = time.perf_counter()
    times = run(ids, decode + 1)
    steps = [b - a for a, b in itertools.pairwise(times)]
    return {
        "config": name,
        "version": version,
        "threads": threads,
        "prompt_tokens": prompt,
        "load_s": round(load_s, 1),
        "prefill_tok_s": round(prompt / (times[0] - started), 2),
        "decode_ms": round(1000 * statistics.median(steps), 1),
        "decode_ms_best": round(1000 * min(steps), 1),
        # Speculation emits several tokens per pass: the mean is its per-token cost.
        "decode_ms_mean": round(1000 * (times[-1] - times[0]) / len(steps), 1),
        "decode_steps": len(steps),
        "rss_after_load_gb": rss_after_load,
        "rss_after_decode_gb": _memory("VmRSS"),
        "peak_rss_gb": _memory("VmHWM"),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        **COUNTERS,
    }


def prepare(cache: Path, names: list[str]) -> dict[str, tuple[Path, Path]]:
    """Each configuration's interpreter and weights, made where missing."""

    def weights() -> Path:
        return write_weights(cache / "weights-f16")

    prepared = {}
    for name in names:
        engine, form = CONFIGS[name]
        if engine == "ours":
            converted = convert_ours(weights, cache / f"ours-{form}", form)
            prepared[name] = (Path(sys.executable), converted)
        elif engine == "bandwidth":
            prepared[name] = (Path(sys.executable), cache)
        elif engine == "fastllm":
            prepared[name] = (peer_python(cache, engine), weights())
        elif engine == "llama.cpp":
            python = peer_python(cache, engine)
            prepared[name] = (python, convert_gguf(python, cache, weights, form))
        else:
            python = peer_python(cache, engine)
            ggml = convert_ggml(python, weights, cache / f"chatglm-{form}.bin", form)
            prepared[name] = (python, ggml)
    return prepared


HOG = "print('spinning', flush=True)\nwhile True: pass"
"""One busy-looping process; it says when it spins, so no measurement starts before it."""


def start_hog(count: int) -> list[subprocess.Popen[str]]:
    """``count`` busy loops, each spinning before this returns: the other work on a laptop."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", HOG], stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    for hog in hogs:
        assert hog.stdout is not None
        hog.stdout.readline()
    return hogs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--decode", type=int, default=32, help="decode steps after the first")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--fastllm-threads", type=int, default=1, help="fastllm's pool busy-waits; 1 on 2 cores"
    )
    parser.add_argument("--hog", type=int, default=0, help="busy loops beside a second measurement")
    parser.add_argument(
        "--hog-configs",
        default="ours-int4,ours-int8,llama.cpp-q4_0,llama.cpp-q8_0",
        help="the configurations measured beside the hog as well as quiet",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, help="also append the JSON lines here")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ggml", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--gguf", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--quantize-gguf", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ggml:
        write_ggml(args.ggml[0], Path(args.ggml[1]), Path(args.ggml[2]))
        return 0
    if args.gguf:
        write_gguf(*(Path(arg) for arg in args.gguf))
        return 0
    if args.quantize_gguf:
        quantize_gguf(
            args.quantize_gguf[0], Path(args.quantize_gguf[1]), Path(args.quantize_gguf[2])
        )
        return 0
    if args.one:
        result = measure(args.one, args.path, args.prompt, args.decode, args.threads)
        print(json.dumps(result), flush=True)
        return 0
    names = args.configs.split(",")
    prepared = prepare(args.cache, names)
    # This project's kept layouts live in a cache of the run's own, emptied now: each
    # configuration's first load writes its layout, and later loads map it.
    xdg = args.cache / "xdg-cache"
    shutil.rmtree(xdg / "codegeex2-lsp" / "layouts", ignore_errors=True)
    environment = {**os.environ, "XDG_CACHE_HOME": str(xdg)}
    kernel = "from codegeex2_lsp.backends.local import int4_cpu; int4_cpu.fast_library()"
    subprocess.run([sys.executable, "-c", kernel], check=True, env=environment)
    if args.prepare_only:
        return 0
    hogged = set(args.hog_configs.split(",")) if args.hog else set()
    machine = {"machine": os.uname().machine, "cpu": cpu_name(), "cores": os.cpu_count()}
    loads: dict[str, int] = {}
    status = 0
    for round_number in range(1, args.rounds + 1):
        hogs = (0, args.hog) if args.hog else (0,)
        runs = [(name, hog) for name in names for hog in hogs if hog == 0 or name in hogged]
        # Alternate the order, so no configuration always runs right after the same other one.
        for name, hog in runs if round_number % 2 else runs[::-1]:
            python, path = prepared[name]
            threads = args.fastllm_threads if CONFIGS[name][0] == "fastllm" else args.threads
            command = [str(python), __file__, "--one", name, "--path", str(path)]
            command += ["--prompt", str(args.prompt), "--decode", str(args.decode)]
            command += ["--threads", str(threads)]
            hogs = start_hog(hog)
            try:
                done = subprocess.run(
                    command, check=False, capture_output=True, text=True, env=environment
                )
            finally:
                for process in hogs:
                    process.kill()
                    process.wait()
            loads[name] = loads.get(name, 0) + 1
            # Peers print their own lines too; ours is the last JSON object.
            found = [text for text in done.stdout.splitlines() if text.startswith('{"config"')]
            context = {"round": round_number, "hog": hog, "load_number": loads[name]}
            if done.returncode or not found:
                status = 1
                tail = (done.stderr + done.stdout).strip().splitlines()[-3:]
                line = json.dumps({"config": name, **context, "error": tail})
            else:
                line = json.dumps({**json.loads(found[-1]), **context, **machine})
            print(line, flush=True)
            if args.out:
                with args.out.open("a", encoding="utf-8") as out:
                    out.write(line + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
