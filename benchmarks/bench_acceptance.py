"""Speculative decoding's acceptance on real code, and what it projects to with measured costs.

    accept   the drafts' acceptance on real code, with the file's true continuation standing in
             for the model: at many cursor positions the text after the cursor is cut out and
             "generated" again through the real decode loop and drafter. An upper bound on what
             a model that writes what the file says would get; ``--costs`` (a
             ``bench_speculative.py verify`` output) turns it into projected ms/token next to
             the measured plain decode.
    project  the same projections from an ``accept`` output and a ``verify`` output made apart
             (acceptance is a count of tokens and passes, the same on every machine).

Each measurement is one JSON line on stdout.

    python benchmarks/bench_speculative.py verify --configs int8 > verify.jsonl
    python benchmarks/bench_acceptance.py accept --costs verify.jsonl
    python benchmarks/bench_acceptance.py project --accept accept.jsonl --costs verify.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from bench_speculative import emit

from codegeex2_lsp.backends.drafting import DRAFT_TOKENS, LONGEST_MATCH, SHORTEST_MATCH, Drafter
from codegeex2_lsp.backends.local.decoding import decode
from codegeex2_lsp.testing import train_tokenizer

CORPUS = Path(__file__).resolve().parent / "corpus"
TRAINING_LINES = 400_000
"""Source lines sampled to train the code tokenizer."""


# ---------------------------------------------------------------------------------------------
# accept: drafts against the true continuation of real files


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
    trained = train_tokenizer(vocab, _lines(paths), sample=TRAINING_LINES)
    return spm.SentencePieceProcessor(model_proto=trained)


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
                    emit(record)
                    for config, table in costs.items():
                        emit(_projection(record, config, table))


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
                    emit(_projection(record, config, table))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
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
    args = parser.parse_args()
    commands_by_name: dict[str, Callable[[argparse.Namespace], None]] = {
        "accept": accept,
        "project": project,
    }
    commands_by_name[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
