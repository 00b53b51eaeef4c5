"""The interactive loop as an editor drives it: type a line at the end of a real file.

Starts the real server over stdio, opens a real source file of about 2,000 tokens, then
types a line of code one character at a time at its end, asking for an inline completion
after every keystroke, and prints one JSON line per scenario:

- ``typing``: each keystroke waits for the previous answer (a steady typist on a fast
  model). Per-keystroke latency p50/p95/max, the cold first request, tokens prefilled and
  generated per keystroke, the share of prompt tokens served from the prefix cache, the share
  of keystrokes answered typed-ahead, and the server's own overhead (round trip minus the
  model's time, from the status command).
- ``burst``: keystrokes come every ``--burst-interval-ms``, faster than the answers; the model
  work the whole burst cost, in tokens and seconds, against one completion's.
- ``typing-long-file``: the same typing at the end of a file longer than the prompt budget
  (``--long-file-tokens``): a whole short method is typed, so the window's start moves down.
- ``first-suggestion``: from the server's start to ready, then from opening a file of about
  2,000 tokens (ending inside a line) to its first suggestion there: asked at once
  (``idle`` false: the request supersedes the background prefill that opening starts), and
  asked once that prefill has finished (``idle`` true: the user read the file first), in
  alternating order over ``--first-rounds`` rounds, each in a fresh server.

Each scenario runs with prefix reuse on (the default budget) and off (``prefixCacheMb`` 0),
the baseline, in the same run. Models: the tiny test checkpoint and a mid-size one written
by the same writer with larger dimensions, so that prefill dominates on CPU; ``full`` writes
CodeGeeX2-6B's architecture with random weights, for a GPU; ``--model DIR`` adds any other.

    python benchmarks/bench_typing.py [--models tiny,mid]
    python benchmarks/bench_typing.py --models full --device cuda [--compile off]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.testing import codegeex2_6b_shape, write_tiny_model
from tests.lsp_support import (
    inline,
    open_document,
    running_server,
    status,
    wait_for_state,
    wait_for_status,
)

URI = "file:///bench/queue.py"
SOURCE_FILE = Path(queue.__file__)
"""A real source file that does not change under the benchmark: the standard library's."""
TYPED_LINE = "    def put_many(self, items, block=True, timeout=None):"
TYPED_METHOD = (
    TYPED_LINE
    + '\n        """Put every item of items, in order, as put() would."""'
    + "\n        for item in items:"
    + "\n            self.put(item, block, timeout)"
)
"""Typed at the end of the long file: enough text that the window must move on."""
FILE_TOKENS = 2000

MID_SIZE = {
    "num_layers": 8,
    "hidden_size": 1024,
    "ffn_hidden_size": 2816,
    "num_attention_heads": 16,
    "multi_query_group_num": 2,
    "kv_channels": 64,
}
"""About 100M parameters: a cold 2,000-token prefill takes seconds on one or two CPU cores."""

FULL_SIZE = codegeex2_6b_shape()
"""CodeGeeX2-6B's shapes with random weights (12.5 GB written): for a GPU."""

CHECKPOINTS: dict[str, dict[str, Any]] = {"tiny": {}, "mid": MID_SIZE, "full": FULL_SIZE}


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def load() -> float:
    """The one-minute load average: other work on the machine slows every number here."""
    return round(os.getloadavg()[0], 2)


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def source_of_tokens(tokenizer: ChatGLM2Tokenizer, tokens: int) -> str:
    """The source file's start, cut before the method of a class nearest to ``tokens`` tokens.

    The typed line then starts the next method.
    """
    lines = SOURCE_FILE.read_text(encoding="utf-8").splitlines(keepends=True)
    cuts: list[tuple[int, int]] = []
    count = 0
    for index, line in enumerate(lines):
        if line.startswith("    def "):
            cuts.append((abs(count - tokens), index))
        count += len(tokenizer.encode(line))
    _, cut = min(cuts)
    return "".join(lines[:cut]).rstrip("\n") + "\n\n"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 2),
        "p95": round(percentile(values, 0.95), 2),
        "max": round(max(values), 2),
    }


def work(current: dict[str, Any]) -> dict[str, float]:
    tokens = current["tokens"]
    return {
        "prefilled": tokens["prefilled"],
        "generated": tokens["generated"],
        "reused": tokens["reused"],
        "generations": tokens["generations"],
        "seconds": tokens["seconds"],
        "typed_ahead": current["served"]["typed_ahead"],
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}


class Typist:
    """One document in one server: types at its end and asks for completions."""

    def __init__(self, client: LanguageClient, source: str) -> None:
        self.client = client
        self.source = source
        self.version = 1
        self.line = source.count("\n")
        self.column = 0
        open_document(client, URI, source)

    def type(self, char: str) -> None:
        here = types.Position(line=self.line, character=self.column)
        self.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=self.version),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=here, end=here), text=char
                    )
                ],
            )
        )
        if char == "\n":
            self.line += 1
            self.column = 0
        else:
            self.column += 1

    async def ask(self) -> list[str]:
        return await inline(self.client, URI, self.line, self.column, invoked=False)


async def typing(client: LanguageClient, source: str, line: str) -> dict[str, Any]:
    typist = Typist(client, source)
    before = work(await status(client))
    started = time.perf_counter()
    await typist.ask()
    cold_ms = 1000 * (time.perf_counter() - started)
    cold = delta(work(await status(client)), before)

    latencies: list[float] = []
    overheads: list[float] = []
    steps: list[dict[str, float]] = []
    for char in line:
        typist.type(char)
        before = work(await status(client))
        started = time.perf_counter()
        await typist.ask()
        latency = 1000 * (time.perf_counter() - started)
        step = delta(work(await status(client)), before)
        latencies.append(latency)
        overheads.append(latency - 1000 * step["seconds"])
        steps.append(step)

    # The JSON-RPC floor: a request the server answers at once, without the model.
    floor: list[float] = []
    for _ in range(50):
        started = time.perf_counter()
        await status(client)
        floor.append(1000 * (time.perf_counter() - started))

    prefilled = sum(s["prefilled"] for s in steps)
    reused = sum(s["reused"] for s in steps)
    return {
        "keystrokes": len(line),
        "cold_ms": round(cold_ms, 1),
        "cold_prefilled": cold["prefilled"],
        "cold_generated": cold["generated"],
        "latency_ms": summary(latencies),
        "latency_over_cold": round(statistics.median(latencies) / cold_ms, 3),
        "prefilled_per_keystroke": summary([s["prefilled"] for s in steps]),
        "prefilled_over_cold": round(
            statistics.median(s["prefilled"] for s in steps) / cold["prefilled"], 4
        ),
        "generated_per_keystroke": summary([s["generated"] for s in steps]),
        # Keystrokes that prefilled most of the prompt again: the window's start had moved.
        "window_moves": sum(1 for s in steps if s["prefilled"] > cold["prefilled"] / 2),
        "model_calls": sum(s["generations"] for s in steps),
        "cache_hit_share": round(reused / (reused + prefilled), 4) if reused + prefilled else 0,
        "typed_ahead_share": round(sum(s["typed_ahead"] for s in steps) / len(steps), 3),
        "overhead_ms": summary(overheads),
        "status_round_trip_ms": summary(floor),
        "model_ms_per_keystroke": summary([1000 * s["seconds"] for s in steps]),
    }


async def burst(
    client: LanguageClient, source: str, line: str, interval_ms: float
) -> dict[str, Any]:
    typist = Typist(client, source)
    before = work(await status(client))
    await typist.ask()
    one = delta(work(await status(client)), before)

    before = work(await status(client))
    started = time.perf_counter()
    pending = []
    for char in line:
        typist.type(char)
        pending.append(asyncio.ensure_future(typist.ask()))
        await asyncio.sleep(interval_ms / 1000)
    answers = await asyncio.gather(*pending)
    elapsed_ms = 1000 * (time.perf_counter() - started)
    spent = delta(work(await status(client)), before)
    # Once more at the end, alone: what one keystroke costs on a settled cache. The character
    # is not the suggestion's next one, so it goes to the model.
    shown = answers[-1][0] if answers[-1] else ""
    typist.type("@" if shown.startswith("#") else "#")
    before = work(await status(client))
    await typist.ask()
    last = delta(work(await status(client)), before)
    completion_tokens = last["prefilled"] + last["generated"]
    return {
        "keystrokes": len(line),
        "interval_ms": interval_ms,
        "burst_ms": round(elapsed_ms, 1),
        "answered": sum(1 for answer in answers if answer),
        "model_calls": spent["generations"],
        "prefilled": spent["prefilled"],
        "generated": spent["generated"],
        "model_s": round(spent["seconds"], 3),
        "cold_completion_tokens": one["prefilled"] + one["generated"],
        "completion_tokens": completion_tokens,
        "completions_worth_tokens": round(
            (spent["prefilled"] + spent["generated"]) / max(1, completion_tokens), 2
        ),
        "completions_worth_seconds": round(spent["seconds"] / max(1e-9, last["seconds"]), 2),
    }


async def run_model(name: str, model: Path, args: argparse.Namespace) -> None:
    tokenizer = ChatGLM2Tokenizer(model / "tokenizer.model")
    source = source_of_tokens(tokenizer, FILE_TOKENS)
    base = [
        "--model", str(model), "--device", args.device,
        "--max-new-tokens", str(args.max_new_tokens), "--compile", args.compile,
    ]  # fmt: skip
    for reuse in ("on", "off") if args.short_file else ():
        flags = [*base, "--prefix-cache-mb", "256" if reuse == "on" else "0"]
        line = args.line if reuse == "on" else args.line[: args.baseline_keystrokes]
        async with running_server(*flags, "--debounce-ms", "0") as client:
            ready = await wait_for_state(client, "ready")
            common = {
                "model": name,
                # The checkpoint's temporary directory says nothing; its name does.
                "description": ready["description"].replace(str(model), name),
                "decode": ready["decode"],
                "prefix_reuse": reuse,
                "file_tokens": len(tokenizer.encode(source)),
                "max_new_tokens": args.max_new_tokens,
                "machine": machine(),
                "torch_threads": args.threads,
            }
            result = await typing(client, source, line)
            emit(scenario="typing", **common, debounce_ms=0, **result, load=load())
        # Without debounce the engine's supersession alone saves the work; with the default
        # debounce, keystrokes closer together than it never reach the model.
        for debounce in (0, 25) if reuse == "on" else (0,):
            async with running_server(*flags, "--debounce-ms", str(debounce)) as client:
                await wait_for_state(client, "ready")
                typed = args.line[: args.burst_keystrokes]
                result = await burst(client, source, typed, args.burst_interval_ms)
                emit(scenario="burst", **common, debounce_ms=debounce, **result, load=load())
    if args.long_file_tokens:
        await long_file(name, model, tokenizer, base, args)
    for round_ in range(args.first_rounds):
        for idle in (False, True) if round_ % 2 == 0 else (True, False):
            await first_suggestion(name, model, tokenizer, base, idle=idle)


async def first_suggestion(
    name: str, model: Path, tokenizer: ChatGLM2Tokenizer, base: list[str], *, idle: bool
) -> None:
    """A freshly opened file's first suggestion, at the end of its last (unfinished) line."""
    source = source_of_tokens(tokenizer, FILE_TOKENS) + TYPED_LINE[:12]
    line, column = source.count("\n"), len(source) - (source.rfind("\n") + 1)
    started = time.perf_counter()
    async with running_server(*base, "--prefix-cache-mb", "256", "--debounce-ms", "0") as client:
        ready = await wait_for_state(client, "ready")
        ready_s = time.perf_counter() - started
        before = await status(client)
        opened = time.perf_counter()
        open_document(client, URI, source)
        if idle:
            ahead = before["prefix_cache"]["prefilled_ahead"]
            await wait_for_status(
                client,
                lambda current: (
                    current["prefix_cache"]["prefilled_ahead"] > ahead
                    and current["requests"]["completed"] > before["requests"]["completed"]
                ),
                "the opened file prefilled",
            )
        asked = time.perf_counter()
        texts = await inline(client, URI, line, column, invoked=False)
        answered = time.perf_counter()
        after = await status(client)
    emit(
        scenario="first-suggestion",
        model=name,
        description=ready["description"].replace(str(model), name),
        idle=idle,
        file_tokens=len(tokenizer.encode(source)),
        start_to_ready_s=round(ready_s, 2),
        idle_s=round(asked - opened, 2),
        request_ms=round(1000 * (answered - asked), 1),
        open_to_suggestion_s=round(answered - opened, 2),
        prefilled_ahead=after["prefix_cache"]["prefilled_ahead"]
        - before["prefix_cache"]["prefilled_ahead"],
        **delta(work(after), work(before)),
        answered=bool(texts and texts[0]),
        machine=machine(),
        load=load(),
    )


async def long_file(
    name: str, model: Path, tokenizer: ChatGLM2Tokenizer, base: list[str], args: argparse.Namespace
) -> None:
    """A file longer than the budget: the window is trimmed from the top, and as the typed line
    grows its start jumps down now and then, so the next prompt shares only the tag line with
    the cached one and is prefilled in full. Prefix reuse on; the cost is in the keystrokes
    whose prefill is a large share of the cold one (``window_moves``)."""
    source = source_of_tokens(tokenizer, args.long_file_tokens)
    flags = [*base, "--prefix-cache-mb", "256", "--debounce-ms", "0"]
    async with running_server(*flags) as client:
        ready = await wait_for_state(client, "ready")
        result = await typing(client, source, TYPED_METHOD)
        emit(
            scenario="typing-long-file",
            model=name,
            description=ready["description"].replace(str(model), name),
            decode=ready["decode"],
            prefix_reuse="on",
            file_tokens=len(tokenizer.encode(source)),
            max_new_tokens=args.max_new_tokens,
            machine=machine(),
            torch_threads=args.threads,
            debounce_ms=0,
            **result,
            load=load(),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="tiny,mid", help="checkpoints to write and run: tiny, mid, full"
    )
    parser.add_argument("--model", type=Path, help="another checkpoint directory to run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--line", default=TYPED_LINE, help="the line of code typed")
    parser.add_argument(
        "--baseline-keystrokes", type=int, default=12, help="keystrokes typed without reuse"
    )
    parser.add_argument("--burst-keystrokes", type=int, default=20)
    parser.add_argument(
        "--no-short-file",
        dest="short_file",
        action="store_false",
        help="skip the typing and burst scenarios on the file within the budget",
    )
    parser.add_argument(
        "--long-file-tokens",
        type=int,
        default=3000,
        help="also type at the end of a file this long, beyond the budget (0: skip)",
    )
    parser.add_argument(
        "--first-rounds",
        type=int,
        default=2,
        help="rounds of the first-suggestion scenario, cold and after idle time (0: skip)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--burst-interval-ms", type=float, default=30.0)
    parser.add_argument("--compile", default="auto", help="the server's compile setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    args = parser.parse_args()
    # The server is a child process: it takes the thread count from the environment.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        models: list[tuple[str, Path]] = []
        for name in filter(None, args.models.split(",")):
            models.append((name, write_tiny_model(Path(scratch) / name, **CHECKPOINTS[name])))
        if args.model is not None:
            models.append((args.model.name, args.model))
        for name, model in models:
            asyncio.run(run_model(name, model, args))


if __name__ == "__main__":
    main()
