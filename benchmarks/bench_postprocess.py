"""How much decoding the early stop saves, and what post-processing costs per call.

CodeGeeX2 never stops by itself, so without the stop rule every request decodes
``max_new_tokens`` tokens and post-processing throws most of them away. With it, decoding
ends as soon as ``is_settled`` says nothing more could change the suggestion. This script
runs both ways over positions in the source files of ``benchmarks/corpus/`` and checks that
the suggestions are identical, which is the rule's whole promise.

Positions are where someone typing would stand: at the start of every line (after its
indentation, the line itself not yet written) and in its middle (the line cut at a word
boundary, brackets it left open already closed after the cursor, as editors auto-close).
The rest of the file follows, as in an editor.

Prints one JSON line per language and one for the total. The model is the tiny test
checkpoint unless ``--model`` names another.

    python benchmarks/bench_postprocess.py [--model DIR] [--max-new-tokens 64] [--every 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from codegeex2_lsp.backends.local.inference import LocalModel
from codegeex2_lsp.backends.local.loader import load_local
from codegeex2_lsp.completion.languages import language_id_for_path
from codegeex2_lsp.completion.pipeline import (
    CompletionRequest,
    finish,
    generate,
    generate_raw,
    prepare,
)
from codegeex2_lsp.completion.prompt import LineTokenCache
from codegeex2_lsp.settings.fields import Settings
from codegeex2_lsp.testing import write_tiny_model

CORPUS = Path(__file__).parent / "corpus"
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


@dataclass
class Tally:
    """Totals for one language (or all of them)."""

    positions: int = 0
    early_tokens: int = 0
    raw_tokens: int = 0
    identical: int = 0
    nonempty: int = 0
    postprocess_us: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.positions += other.positions
        self.early_tokens += other.early_tokens
        self.raw_tokens += other.raw_tokens
        self.identical += other.identical
        self.nonempty += other.nonempty
        self.postprocess_us += other.postprocess_us

    def report(self, language: str) -> dict[str, object]:
        saved = 1 - self.early_tokens / self.raw_tokens if self.raw_tokens else 0.0
        return {
            "language": language,
            "positions": self.positions,
            "suggestions": self.nonempty,
            "tokens_early_stop": self.early_tokens,
            "tokens_no_stop": self.raw_tokens,
            "saved": round(saved, 3),
            "identical": self.identical == self.positions,
            "postprocess_median_us": round(statistics.median(self.postprocess_us), 1),
        }


def _open_brackets(code: str) -> str:
    """Closers for the brackets ``code`` leaves open, innermost first (strings ignored)."""
    stack: list[str] = []
    quote = ""
    for char in code:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'`":
            quote = char
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif stack and char == stack[-1]:
            stack.pop()
    return "" if quote else "".join(reversed(stack))


def positions(text: str, every: int) -> Iterator[tuple[str, int, int]]:
    """(document, line, character) for each position: line starts and mid-line cuts."""
    lines = text.split("\n")
    for number, line in enumerate(lines):
        body = line.lstrip()
        if not body or number % every:
            continue
        indent = line[: len(line) - len(body)]
        before, after = lines[:number], lines[number + 1 :]
        yield "\n".join([*before, indent, *after]), number, len(indent)
        words = body.split(" ")
        if len(words) < 2:
            continue
        head = indent + " ".join(words[: len(words) // 2]) + " "
        closers = _open_brackets(head)
        yield "\n".join([*before, head + closers, *after]), number, len(head)


def measure(
    model: LocalModel, request: CompletionRequest, raw: bool
) -> tuple[int, str, list[float]]:
    """Tokens decoded, the final suggestion, and the post-processing times (µs) of one run."""
    before = model.totals.generated
    if raw:
        texts = [generate_raw(request, model, lambda: False).text]
    else:
        texts = [
            suggestion.generation.text for suggestion in generate(request, model, lambda: False)
        ]
    tokens = model.totals.generated - before
    if not texts:
        return tokens, "", []
    started = time.perf_counter()
    text = finish(request, texts[0])
    return tokens, text, [(time.perf_counter() - started) * 1e6]


def run(model: LocalModel, settings: Settings, every: int) -> dict[str, Tally]:
    """Decode each position with and without the early stop.

    Only decoded tokens are counted, so the second run reusing the first one's prompt cache
    does not favour either side.
    """
    cache = LineTokenCache(model.tokenizer.encode)
    tallies: dict[str, Tally] = {}
    for path in sorted(CORPUS.iterdir()):
        language = language_id_for_path(path.name)
        if language is None:
            continue
        tally = tallies.setdefault(language, Tally())
        for document, line, character in positions(path.read_text(encoding="utf-8"), every):
            request = prepare(
                document, line, character, settings=settings, cache=cache, language_id=language
            )
            if request is None:
                continue
            early_tokens, early_text, _ = measure(model, request, raw=False)
            raw_tokens, raw_text, timings = measure(model, request, raw=True)
            tally.positions += 1
            tally.early_tokens += early_tokens
            tally.raw_tokens += raw_tokens
            tally.identical += early_text == raw_text
            tally.nonempty += bool(raw_text)
            tally.postprocess_us += timings
    return tallies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: a fresh tiny checkpoint)")
    parser.add_argument("--max-new-tokens", type=int, default=Settings.max_new_tokens)
    parser.add_argument("--multiline", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--every", type=int, default=1, help="use every Nth line only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = Settings(max_new_tokens=args.max_new_tokens, multiline=args.multiline, candidates=1)
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.model or str(write_tiny_model(Path(scratch) / "tiny"))
        model, _ = load_local(Settings(model=directory, device="cpu", dtype="float32").load_spec())
        tallies = run(model, settings, args.every)
    total = Tally()
    for language, tally in tallies.items():
        print(json.dumps(tally.report(language)))
        total.add(tally)
    print(json.dumps(total.report("total")))
    return 0 if total.identical == total.positions else 1


if __name__ == "__main__":
    sys.exit(main())
