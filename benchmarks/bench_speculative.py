"""Speculative decoding's costs and correctness, since random weights accept almost no drafts.

    verify   the cost of one forward pass over 1..N tokens after a 512-token prompt, against
             one token (plain decode), on the full-size CodeGeeX2-6B shape with random weights;
             also a greedy run with speculation on and off on those weights (nothing repeats,
             so this is what drafting costs when it never helps). On CUDA, ``--compiled`` adds
             the static cache's compiled passes (one token, and the draft-checking width).
    e2e      the mechanism end to end on a tiny checkpoint whose greedy output loops: the same
             ids with speculation on and off, and the time each takes, interleaved.
    identity greedy output with speculation against plain decoding on each decode path
             (``--modes dynamic,static,compiled``), on tiny checkpoints, on any device.

Each measurement is one JSON line on stdout. How often drafts are accepted on real code, and
what that projects to with these costs, is ``bench_acceptance.py``'s.

    python benchmarks/bench_speculative.py verify --configs int8 > verify.jsonl
    python benchmarks/bench_speculative.py e2e
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_model import build, prefill
from transformers import DynamicCache

from codegeex2_lsp.backends.generation import SamplingParams
from codegeex2_lsp.backends.local.inference import LocalModel
from codegeex2_lsp.backends.local.kvcache import StaticDecoder
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.testing import TINY_CORPUS, train_tokenizer, write_tiny_model

LOOPING_SEED = 2
"""The tiny checkpoint of this seed loops in its greedy output (as the tests use it)."""


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def emit(record: dict[str, Any]) -> None:
    record.setdefault("load_average", _load())
    print(json.dumps(record), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# 1. verify: the cost of checking n tokens in one pass


@torch.inference_mode()
def verify(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    for name in args.configs.split(","):
        started = time.perf_counter()
        model = build(name, args.layers, device)
        load_s = time.perf_counter() - started
        ids = torch.randint(300, 900, (1, args.prompt), generator=torch.Generator().manual_seed(1))
        _, cache = prefill(model, ids.to(device))
        widths = list(range(1, args.max_n + 1)) if args.rounds else []
        times: dict[int, list[float]] = {n: [] for n in widths}
        for round_number in range(args.rounds):
            # Rotate the order so that no width always runs first after a pause.
            shift = round_number % len(widths)
            for n in widths[shift:] + widths[:shift]:
                tokens = torch.randint(300, 900, (1, n), device=device)
                _sync(device)
                start = time.perf_counter()
                out = model(input_ids=tokens, cache=cache, use_cache=True, logits_to_keep=n)
                out.logits[0].argmax(dim=-1).tolist()
                times[n].append(time.perf_counter() - start)
                cache.crop(-n)
        one = statistics.median(times[1]) if widths else 0.0
        for n in widths:
            emit(
                {
                    "part": "verify",
                    "config": name,
                    "device": str(device),
                    "path": "dynamic",
                    "layers": args.layers,
                    "after_tokens": args.prompt,
                    "tokens": n,
                    "ms_median": round(1000 * statistics.median(times[n]), 2),
                    "ms_best": round(1000 * min(times[n]), 2),
                    "relative_to_one": round(statistics.median(times[n]) / one, 3),
                    "rounds": args.rounds,
                    "threads": torch.get_num_threads(),
                    "load_s": round(load_s, 1),
                }
            )
        if args.compiled:
            _verify_static(model, cache, ids.shape[1], name, args)
        if args.greedy_tokens:
            _greedy_on_random_weights(model, name, args)
        del model, cache
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _verify_static(
    model: Any, cache: DynamicCache, count: int, name: str, args: argparse.Namespace
) -> None:
    """The compiled fixed-shape passes the server decodes with on CUDA: 1 and the draft width."""
    device = torch.device(args.device)
    started = time.perf_counter()
    suppress = torch.zeros(model.config.vocab_size, device=device)
    length = -(-(count + 64) // 256) * 256
    static = StaticDecoder(model, length, compiled=True, suppress=suppress)
    static.warm_up(cache, count)
    compile_s = time.perf_counter() - started
    times: dict[int, list[float]] = {1: [], static.width: []}
    for _ in range(args.rounds):
        for n in times:
            static.load(cache, count)
            _sync(device)
            start = time.perf_counter()
            static.run([500] * n).argmax(dim=-1).tolist()
            times[n].append(time.perf_counter() - start)
    one = statistics.median(times[1])
    for n, spent in times.items():
        emit(
            {
                "part": "verify",
                "config": name,
                "device": str(device),
                "path": "compiled",
                "layers": args.layers,
                "after_tokens": count,
                "tokens": n,
                "ms_median": round(1000 * statistics.median(spent), 2),
                "ms_best": round(1000 * min(spent), 2),
                "relative_to_one": round(statistics.median(spent) / one, 3),
                "rounds": args.rounds,
                "compile_s": round(compile_s, 1),
            }
        )


def _greedy_on_random_weights(model: Any, name: str, args: argparse.Namespace) -> None:
    """Speculation on and off, interleaved, on weights whose output the text does not predict."""
    with tempfile.TemporaryDirectory() as directory:
        tokenizer_file = Path(directory) / "tokenizer.model"
        tokenizer_file.write_bytes(train_tokenizer())
        local = LocalModel(model, read_tokenizer(Path(directory)))
    prompt = [*local.tokenizer.prefix_ids, *local.tokenizer.encode(TINY_CORPUS[:4000])]
    prompt = prompt[: args.prompt]
    plain = SamplingParams(max_new_tokens=args.greedy_tokens)
    # Once untimed: the first run prefills the prompt and warms the kernels up.
    local.generate(prompt, plain, cache_key="bench")
    runs: dict[bool, list[float]] = {False: [], True: []}
    outputs: dict[bool, list[int]] = {}
    for _ in range(args.greedy_repeats):
        for speculative in (False, True):
            params = dataclasses.replace(plain, speculative=speculative)
            before = dataclasses.replace(local.speculation)
            result = local.generate(prompt, params, cache_key="bench")
            runs[speculative].append(result.decode_seconds / max(1, result.generated_tokens - 1))
            outputs[speculative] = result.ids
            drafted = local.speculation.drafted - before.drafted
            accepted = local.speculation.accepted - before.accepted
    plain_ms = 1000 * statistics.median(runs[False])
    speculative_ms = 1000 * statistics.median(runs[True])
    emit(
        {
            "part": "no-hit",
            "config": name,
            "device": args.device,
            "layers": args.layers,
            "prompt_tokens": len(prompt),
            "generated_tokens": len(outputs[True]),
            "plain_ms_per_token": round(plain_ms, 2),
            "speculative_ms_per_token": round(speculative_ms, 2),
            "slowdown": round(speculative_ms / plain_ms - 1, 4),
            "identical": outputs[True] == outputs[False],
            "drafted_last_run": drafted,
            "accepted_last_run": accepted,
            "repeats": args.greedy_repeats,
        }
    )


# ---------------------------------------------------------------------------------------------
# e2e: the mechanism on a tiny checkpoint that loops


def e2e(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        model_dir = write_tiny_model(Path(directory), seed=args.seed, num_layers=args.layers)
        model = LocalModel(
            load_model(model_dir, device=torch.device("cpu"), dtype=torch.float32),
            read_tokenizer(model_dir),
        )
    rng = random.Random(0)
    prompts = []
    for _ in range(args.prompts):
        if args.random_prompts:
            # Random pieces: nothing in the prompt repeats, so drafts rarely hit.
            pieces = [rng.randrange(300, model.tokenizer.piece_count) for _ in range(500)]
            prompts.append([*model.tokenizer.prefix_ids, *pieces])
            continue
        start = rng.randrange(0, len(TINY_CORPUS) - 2000)
        prompts.append(model.tokenizer.prompt_ids(TINY_CORPUS[start : start + 1500]))
    plain = SamplingParams(max_new_tokens=args.tokens)
    times: dict[bool, list[float]] = {False: [], True: []}
    identical = True
    before = dataclasses.replace(model.speculation)
    for _ in range(args.repeats):
        for prompt in prompts:
            outputs = {}
            for speculative in (False, True):
                params = dataclasses.replace(plain, speculative=speculative)
                result = model.generate(prompt, params, cache_key="e2e")
                times[speculative].append(result.decode_seconds)
                outputs[speculative] = result.ids
            identical &= outputs[True] == outputs[False]
    total = model.speculation
    plain_s, speculative_s = sum(times[False]), sum(times[True])
    emit(
        {
            "part": "e2e",
            "model": f"tiny, seed {args.seed}, {args.layers} layers",
            "prompts_kind": "random pieces" if args.random_prompts else "code",
            "prompts": len(prompts),
            "repeats": args.repeats,
            "new_tokens": args.tokens,
            "identical": identical,
            "plain_decode_s": round(plain_s, 3),
            "speculative_decode_s": round(speculative_s, 3),
            "speedup": round(plain_s / speculative_s, 3),
            "passes": total.steps - before.steps,
            "drafted": total.drafted - before.drafted,
            "accepted": total.accepted - before.accepted,
            "threads": torch.get_num_threads(),
        }
    )


# ---------------------------------------------------------------------------------------------
# identity: greedy output with speculation equals plain decoding, on every decode path


@torch.inference_mode()
def identity(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    for seed in (0, LOOPING_SEED):
        with tempfile.TemporaryDirectory() as directory:
            model_dir = write_tiny_model(Path(directory), seed=seed)
            weights = load_model(model_dir, device=device, dtype=torch.float32)
            tokenizer = read_tokenizer(model_dir)
        reference = LocalModel(weights, tokenizer)
        plain = SamplingParams(max_new_tokens=args.tokens)
        prompts = []
        for start in (0, 1500, 3000):
            ids = tokenizer.prompt_ids(TINY_CORPUS[start : start + 1200])
            written = reference.generate(ids, plain, cache_bytes=0).ids
            prompts.append(ids)
            # The model's own output again: drafts from the prompt hit.
            prompts.append([*ids, *written, *tokenizer.encode("\n"), *written[:3]])
        expected = [reference.generate(ids, plain, cache_bytes=0).ids for ids in prompts]
        for mode in args.modes.split(","):
            model = LocalModel(weights, tokenizer)
            started = time.perf_counter()
            model.set_decode_mode(mode, 2048)  # type: ignore[arg-type]
            ready_s = time.perf_counter() - started
            speculative = dataclasses.replace(plain, speculative=True)
            same = 0
            paths = set()
            for ids, want in zip(prompts, expected, strict=True):
                for _ in range(2):  # the second time from the prefix cache
                    result = model.generate(ids, speculative, cache_key="doc")
                    same += result.ids == want
                    paths.add(result.decode_mode)
            emit(
                {
                    "part": "identity",
                    "device": str(device),
                    "model": f"tiny, seed {seed}",
                    "mode": mode,
                    "decode_paths": sorted(paths),
                    "generations": 2 * len(prompts),
                    "identical": same,
                    "all_identical": same == 2 * len(prompts),
                    "passes": model.speculation.steps,
                    "drafted": model.speculation.drafted,
                    "accepted": model.speculation.accepted,
                    "ready_s": round(ready_s, 1),
                }
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("verify")
    one.add_argument("--device", default="cpu")
    one.add_argument("--configs", default="int8")
    one.add_argument("--layers", type=int, default=28)
    one.add_argument("--prompt", type=int, default=512)
    one.add_argument("--max-n", type=int, default=8)
    one.add_argument("--rounds", type=int, default=12)
    one.add_argument("--compiled", action="store_true", help="also the compiled static passes")
    one.add_argument("--greedy-tokens", type=int, default=0, help="greedy on/off run length")
    one.add_argument("--greedy-repeats", type=int, default=2)
    three = commands.add_parser("e2e")
    three.add_argument("--layers", type=int, default=2)
    three.add_argument("--prompts", type=int, default=6)
    three.add_argument("--tokens", type=int, default=96)
    three.add_argument("--repeats", type=int, default=3)
    three.add_argument("--seed", type=int, default=LOOPING_SEED, help="2 loops; 0 does not")
    three.add_argument("--random-prompts", action="store_true")
    four = commands.add_parser("identity")
    four.add_argument("--device", default="cpu")
    four.add_argument("--modes", default="dynamic,static", help="also: compiled")
    four.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    commands_by_name: dict[str, Callable[[argparse.Namespace], None]] = {
        "verify": verify,
        "e2e": e2e,
        "identity": identity,
    }
    commands_by_name[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
