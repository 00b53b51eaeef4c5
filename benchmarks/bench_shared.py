"""The shared backend against the local one: memory per window, the extra hop, start-up.

Prints one JSON line per measurement:

- ``memory``: 1, 2 and 4 editor windows (LSP processes) with the local backend (a model in
  each) and with the shared one (one server), on the mid-size checkpoint: the sum over the
  processes of PSS (shared pages counted once) and of RSS, after one suggestion each.
- ``memory_6b``: the same computed for CodeGeeX2-6B in INT8 on a CPU: each local window holds
  the model's estimate; shared windows hold one, plus what a shared-mode window measured here.
- ``keystroke``: the same keystrokes through a local window and a shared one, interleaved,
  each changing the prompt in its last tokens only (the prefix cache serves the rest): the
  round trip of each inline request; ``hop`` is the difference of their medians.
- ``startup``: a new shared-mode window with the server already running, from process start
  to ``initialize`` answered and to its first suggestion; a new local window beside it.
- ``lsp_rss``: the resident memory of a shared-mode window, which never imports torch.

    python benchmarks/bench_shared.py [--windows 1,2,4] [--positions N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from lsprotocol import types
from pytest_lsp import LanguageClient

from benchmarks.bench_typing import MID_SIZE
from codegeex2_lsp.backends.local.memory import CODEGEEX2_6B, ModelSize, estimate
from codegeex2_lsp.backends.shared.launcher import running_servers
from codegeex2_lsp.testing import write_tiny_model
from tests.lsp_support import inline, open_document, running_server, status, wait_for_state

SOURCE = Path(contextlib.__file__).read_text(encoding="utf-8")
"""A real file that does not change under the benchmark: the standard library's."""
URI = "file:///bench/contextlib.py"
CONTEXT_TOKENS = 1024


def emit(**fields: Any) -> None:
    fields["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    fields["cores"] = os.cpu_count()
    fields["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(fields), flush=True)


def memory_of(pid: int) -> tuple[int, int]:
    """PSS and RSS of process ``pid`` in bytes."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("Pss:", "Rss:"):
                fields[parts[0]] = int(parts[1]) * 1024
    return fields["Pss:"], fields["Rss:"]


def pid_with(marker: str) -> int:
    """The process whose command line holds ``marker`` (its own log file name)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker.encode() in command and b"codegeex2_lsp" in command:
                return int(entry.name)
    raise LookupError(marker)


class Window:
    """One editor window: an LSP process, found by its own log file."""

    def __init__(self, client: LanguageClient, marker: str) -> None:
        self.client = client
        self.pid = pid_with(marker)


@contextlib.asynccontextmanager
async def window(model: Path, backend: str, scratch: Path, name: str) -> AsyncIterator[Window]:
    log_file = str(scratch / f"{name}.log")
    flags = (
        *("--model", str(model), "--device", "cpu", "--debounce-ms", "0"),
        *("--backend", backend, "--max-context-tokens", str(CONTEXT_TOKENS)),
        *("--max-new-tokens", "8", "--candidates", "1", "--log-file", log_file),
    )
    async with running_server(*flags) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        yield Window(client, log_file)


async def measure_memory(model: Path, scratch: Path, counts: list[int]) -> float:
    """The memory lines; returns the PSS of one shared-mode window, for the 6B figure."""
    one_shared_window = 0.0
    for count in counts:
        for backend in ("local", "shared"):
            async with contextlib.AsyncExitStack() as stack:
                windows = [
                    await stack.enter_async_context(
                        window(model, backend, scratch, f"{backend}-{count}-{i}")
                    )
                    for i in range(count)
                ]
                for each in windows:
                    await inline(each.client, URI, 30, 0, invoked=False)
                pids = [each.pid for each in windows]
                servers = [status["pid"] for _, status in running_servers()]
                if backend == "shared":
                    pids += servers
                sizes = [memory_of(pid) for pid in pids]
                if backend == "shared":
                    window_pss = [memory_of(each.pid)[0] for each in windows]
                    one_shared_window = max(one_shared_window, max(window_pss))
                emit(
                    measurement="memory",
                    backend=backend,
                    windows=count,
                    processes=len(pids),
                    pss_mb=round(sum(p for p, _ in sizes) / 2**20, 1),
                    rss_mb=round(sum(r for _, r in sizes) / 2**20, 1),
                    per_process_pss_mb=[round(p / 2**20, 1) for p, _ in sizes],
                )
    return one_shared_window


def memory_6b(counts: list[int], shared_window: float) -> None:
    size = ModelSize.from_config(CODEGEEX2_6B)
    model = estimate(size, torch.bfloat16, 8, 2048).total
    for count in counts:
        local = count * model
        shared = model + count * shared_window
        emit(
            measurement="memory_6b",
            quantize="int8",
            windows=count,
            local_gb=round(local / 1e9, 2),
            shared_gb=round(shared / 1e9, 2),
            shared_vs_one_window=round(shared / model, 3),
        )


def edit(client: LanguageClient, version: int, text: str) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


async def measure_keystrokes(model: Path, scratch: Path, count: int) -> None:
    """The same keystrokes in a local and a shared window, interleaved.

    Each keystroke rewrites the number on the file's last line, so the prompt changes in its
    last tokens only: the prefix cache serves the rest on both paths, the model's work is
    small and the same, and no answer can come from typed-ahead.
    """
    trips: dict[str, list[float]] = {"local": [], "shared": []}
    async with (
        window(model, "local", scratch, "keys-local") as local,
        window(model, "shared", scratch, "keys-shared") as shared,
    ):
        for i in range(count + 1):
            text = f"{SOURCE}\nvalue = {(37 * i) % 100:02d}"
            line = text.count("\n")
            for backend, each in (("local", local), ("shared", shared)):
                edit(each.client, i + 2, text)
                served = (await status(each.client))["served"]["by_model"]
                begin = time.perf_counter()
                await inline(each.client, URI, line, len(text) - text.rfind("\n") - 1,
                             invoked=False)  # fmt: skip
                trip = time.perf_counter() - begin
                # The first keystroke filled the caches; only model-served answers count.
                if i and (await status(each.client))["served"]["by_model"] == served + 1:
                    trips[backend].append(1000 * trip)
    for backend, values in trips.items():
        emit(
            measurement="keystroke",
            backend=backend,
            requests=len(values),
            round_trip_p50_ms=round(statistics.median(values), 2),
            round_trip_p95_ms=round(_p95(values), 2),
        )
    emit(
        measurement="hop",
        p50_ms=round(statistics.median(trips["shared"]) - statistics.median(trips["local"]), 2),
    )


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


async def startup(model: Path, backend: str, scratch: Path, name: str) -> dict[str, float]:
    log_file = str(scratch / f"{name}.log")
    flags = (
        *("--model", str(model), "--device", "cpu", "--debounce-ms", "0"),
        *("--backend", backend, "--max-context-tokens", str(CONTEXT_TOKENS)),
        *("--max-new-tokens", "8", "--candidates", "1", "--log-file", log_file),
    )
    begin = time.perf_counter()
    async with running_server(*flags) as client:
        initialized = time.perf_counter() - begin
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        suggestion = await inline(client, URI, 30, 0, invoked=True)
        first = time.perf_counter() - begin
        _, rss = memory_of(pid_with(log_file))
    return {"initialize_s": initialized, "first_suggestion_s": first, "rss": rss,
            "answered": bool(suggestion)}  # fmt: skip


async def measure_startup(model: Path, scratch: Path, runs: int) -> None:
    async with window(model, "shared", scratch, "warm-keeper"):
        for backend in ("shared", "local"):
            results = [
                await startup(model, backend, scratch, f"start-{backend}-{i}") for i in range(runs)
            ]
            emit(
                measurement="startup",
                backend=backend,
                warm_server=backend == "shared",
                runs=runs,
                initialize_s=round(statistics.median(r["initialize_s"] for r in results), 3),
                first_suggestion_s=round(
                    statistics.median(r["first_suggestion_s"] for r in results), 3
                ),
            )
            if backend == "shared":
                emit(
                    measurement="lsp_rss",
                    backend="shared",
                    rss_mb=round(max(r["rss"] for r in results) / 2**20, 1),
                )


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cgbench") as scratch_name:
        scratch = Path(scratch_name)
        runtime = scratch / "run"
        runtime.mkdir(mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        model = write_tiny_model(scratch / "mid", **MID_SIZE)
        counts = [int(n) for n in args.windows.split(",")]
        shared_window = await measure_memory(model, scratch, counts)
        memory_6b(counts, shared_window)
        await measure_keystrokes(model, scratch, args.positions)
        await measure_startup(model, scratch, args.runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", default="1,2,4", help="window counts for memory")
    parser.add_argument("--positions", type=int, default=40, help="keystrokes per backend")
    parser.add_argument("--runs", type=int, default=3, help="start-ups per backend")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
