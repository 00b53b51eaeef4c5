"""The server's own work per keystroke on huge documents, and the memory a document costs.

Types a line, one character at a time, at a cursor in a 10 MB source file (near its end and in
its middle) and at the end of a 1 MB single line, and for every keystroke times what the server
does on its event loop: apply the ``didChange`` edit to the document store, cut the document at
the cursor and build the prompt (the real tokenizer of the tiny checkpoint, encoding only what
changed), post-process a suggestion, and find the word before the cursor. The model's own work
is not on the event loop and is not timed here.

The baseline, interleaved keystroke by keystroke in the same run, is the previous path: pygls's
``TextDocument`` (edits by ``str.splitlines`` over the whole text) and a prompt built from the
whole text before the cursor. It is slow, so it types fewer keystrokes.

Memory: the bytes the document store holds for each document, against ``sys.getsizeof`` of its
text, with the last eight requests (what typed-ahead keeps) alive. One JSON line each:

    python benchmarks/bench_robust.py [--keystrokes 60] [--baseline-keystrokes 8]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.workspace import TextDocument

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.completion.languages import tag_line
from codegeex2_lsp.completion.pipeline import CompletionRequest, finish, prepare
from codegeex2_lsp.completion.prompt import LineTokenCache, build_prompt
from codegeex2_lsp.lsp.documents import DocumentStore
from codegeex2_lsp.settings.fields import Settings
from codegeex2_lsp.testing import write_tiny_model

TYPED = "    total = sum(item.size for item in self.items if item)"
SUGGESTION = " + len(self.pending)\n    return total\n"
MB = 1_000_000


def python_source(size: int) -> str:
    """Real Python from the standard library, repeated to ``size`` characters."""
    library = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    total = 0
    for path in sorted(library.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= size:
            break
    source = "".join(parts)
    while len(source) < size:
        source += source
    cut = source.rfind("\n", 0, size) + 1
    return source[:cut]


def one_line(size: int) -> str:
    """A minified-looking single line of ``size`` characters."""
    unit = "var a0=f(b,c)+g[1];if(x){y=z}else{w=[1,2,3]};"
    return (unit * (size // len(unit) + 1))[:size]


def position_at(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset)
    return line, offset - (text.rfind("\n", 0, offset) + 1)


class New:
    """The server's path: the document store, then a prompt from a window before the cursor."""

    name = "store+window"

    def __init__(self, uri: str, text: str, settings: Settings, cache: LineTokenCache) -> None:
        self.store = DocumentStore()
        self.store.open(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text))
        self.uri, self.settings, self.cache = uri, settings, cache
        self.version = 1
        self.shown: list[CompletionRequest] = []

    def keystroke(self, line: int, character: int, char: str) -> None:
        self.version += 1
        here = types.Position(line=line, character=character)
        self.store.change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=self.uri, version=self.version
                ),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=here, end=here), text=char
                    )
                ],
            )
        )
        document = self.store.get(self.uri)
        assert document is not None
        request = prepare(
            document.text, line, character + 1, settings=self.settings, cache=self.cache,
            language_id="python", uri=self.uri, encoding=self.store.encoding,
        )  # fmt: skip
        if request is None:
            return  # nothing offered (the indentation before code), as the server answers
        finish(request, SUGGESTION)
        cursor = types.Position(line=line, character=character + 1)
        document.word_before(document.offset(cursor, "utf-16"), "utf-16")
        self.shown = [*self.shown[-7:], request]


class Baseline:
    """The previous path: pygls's TextDocument, a prompt from all the text before the cursor."""

    name = "pygls+whole-prefix"

    def __init__(self, uri: str, text: str, settings: Settings, cache: LineTokenCache) -> None:
        self.document = TextDocument(uri, text, language_id="python")
        self.settings, self.cache = settings, cache

    def keystroke(self, line: int, character: int, char: str) -> None:
        here = types.Position(line=line, character=character)
        self.document.apply_change(
            types.TextDocumentContentChangePartial(
                range=types.Range(start=here, end=here), text=char
            )
        )
        source = self.document.source
        offset = self.document.offset_at_position(
            types.Position(line=line, character=character + 1)
        )
        prefix = source[:offset]
        build_prompt(
            prefix, tag_line=tag_line("python"), cache=self.cache,
            budget=self.settings.prompt_budget(),
        )  # fmt: skip


def scenarios() -> dict[str, tuple[str, int]]:
    """name: (document, offset of the cursor)."""
    file = python_source(10 * MB)
    line = "x = 1\n" + one_line(MB)
    return {
        "10MB file, cursor near the end": (file, file.rfind("\n", 0, len(file) - 2000) + 1),
        "10MB file, cursor in the middle": (file, file.rfind("\n", 0, len(file) // 2) + 1),
        "1MB line, cursor at its end": (line, len(line)),
    }


def run(
    make: Callable[..., Any], text: str, offset: int, keystrokes: int, settings: Settings, tokenizer
) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each keystroke: on a busy machine the wall clock also
    counts the time other processes held the core."""
    cache = LineTokenCache(tokenizer.encode)
    path = make("file:///bench/big.py", text, settings, cache)
    line, character = position_at(text, offset)
    times = []
    cpu = []
    # As the server does once the model is loaded: long-lived objects are not walked again.
    gc.collect()
    gc.freeze()
    for char in (TYPED * 4)[:keystrokes]:
        started, started_cpu = time.perf_counter(), time.thread_time()
        path.keystroke(line, character, char)
        times.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
        character += 1
    gc.unfreeze()
    return times, cpu


def memory(text: str, settings: Settings, tokenizer, keystrokes: int) -> dict[str, Any]:
    """Bytes held for one document (its store entry and eight requests) after typing.

    The token cache is shared by all documents and bounded on its own: it keeps one line here.
    """
    cache = LineTokenCache(tokenizer.encode, max_entries=1)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    path = New("file:///bench/mem.py", text, settings, cache)
    line, character = position_at(text, len(text))
    for char in TYPED[:keystrokes]:
        path.keystroke(line, character, char)
        character += 1
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"held_bytes": held, "text_bytes": sys.getsizeof(text)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keystrokes", type=int, default=60)
    parser.add_argument("--baseline-keystrokes", type=int, default=8)
    args = parser.parse_args(argv)
    settings = Settings()
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = ChatGLM2Tokenizer(write_tiny_model(directory) / "tokenizer.model")
        machine = {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
        for name, (text, offset) in scenarios().items():
            configurations: list[tuple[Callable[..., Any], int]] = [
                (New, args.keystrokes),
                (Baseline, args.baseline_keystrokes),
            ]
            for make, keystrokes in configurations:
                times, cpu = run(make, text, offset, keystrokes, settings, tokenizer)
                first, steady, steady_cpu = times[0], times[1:] or times, cpu[1:] or cpu
                record = {
                    "bench": "keystroke",
                    "scenario": name,
                    "path": make.name,
                    "document_chars": len(text),
                    "keystrokes": len(times),
                    "first_ms": round(first * 1000, 2),
                    "p50_ms": round(statistics.median(steady) * 1000, 2),
                    "p95_ms": round(percentile(steady, 0.95) * 1000, 2),
                    "max_ms": round(max(steady) * 1000, 2),
                    "cpu_p50_ms": round(statistics.median(steady_cpu) * 1000, 2),
                    "cpu_p95_ms": round(percentile(steady_cpu, 0.95) * 1000, 2),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                    **machine,
                }
                print(json.dumps(record), flush=True)
        documents = {name.split(",")[0]: text for name, (text, _) in scenarios().items()}
        for name, text in documents.items():
            held = memory(text, settings, tokenizer, 20)
            print(
                json.dumps(
                    {
                        "bench": "memory",
                        "scenario": name,
                        **held,
                        "ratio": round(held["held_bytes"] / held["text_bytes"], 3),
                        "load_avg_1m": round(os.getloadavg()[0], 2),
                        **machine,
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
