"""Speed and memory of the full-size CodeGeeX2-6B architecture in each precision, random weights.

Nothing is downloaded: the model is built on the meta device and every weight is materialised
directly in its target form (16-bit floats, or INT8/INT4 integers with scales), so no float32
copy of 6B parameters ever exists. Each configuration runs in its own process, so its peak
memory is its own, and prints one JSON line:

    load_s, rss_after_load_gb, with_8k_kv_gb (that plus an 8,192-token KV cache, computed),
    peak_rss_gb, prefill_tok_s_<N> for each prompt length (prefilled in the server's chunks),
    decode_ms_per_token (median)

``eager`` is plain transformers (eager attention, no quantization) in the same precision, the
baseline (``eager-fp32`` beside ``eager-bf16`` separates the gain of quantization from that of
the dtype); the others are this project's loading paths (SDPA, quantized linears).
``--rounds`` repeats the configurations, alternating their order, so compared ones share the
machine's interference. ``--model DIR`` loads a checkpoint through the engine's loader instead
of building random weights in place: the memory a user's process holds, memory-mapped tensors
included.

    python benchmarks/bench_model.py --configs eager-bf16,int8,int4 --prompts 512,2048
    python benchmarks/bench_model.py --configs int8,int4 --rounds 2 --model DIR
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache, GlmForCausalLM

from codegeex2_lsp.backends.local import attention
from codegeex2_lsp.backends.local.checkpoint import StoredQuantization, glm_config, linear_names
from codegeex2_lsp.backends.local.inference import PREFILL_CHUNK
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.local.quantize import (
    QuantLinear,
    bits_of,
    swap_linears,
)
from codegeex2_lsp.testing import codegeex2_6b_shape, tiny_config

# name: (attention, dtype, quantize)
CONFIGS = {
    "eager-bf16": ("eager", torch.bfloat16, "none"),
    "eager-fp32": ("eager", torch.float32, "none"),
    "bf16": (attention.NAME, torch.bfloat16, "none"),
    "fp32": (attention.NAME, torch.float32, "none"),
    "int8": (attention.NAME, torch.float32, "int8"),
    "int8-bf16": (attention.NAME, torch.bfloat16, "int8"),
    "int4": (attention.NAME, torch.bfloat16, "int4"),
}


def full_size_config(layers: int) -> dict[str, object]:
    return tiny_config(**codegeex2_6b_shape(layers))


def build(name: str, layers: int, device: torch.device) -> GlmForCausalLM:
    """The model with random weights in the configuration's precision."""
    implementation, dtype, quantize = CONFIGS[name]
    config = glm_config(full_size_config(layers))
    config._attn_implementation = implementation
    with torch.device("meta"):
        model = GlmForCausalLM(config)
    bits = bits_of(quantize)
    quantized = linear_names(config, lm_head=True) if bits else set()
    swap_linears(model, bits, quantized)
    generator = torch.Generator().manual_seed(0)
    for module_name in sorted(quantized):
        module = model.get_submodule(module_name)
        assert isinstance(module, QuantLinear)
        top = 2 ** (bits - 1)
        q = torch.randint(-top, top, (module.out_features, module.in_features), dtype=torch.int8)
        group = StoredQuantization.made_now(bits).group_for(module.in_features)
        scale = torch.full(
            (module.out_features, module.in_features // (group or module.in_features)), 0.02 / top
        )
        module.set_weight(q.to(device), scale.to(device), dtype)
    state = {}
    for tensor_name, tensor in model.state_dict().items():
        if ".kernel." in tensor_name:
            continue
        if "norm" in tensor_name:
            value = torch.ones(tensor.shape, dtype=dtype, device=device)
        elif tensor_name == "model.embed_tokens.weight" and bits:
            value = torch.randn(tensor.shape, generator=generator, dtype=torch.bfloat16)
        else:
            value = torch.empty(tensor.shape, dtype=dtype, device=device).normal_(0, 0.02)
        state[tensor_name] = value.to(device)
    model.load_state_dict(state, strict=False, assign=True)
    embed = model.model.embed_tokens
    if embed.weight.dtype != dtype:
        embed.register_forward_hook(lambda module, args, output: output.to(dtype))
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config).to(device)
    model.requires_grad_(False)
    return model.eval()


def prefill(model: GlmForCausalLM, ids: torch.Tensor) -> tuple[Any, DynamicCache]:
    """Prefill as the server does, in chunks of PREFILL_CHUNK tokens."""
    cache = DynamicCache(config=model.config)
    logits = None
    for start in range(0, ids.shape[1], PREFILL_CHUNK):
        chunk = ids[:, start : start + PREFILL_CHUNK]
        logits = model(input_ids=chunk, cache=cache, use_cache=True, logits_to_keep=1)
    return logits, cache


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def load(name: str, model_dir: Path, device: torch.device) -> GlmForCausalLM:
    """The checkpoint in ``model_dir`` through the engine's loader, in the configuration's
    precision: what a user's process holds, memory-mapped tensors included."""
    implementation, dtype, quantize = CONFIGS[name]
    model = load_model(model_dir, device=device, dtype=dtype, quantize=quantize)
    model.set_attn_implementation(implementation)
    return model


@torch.inference_mode()
def measure(
    name: str, layers: int, prompts: list[int], decode: int, threads: int, model_dir: Path | None
) -> dict[str, object]:
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    started = time.perf_counter()
    if model_dir is None:
        model = build(name, layers, device)
    else:
        model = load(name, model_dir, device)
        layers = model.config.num_hidden_layers
    result: dict[str, object] = {
        "config": name,
        "device": str(device),
        "weights": "random, built in place"
        if model_dir is None
        else f"loaded from {model_dir.name}",
        "layers": layers,
        "threads": threads,
        "load_s": round(time.perf_counter() - started, 1),
    }
    result["rss_after_load_gb"] = round(_rss() / 1e9, 2)
    kv_8k = 8192 * model.config.num_hidden_layers * 2 * model.config.num_key_value_heads
    kv_8k *= model.config.head_dim * torch.finfo(CONFIGS[name][1]).bits // 8
    result["kv_cache_8k_gb"] = round(kv_8k / 1e9, 2)
    result["with_8k_kv_gb"] = round((_rss() + kv_8k) / 1e9, 2)
    ids = torch.randint(100, 60000, (1, max(prompts)), generator=torch.Generator().manual_seed(1))
    for length in prompts:
        started = time.perf_counter()
        logits, cache = prefill(model, ids[:, :length])
        result[f"prefill_tok_s_{length}"] = round(length / (time.perf_counter() - started), 2)
    logits, cache = prefill(model, ids[:, : prompts[0]])
    token = logits.logits[:, -1:].argmax(-1)
    times = []
    for _ in range(decode):
        started = time.perf_counter()
        logits = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
        token = logits.logits[:, -1:].argmax(-1)
        times.append(time.perf_counter() - started)
    result["decode_ms_per_token"] = round(1000 * statistics.median(times), 1)
    # The fastest step shows what the CPU does when nothing else competes for it.
    result["decode_ms_best"] = round(1000 * min(times), 1)
    result["load_average"] = round(os.getloadavg()[0], 2)
    result["decode_steps"] = decode
    result["decode_after_tokens"] = prompts[0]
    result["peak_rss_gb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="eager-bf16,int8,int4")
    parser.add_argument("--prompts", default="512,2048", help="prompt lengths, comma-separated")
    parser.add_argument("--decode", type=int, default=64, help="decode steps (median reported)")
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--model", type=Path, help="load this checkpoint through the engine's loader instead"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the configurations this often, interleaved"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    prompts = [int(p) for p in args.prompts.split(",")]
    if args.one:
        result = measure(args.one, args.layers, prompts, args.decode, args.threads, args.model)
        print(json.dumps(result), flush=True)
        return 0
    status = 0
    names = args.configs.split(",")
    for round_number in range(1, args.rounds + 1):
        # Alternate the order, so no configuration always follows the same other one.
        for name in names if round_number % 2 else names[::-1]:
            command = [sys.executable, __file__, "--one", name, "--prompts", args.prompts]
            command += ["--decode", str(args.decode), "--layers", str(args.layers)]
            command += ["--threads", str(args.threads)]
            if args.model is not None:
                command += ["--model", str(args.model)]
            done = subprocess.run(command, check=False, capture_output=True, text=True)
            status |= done.returncode
            lines = done.stdout.strip().splitlines()
            if done.returncode or not lines:
                print(json.dumps({"config": name, "error": done.stderr[-500:]}), flush=True)
            else:
                print(json.dumps({**json.loads(lines[-1]), "round": round_number}), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
