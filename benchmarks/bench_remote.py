"""The remote backend against a real vLLM: typing through the editor's server, the client's own
overhead, and several typists on one vLLM.

Writes the mid-size checkpoint of ``bench_typing.py`` (in the shape vLLM's CPU kernels take:
head size 64, vocabulary exactly the tokenizer's), starts vLLM on it (prefix caching on,
``--skip-tokenizer-init``), and prints one JSON line per measurement:

- ``typing``: ``bench_typing.py``'s typing scenario (a line typed at the end of a 2,000-token
  file, each keystroke waiting for its answer) through the real LSP server over stdio, with
  ``backend`` local and openai in turns (``--rounds`` of each, interleaved).
- ``overhead``: one-token-at-a-time answers read to their end through the client; round trip
  minus the engine's own time for the request (vLLM's per-request metrics: queued to last
  token). What is left is the client, the HTTP hop and vLLM's API front end.
- ``typists``: 1, 4 and 8 typists at once on the one vLLM, each typing its own file through
  the shared completion path (prompt, early stop) and waiting for each answer; per-keystroke
  latency p50/p95, and the first (cold) request against the warm ones.

    python benchmarks/bench_remote.py [--keystrokes 40] [--typists 1,4,8]

Targets (issue 11): overhead p50 <= 5 ms on loopback; a warm keystroke <= 25% of a cold one;
8 typists' p95 <= 2x one typist's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_typing import (
    MID_SIZE,
    TYPED_LINE,
    emit,
    load,
    machine,
    source_of_tokens,
    summary,
    typing,
)
from codegeex2_lsp.backends.generation import SamplingParams
from codegeex2_lsp.backends.remote.connect import connect
from codegeex2_lsp.backends.remote.http import Endpoint
from codegeex2_lsp.backends.remote.streaming import RemoteModel
from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.completion.pipeline import generate, prepare
from codegeex2_lsp.completion.prompt import LineTokenCache
from codegeex2_lsp.settings.fields import Settings
from tests.lsp_support import running_server, wait_for_state
from tests.vllm_support import VllmServer, vllm_python, write_vllm_checkpoint

FILE_TOKENS = 2000
MAX_NEW_TOKENS = 32


def open_model(url: str, tokenizer: ChatGLM2Tokenizer) -> RemoteModel:
    model, _ = connect(tokenizer, Endpoint(url, timeout=600))
    return model


async def typing_round(backend: str, model_dir: Path, url: str, line: str) -> dict[str, Any]:
    tokenizer = ChatGLM2Tokenizer(model_dir / "tokenizer.model")
    source = source_of_tokens(tokenizer, FILE_TOKENS)
    flags = [
        "--model", str(model_dir), "--device", "cpu", "--backend", backend,
        "--server-url", url, "--request-timeout-ms", "600000",
        "--max-new-tokens", str(MAX_NEW_TOKENS), "--debounce-ms", "0",
    ]  # fmt: skip
    async with running_server(*flags) as client:
        await wait_for_state(client, "ready")
        return await typing(client, source, line)


def overhead(model: RemoteModel, tokenizer: ChatGLM2Tokenizer, count: int) -> dict[str, Any]:
    prompt = tokenizer.prompt_ids(source_of_tokens(tokenizer, 200))
    params = SamplingParams(max_new_tokens=8)
    model.generate(prompt, params)
    gaps, trips = [], []
    for _ in range(count):
        started = time.perf_counter()
        model.generate(prompt, params)
        trip = time.perf_counter() - started
        if model.last_server_seconds is not None:
            trips.append(1000 * trip)
            gaps.append(1000 * (trip - model.last_server_seconds))
    return {
        "requests": len(gaps),
        "round_trip_ms": summary(trips),
        "overhead_ms": summary(gaps),
    }


class Typist(threading.Thread):
    """One editor: its own connection, its own file, one keystroke after the other."""

    def __init__(self, model: RemoteModel, source: str, line: str, start: threading.Barrier):
        super().__init__(daemon=True)
        self.model = model
        self.source = source
        self.line = line
        self.start_together = start
        self.settings = Settings(max_new_tokens=MAX_NEW_TOKENS)
        self.cache = LineTokenCache(model.tokenizer.encode)
        self.cold_ms = 0.0
        self.warm_ms: list[float] = []
        self.error: BaseException | None = None

    def keystroke(self, typed: str) -> float:
        text = self.source + typed
        lines = text.split("\n")
        request = prepare(
            text,
            len(lines) - 1,
            len(lines[-1]),
            settings=self.settings,
            cache=self.cache,
            language_id="python",
            uri="file:///bench/typist.py",
        )
        started = time.perf_counter()
        generate(request, self.model, lambda: False)
        return 1000 * (time.perf_counter() - started)

    def run(self) -> None:
        try:
            self.start_together.wait()
            self.cold_ms = self.keystroke("")
            for end in range(1, len(self.line) + 1):
                self.warm_ms.append(self.keystroke(self.line[:end]))
        except BaseException as error:
            self.error = error


def typists(url: str, tokenizer: ChatGLM2Tokenizer, count: int, line: str) -> dict[str, Any]:
    # Each typist's file starts with its own line, so no two share a prompt prefix (nor does
    # any share one with an earlier run): each first request is cold, and the server's cache
    # has to hold every typist's file.
    models = [open_model(url, tokenizer) for _ in range(count)]
    barrier = threading.Barrier(count)
    source = source_of_tokens(tokenizer, FILE_TOKENS)
    crew = [
        Typist(model, f"# {count} typists, number {index}\n{source}", line, barrier)
        for index, model in enumerate(models)
    ]
    for typist in crew:
        typist.start()
    for typist in crew:
        typist.join()
    for model in models:
        model.close()
    for typist in crew:
        if typist.error is not None:
            raise typist.error
    warm = [ms for typist in crew for ms in typist.warm_ms]
    cold = [typist.cold_ms for typist in crew]
    return {
        "typists": count,
        "keystrokes": len(warm),
        "cold_ms": summary(cold),
        "latency_ms": summary(warm),
        "warm_over_cold": round(statistics.median(warm) / statistics.median(cold), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keystrokes", type=int, default=40, help="characters typed per run")
    parser.add_argument("--rounds", type=int, default=2, help="typing rounds per backend")
    parser.add_argument("--typists", default="1,4,8")
    parser.add_argument("--overhead-requests", type=int, default=40)
    args = parser.parse_args()
    line = (TYPED_LINE * 4)[: args.keystrokes]
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = write_vllm_checkpoint(Path(scratch) / "mid", **MID_SIZE)
        server = VllmServer(
            vllm_python(),
            model_dir,
            Path(scratch),
            max_model_len=4096,
            kv_cache_bytes=512 * 2**20,
        )
        started = time.perf_counter()
        server.start()
        common = {"model": "mid", "machine": machine(), "vllm": "0.32.0 CPU"}
        emit(scenario="vllm_start", **common, seconds=round(time.perf_counter() - started, 1))
        try:
            tokenizer = ChatGLM2Tokenizer(model_dir / "tokenizer.model")
            for round_ in range(args.rounds):
                for backend in ("local", "openai"):
                    result = asyncio.run(typing_round(backend, model_dir, server.url, line))
                    emit(
                        scenario="typing", **common, backend=backend, round=round_,
                        max_new_tokens=MAX_NEW_TOKENS, **result, load=load(),
                    )  # fmt: skip
            model = open_model(server.url, tokenizer)
            emit(
                scenario="overhead", **common,
                **overhead(model, tokenizer, args.overhead_requests), load=load(),
            )  # fmt: skip
            model.close()
            for count in (int(n) for n in args.typists.split(",")):
                emit(scenario="typists", **common, **typists(server.url, tokenizer, count, line),
                     load=load())  # fmt: skip
        finally:
            server.stop()


if __name__ == "__main__":
    main()
