"""Speculative decoding measured in parts, since random weights accept almost no drafts.

    verify   the cost of one forward pass over 1..N tokens after a 512-token prompt, against
             one token (plain decode), on the full-size CodeGeeX2-6B shape with random weights;
             also a greedy run with speculation on and off on those weights (nothing repeats,
             so this is what drafting costs when it never helps). On CUDA, ``--compiled`` adds
             the static cache's compiled passes (one token, and the draft-checking width).
    accept   the drafts' acceptance on real code, with the file's true continuation standing in
             for the model: at many cursor positions the text after the cursor is cut out and
             "generated" again through the real decode loop and drafter. An upper bound on what
             a model that writes what the file says would get; ``--costs`` (a ``verify`` output)
             turns it into projected ms/token next to the measured plain decode.
    project  the same projections from an ``accept`` output and a ``verify`` output made apart
             (acceptance is a count of tokens and passes, the same on every machine).
    e2e      the mechanism end to end on a tiny checkpoint whose greedy output loops: the same
             ids with speculation on and off, and the time each takes, interleaved.
    identity greedy output with speculation against plain decoding on each decode path
             (``--modes dynamic,static,compiled``), on tiny checkpoints, on any device.

Each measurement is one JSON line on stdout.

    python benchmarks/bench_speculative.py verify --configs int8 > verify.jsonl
    python benchmarks/bench_speculative.py accept --costs verify.jsonl
    python benchmarks/bench_speculative.py project --accept accept.jsonl --costs verify.jsonl
    python benchmarks/bench_speculative.py e2e
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from bench_model import build, prefill
from transformers import DynamicCache

from codegeex2_lsp.backends.drafting import DRAFT_TOKENS, LONGEST_MATCH, SHORTEST_MATCH, Drafter
from codegeex2_lsp.backends.generation import SamplingParams
from codegeex2_lsp.backends.local.decoding import decode
from codegeex2_lsp.backends.local.inference import LocalModel
from codegeex2_lsp.backends.local.kvcache import StaticDecoder
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.testing import TINY_CORPUS, train_tokenizer, write_tiny_model

CORPUS = Path(__file__).resolve().parent / "corpus"
TRAINING_LINES = 400_000
"""Source lines sampled to train the code tokenizer."""

LOOPING_SEED = 2
"""The tiny checkpoint of this seed loops in its greedy output (as the tests use it)."""


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _emit(record: dict[str, Any]) -> None:
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
            _emit(
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
        _emit(
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
    _emit(
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
# 2. accept: drafts against the true continuation of real files


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "site-packages", "idlelib", "lib2to3", "tkinter", "turtledemo", "encodings")
    files = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).parts
        if relative[0] in skip or not 2_000 <= path.stat().st_size <= 200_000:
            continue
        files.append(path)
    return files


def _split_stdlib() -> tuple[list[Path], list[Path]]:
    """Training and evaluation halves of the standard library, so no file is in both."""
    files = _stdlib_files()
    return files[0::2], files[1::2]


def _lines(paths: Sequence[Path]) -> Iterator[str]:
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                yield line


def _code_tokenizer(vocab: int, paths: Sequence[Path]) -> spm.SentencePieceProcessor:
    """A SentencePiece BPE trained on code as the tiny one is, but with a realistic vocabulary."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_lines(paths),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab,
        character_coverage=1.0,
        byte_fallback=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        max_sentencepiece_length=16,
        input_sentence_size=TRAINING_LINES,
        shuffle_input_sentence=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


class _TruthSteps:
    """Forward passes of a "model" that writes exactly ``truth``: row i names the next token."""

    def __init__(self, truth: Sequence[int]) -> None:
        self.truth = truth
        self.vocab = max(truth) + 2
        self.eos = self.vocab - 1
        self.position = 0  # index in truth of the next token a pass runs
        self.widths: Counter[int] = Counter()

    def run(self, ids: Sequence[int]) -> torch.Tensor:
        self.widths[len(ids)] += 1
        rows = torch.zeros((len(ids), self.vocab))
        for i in range(len(ids)):
            at = self.position + 1 + i
            rows[i, self.truth[at] if at < len(self.truth) else self.eos] = 1.0
        self.position += len(ids)
        return rows

    def rewind(self, count: int) -> None:
        self.position -= count


@dataclasses.dataclass
class _Tally:
    cursors: int = 0
    tokens: int = 0
    passes: int = 0
    drafted: int = 0
    accepted: int = 0
    widths: Counter[int] = dataclasses.field(default_factory=Counter)


def _simulate(
    context: Sequence[int],
    truth: Sequence[int],
    following: Sequence[int],
    tally: _Tally,
    drafter_options: dict[str, int],
) -> None:
    drafter = Drafter(context, following, **drafter_options)
    steps = _TruthSteps(truth)
    generated: list[int] = []

    def emit(token: int) -> bool:
        generated.append(token)
        return len(generated) >= len(truth)

    decode(
        torch.nn.functional.one_hot(torch.tensor(truth[0]), steps.vocab).float(),
        steps,
        pick=lambda row: int(row.argmax()),
        emit=emit,
        before_pass=lambda: None,
        generated=generated,
        limit=len(truth),
        drafter=drafter,
    )
    assert generated == list(truth)
    tally.cursors += 1
    tally.tokens += len(truth)
    tally.passes += sum(steps.widths.values())
    tally.drafted += drafter.totals.drafted
    tally.accepted += drafter.totals.accepted
    tally.widths.update(steps.widths)


def _cursors(
    ids: list[int], newline: int, rng: random.Random, count: int, mode: str, horizon: int
) -> Iterator[tuple[int, int]]:
    """(cursor, end of the text the model writes there) in one file's ids."""
    line_starts = [0, *(i + 1 for i, t in enumerate(ids[:-1]) if t == newline)]
    for _ in range(count):
        if mode == "line-start":
            cursor = rng.choice(line_starts[1:] or [0])
            end = min(len(ids), cursor + horizon)
        else:
            cursor = rng.randrange(1, len(ids) - 1)
            end = cursor
            while end < len(ids) and ids[end] != newline:
                end += 1
            end = min(len(ids), end + 1, cursor + horizon)
        if end - cursor >= 2:
            yield cursor, end


def accept(args: argparse.Namespace) -> None:
    training, evaluation = _split_stdlib()
    rng = random.Random(0)
    evaluation = rng.sample(evaluation, min(args.stdlib_files, len(evaluation)))
    corpus = sorted(CORPUS.iterdir())
    costs = _read_costs(args.costs) if args.costs else {}
    tokenizers: dict[str, spm.SentencePieceProcessor] = {}
    for name in args.tokenizers.split(","):
        started = time.perf_counter()
        if name == "tiny":
            tokenizers[name] = spm.SentencePieceProcessor(model_proto=train_tokenizer())
        else:
            vocab = int(name.removeprefix("code"))
            tokenizers[name] = _code_tokenizer(vocab, training)
        print(
            f"tokenizer {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True
        )
    variants = [
        {"max_tokens": k, "shortest_match": m, "longest_match": LONGEST_MATCH}
        for k in (int(x) for x in args.draft_tokens.split(","))
        for m in (int(x) for x in args.shortest.split(","))
    ]
    for tokenizer_name, sp in tokenizers.items():
        newline = sp.piece_to_id("<0x0A>")
        sources = {"corpus": corpus, "stdlib": evaluation}
        for source, paths in sources.items():
            per_file = args.positions // len(paths) + 1
            for mode in ("mid-line", "line-start"):
                tallies = {json.dumps(v, sort_keys=True): _Tally() for v in variants}
                for path in paths:
                    text = path.read_text(encoding="utf-8", errors="replace")
                    ids = list(sp.encode(text))
                    file_rng = random.Random(f"{path.name}{mode}")
                    for cursor, end in _cursors(
                        ids, newline, file_rng, per_file, mode, args.horizon
                    ):
                        context = ids[max(0, cursor - args.context) : cursor]
                        truth = ids[cursor:end]
                        following = ids[end : end + args.following]
                        for key, tally in tallies.items():
                            _simulate(context, truth, following, tally, json.loads(key))
                for key, tally in tallies.items():
                    record = _accept_record(tokenizer_name, sp, source, mode, key, tally, args)
                    _emit(record)
                    for config, table in costs.items():
                        _emit(_projection(record, config, table))


def _accept_record(
    tokenizer_name: str,
    sp: spm.SentencePieceProcessor,
    source: str,
    mode: str,
    key: str,
    tally: _Tally,
    args: argparse.Namespace,
) -> dict[str, Any]:
    decode_passes = tally.tokens - tally.cursors  # plain decode: one pass per token but the first
    return {
        "part": "accept",
        "bound": "upper: the file's own continuation stands in for the model",
        "tokenizer": tokenizer_name,
        "vocab": sp.get_piece_size(),
        "source": source,
        "mode": mode,
        "drafter": json.loads(key),
        "cursors": tally.cursors,
        "tokens": tally.tokens,
        "passes": tally.passes,
        "plain_passes": decode_passes,
        "tokens_per_pass": round(decode_passes / max(1, tally.passes), 3),
        "drafted": tally.drafted,
        "accepted": tally.accepted,
        "acceptance": round(tally.accepted / max(1, tally.drafted), 3),
        "pass_widths": dict(sorted(tally.widths.items())),
        "context_tokens": args.context,
        "following_tokens": args.following,
    }


def _read_costs(path: str) -> dict[str, dict[int, float]]:
    """Median ms of a pass over n tokens, per configuration and path, from ``verify`` output."""
    tables: dict[str, dict[int, float]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("part") == "verify":
            key = f"{record['config']}-{record['device']}-{record['path']}"
            tables.setdefault(key, {})[record["tokens"]] = record["ms_median"]
    return tables


def _cost(table: dict[int, float], width: int) -> float:
    """A pass's cost; the compiled path pads every draft-checking pass to its one width."""
    wider = [n for n in table if n >= width]
    if not wider:
        raise ValueError(f"no cost measured for a pass of {width} tokens")
    return table[min(wider)]


def _projection(record: dict[str, Any], config: str, table: dict[int, float]) -> dict[str, Any]:
    widths = record["pass_widths"]
    spent = sum(_cost(table, int(width)) * count for width, count in widths.items())
    produced = record["plain_passes"]
    projected = spent / max(1, produced)
    return {
        "part": "projection",
        "bound": "upper: acceptance measured against the file's own continuation",
        "costs": config,
        "tokenizer": record["tokenizer"],
        "source": record["source"],
        "mode": record["mode"],
        "drafter": record["drafter"],
        "plain_ms_per_token": table[1],
        "projected_ms_per_token": round(projected, 2),
        "speedup": round(table[1] / projected, 3),
    }


def project(args: argparse.Namespace) -> None:
    """Projections from an ``accept`` output and a ``verify`` output: acceptance is counted in
    tokens and passes, the same on any machine, so a new machine needs only its pass costs."""
    costs = _read_costs(args.costs)
    for line in Path(args.accept).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("part") == "accept":
            widest = max(int(width) for width in record["pass_widths"])
            for config, table in costs.items():
                if widest <= max(table):  # else the costs were measured for fewer drafts
                    _emit(_projection(record, config, table))


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
    _emit(
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
            _emit(
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
    two = commands.add_parser("accept")
    two.add_argument("--tokenizers", default="tiny,code16000")
    two.add_argument("--positions", type=int, default=600, help="cursors per source and mode")
    two.add_argument("--stdlib-files", type=int, default=60)
    two.add_argument("--context", type=int, default=1984, help="prompt tokens before the cursor")
    two.add_argument("--following", type=int, default=600, help="tokens after the cut-out text")
    two.add_argument("--horizon", type=int, default=64, help="most tokens written per cursor")
    two.add_argument("--draft-tokens", default=str(DRAFT_TOKENS))
    two.add_argument("--shortest", default=str(SHORTEST_MATCH))
    two.add_argument("--costs", help="verify output to project ms/token from")
    projecting = commands.add_parser("project")
    projecting.add_argument("--accept", required=True, help="accept output")
    projecting.add_argument("--costs", required=True, help="verify output")
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
        "accept": accept,
        "project": project,
        "e2e": e2e,
        "identity": identity,
    }
    commands_by_name[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
