"""Context from other files: does a line's definition reach the prompt, and at what cost.

Runs on real open-source code nobody here wrote, fetched with ``pip download`` (wheels, which
hold the sources) and ``npm pack`` into a cache folder and unpacked there, never committed.

- **Positions** (CrossCodeEval's construction): the start of every line that uses a name the
  file imports from another file of the same project, where the name's definition is not in
  the file. At most ``--positions`` per language, sampled with a fixed seed.
- **Metric**: the share of positions whose prompt holds the first line of that definition's
  header, within ``contextTokens`` 512 of ``maxContextTokens`` 2048.
- **Configurations**, in one run: in-file only (``contextTokens`` 0, today's prompt); open
  tabs only (similar windows of the open documents: the defining file and three others of
  the project); full retrieval with only the current file open; full retrieval with the tabs
  open.
- **Costs**: index build time and memory for 1,000- and 10,000-file workspaces (copies of the
  fetched projects, each in a fresh process); selection time per keystroke (p50/p95); how
  often the block changes while lines are typed; tokens prefilled per keystroke (the new
  prompt's ids not shared with the previous prompt's) with context on and off.

Token counts come from ``--model``'s tokenizer; without it, from the tiny test checkpoint's
(1,000 pieces, about 2 characters a token on code: more tokens than CodeGeeX2's for the same
text, so the budget holds less here than it would in use).

    python benchmarks/bench_context.py [--model DIR] [--positions 300] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from codegeex2_lsp.backends.remote.connect import load_tokenizer
from codegeex2_lsp.completion.languages import language_id_for_path, tag_line
from codegeex2_lsp.completion.pipeline import prepare
from codegeex2_lsp.completion.prompt import Context, LineTokenCache
from codegeex2_lsp.context.index import IndexedFile, SymbolIndex, Workspace, definition_in
from codegeex2_lsp.context.parsing import family
from codegeex2_lsp.context.resolve import resolve
from codegeex2_lsp.context.select import ContextRequest, ContextSelector, OpenDocument
from codegeex2_lsp.lsp.text import LspText
from codegeex2_lsp.settings.fields import Settings

PROJECTS = [
    {
        "language": "python",
        "kind": "pip",
        "spec": "rich==13.9.4",
        "file": "rich-13.9.4-py3-none-any.whl",
        "root": "rich",
    },
    {
        "language": "python",
        "kind": "pip",
        "spec": "httpx==0.28.1",
        "file": "httpx-0.28.1-py3-none-any.whl",
        "root": "httpx",
    },
    {
        "language": "typescript",
        "kind": "npm",
        "spec": "@tanstack/query-core@5.59.0",
        "file": "tanstack-query-core-5.59.0.tgz",
        "root": "package/src",
    },
    {
        "language": "javascript",
        "kind": "npm",
        "spec": "d3-array@3.2.4",
        "file": "d3-array-3.2.4.tgz",
        "root": "package/src",
    },
]

CONFIGURATIONS = ("in-file", "tabs", "full-current", "full-tabs")

SETTINGS = Settings(max_context_tokens=2048, max_new_tokens=64, context_tokens=512)

_IMPORT_LINE = re.compile(r"^\s*(from\s+\S+\s+import\b|import\b|export\s.*\bfrom\b|\}\s*from\b)")
_IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*")

FETCH_TIMEOUT_S = 300


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def fetch(cache: Path) -> list[tuple[dict[str, str], Path]]:
    """Each project's source folder, downloading and unpacking what the cache lacks."""
    cache.mkdir(parents=True, exist_ok=True)
    found = []
    for project in PROJECTS:
        archive = cache / project["file"]
        if not archive.exists():
            if project["kind"] == "pip":
                command = [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    project["spec"],
                    "-d",
                    str(cache),
                ]
            else:
                command = ["npm", "pack", "--silent", project["spec"]]
            subprocess.run(
                command, cwd=cache, check=True, timeout=FETCH_TIMEOUT_S, capture_output=True
            )
        unpacked = cache / "unpacked" / archive.name
        if not unpacked.exists():
            temporary = Path(tempfile.mkdtemp(dir=cache))
            if archive.suffix == ".whl":
                with zipfile.ZipFile(archive) as wheel:
                    wheel.extractall(temporary)
            else:
                with tarfile.open(archive) as tar:
                    tar.extractall(temporary, filter="data")
            unpacked.parent.mkdir(parents=True, exist_ok=True)
            temporary.rename(unpacked)
        found.append((project, unpacked / project["root"]))
    return found


def index_of(root: Path) -> Workspace:
    workspace = Workspace()
    workspace.start()
    workspace.set_roots([root])
    assert workspace.wait_settled(600), "indexing did not finish"
    return workspace


def positions_of(workspace: Workspace, language: str) -> list[dict[str, Any]]:
    """Line starts using an imported name defined in another file of the project."""
    index = workspace.index
    found = []
    for path in sorted(index.paths()):
        current = index.file(path)
        if current is None or family(current.symbols.language) != family(language):
            continue
        local = {definition.name for definition in current.symbols.definitions}
        bindings: dict[str, tuple[IndexedFile, Any]] = {}
        for imported in current.symbols.imports:
            files = [f for f in resolve(current, imported, index) if f.path != path]
            for local_name, original in imported.names:
                if local_name in local or not original or original == "default":
                    continue
                for indexed in files:
                    definition = definition_in(indexed, original)
                    if definition is not None and definition.member_of is None:
                        bindings[local_name] = (indexed, definition)
                        break
        if not bindings:
            continue
        lines = path.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines):
            if number == 0 or _IMPORT_LINE.match(line):
                continue
            used = [name for name in _IDENTIFIER.findall(line) if name in bindings]
            if used:
                indexed, definition = bindings[used[0]]
                found.append(
                    {
                        "path": path,
                        "line": number,
                        "name": used[0],
                        "defined_in": indexed.path,
                        "header": next(
                            (
                                row.strip()
                                for row in definition.header.split("\n")
                                if definition.name in row
                            ),
                            definition.header.split("\n")[0].strip(),
                        ),
                    }
                )
    return found


def open_tabs(position: dict[str, Any], all_paths: list[Path], rng: random.Random) -> list[Path]:
    others = [p for p in all_paths if p not in (position["path"], position["defined_in"])]
    return [position["path"], position["defined_in"], *rng.sample(others, min(3, len(others)))]


def documents(paths: list[Path]) -> list[OpenDocument]:
    result = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        result.append(OpenDocument(path, 1, lambda text=text: text, language_id_for_path(path)))
    return result


def prompt_for(
    text: str,
    line: int,
    character: int,
    path: Path,
    language: str,
    cache: LineTokenCache,
    selector: ContextSelector | None,
    tabs: list[OpenDocument],
    settings: Settings = SETTINGS,
    timings: list[float] | None = None,
    cpu_timings: list[float] | None = None,
) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """(prompt text, prompt ids, block ids) at a position."""
    blocks: list[tuple[int, ...]] = []

    def context(document: LspText, offset: int, canonical: str | None, budget: int) -> Context:
        assert selector is not None
        started, cpu = time.perf_counter(), time.thread_time()
        block = selector.block(
            ContextRequest(
                path,
                document,
                offset,
                canonical,
                tag_line(canonical),
                budget,
                cache.encode_line,
                tabs,
            )
        )
        if timings is not None:
            timings.append(time.perf_counter() - started)
        if cpu_timings is not None:
            cpu_timings.append(time.thread_time() - cpu)
        blocks.append(block.ids)
        return block.text, block.ids

    request = prepare(
        text,
        line,
        character,
        settings=settings,
        cache=cache,
        language_id=language,
        uri=path.as_uri(),
        context=context if selector is not None else None,
    )
    if request is None:
        return "", (), ()
    return request.prompt.text, request.prompt.ids, blocks[-1] if blocks else ()


def retrieval(
    projects: list[tuple[dict[str, str], Path]], cache: LineTokenCache, limit: int
) -> dict[str, list[dict[str, Any]]]:
    """The metric per language and configuration; returns the positions used, per family."""
    by_family: dict[str, list[tuple[dict[str, Any], Workspace, list[Path]]]] = {}
    for project, root in projects:
        workspace = index_of(root)
        paths = sorted(workspace.index.paths())
        for position in positions_of(workspace, project["language"]):
            by_family.setdefault(family(project["language"]), []).append(
                (position, workspace, paths)
            )
    used: dict[str, list[dict[str, Any]]] = {}
    for group, entries in by_family.items():
        rng = random.Random(0)
        sample = rng.sample(entries, min(limit, len(entries)))
        used[group] = [entry[0] for entry in sample]
        hits = dict.fromkeys(CONFIGURATIONS, 0)
        for position, workspace, paths in sample:
            path: Path = position["path"]
            # The line is about to be written: the file ends at the cursor.
            lines = path.read_text(encoding="utf-8").split("\n")
            text = "\n".join(lines[: position["line"]]) + "\n"
            language = language_id_for_path(path) or "plaintext"
            tabs = documents(open_tabs(position, paths, rng))
            current_only = documents([path])
            runs = {
                "in-file": (None, current_only),
                "tabs": (ContextSelector(SymbolIndex()), tabs),
                "full-current": (ContextSelector(workspace.index), current_only),
                "full-tabs": (ContextSelector(workspace.index), tabs),
            }
            for name, (selector, open_documents) in runs.items():
                prompt, _, _ = prompt_for(
                    text, position["line"], 0, path, language, cache, selector, open_documents
                )
                hits[name] += position["header"] in prompt
        for name in CONFIGURATIONS:
            emit(
                {
                    "measure": "definition-in-prompt",
                    "language": group,
                    "configuration": name,
                    "positions": len(sample),
                    "available": len(entries),
                    "hits": hits[name],
                    "share": round(hits[name] / len(sample), 4) if sample else None,
                    "context_tokens": SETTINGS.context_tokens,
                    "max_context_tokens": SETTINGS.max_context_tokens,
                }
            )
    return used


def typing(
    projects: list[tuple[dict[str, str], Path]],
    cache: LineTokenCache,
    positions: dict[str, list[dict[str, Any]]],
    scenarios: int,
    lines: int,
) -> None:
    """Type ``lines`` lines from each sampled position one character at a time, with context
    on and off: selection time per keystroke, block changes, tokens prefilled per keystroke."""
    workspaces = {root: index_of(root) for _, root in projects}
    for group, entries in positions.items():
        rng = random.Random(1)
        timings: list[float] = []
        cpu_timings: list[float] = []
        prefill = {"on": [], "off": []}
        cold = {"on": [], "off": []}
        changes = keystrokes = typed_lines = 0
        for position in rng.sample(entries, min(scenarios, len(entries))):
            path: Path = position["path"]
            root = next(r for r in workspaces if r in path.parents)
            full = path.read_text(encoding="utf-8").split("\n")
            start = position["line"]
            typed = full[start : start + lines]
            language = language_id_for_path(path) or "plaintext"
            tabs = documents([path])
            for mode in ("on", "off"):
                selector = ContextSelector(workspaces[root].index) if mode == "on" else None
                previous_ids: tuple[int, ...] | None = None
                previous_block: tuple[int, ...] | None = None
                for row, line in enumerate(typed):
                    for end in range(len(line) + 1):
                        text = "\n".join(
                            [*full[:start], *typed[:row], line[:end], *full[start + row + 1 :]]
                        )
                        _, ids, block = prompt_for(
                            text,
                            start + row,
                            end,
                            path,
                            language,
                            cache,
                            selector,
                            tabs,
                            timings=timings if mode == "on" else None,
                            cpu_timings=cpu_timings if mode == "on" else None,
                        )
                        if not ids:
                            continue
                        if previous_ids is None:
                            cold[mode].append(len(ids))
                        else:
                            shared = 0
                            for a, b in zip(previous_ids, ids, strict=False):
                                if a != b:
                                    break
                                shared += 1
                            prefill[mode].append(len(ids) - shared)
                        if mode == "on":
                            keystrokes += 1
                            if previous_block is not None and block != previous_block:
                                changes += 1
                            previous_block = block
                        previous_ids = ids
                    typed_lines += mode == "on"
        quantiles = statistics.quantiles(timings, n=20) if len(timings) > 1 else [0.0] * 19
        emit(
            {
                "measure": "typing",
                "language": group,
                "scenarios": min(scenarios, len(entries)),
                "keystrokes": keystrokes,
                "lines_typed": typed_lines,
                "selection_ms_p50": round(statistics.median(timings) * 1000, 3),
                "selection_ms_p95": round(quantiles[18] * 1000, 3),
                "selection_ms_max": round(max(timings) * 1000, 3),
                "selection_cpu_ms_p50": round(statistics.median(cpu_timings) * 1000, 3),
                "selection_cpu_ms_p95": round(
                    statistics.quantiles(cpu_timings, n=20)[18] * 1000, 3
                ),
                "block_changes": changes,
                "block_changes_per_line": round(changes / max(1, typed_lines), 3),
                "prefill_per_key_on_mean": round(statistics.mean(prefill["on"]), 2),
                "prefill_per_key_on_p95": statistics.quantiles(prefill["on"], n=20)[18],
                "prefill_per_key_off_mean": round(statistics.mean(prefill["off"]), 2),
                "prefill_per_key_off_p95": statistics.quantiles(prefill["off"], n=20)[18],
                "cold_prompt_tokens_on": round(statistics.mean(cold["on"]), 1),
                "cold_prompt_tokens_off": round(statistics.mean(cold["off"]), 1),
                "prefill_share_of_cold_on": round(
                    statistics.mean(prefill["on"]) / statistics.mean(cold["on"]), 4
                ),
                "prefill_share_of_cold_off": round(
                    statistics.mean(prefill["off"]) / statistics.mean(cold["off"]), 4
                ),
            }
        )


def large_workspace(cache: Path, projects: list[tuple[dict[str, str], Path]], files: int) -> Path:
    """A workspace of exactly ``files`` source files: copies of the fetched projects."""
    target = cache / f"workspace-{files}"
    if target.exists():
        return target
    sources = [
        (root, path)
        for _, root in projects
        for path in sorted(root.rglob("*"))
        if path.is_file() and language_id_for_path(path) in ("python", "typescript", "javascript")
    ]
    temporary = Path(tempfile.mkdtemp(dir=cache))
    written = 0
    copy = 0
    while written < files:
        for root, path in sources:
            if written >= files:
                break
            destination = temporary / f"copy{copy:03d}" / root.parent.name / path.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
            written += 1
        copy += 1
    temporary.rename(target)
    return target


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def index_only(root: Path) -> None:
    """Run in a fresh process: build the index of ``root`` and report time and memory."""
    before = rss_mb()
    started = time.perf_counter()
    workspace = index_of(root)
    seconds = time.perf_counter() - started
    after = rss_mb()
    emit(
        {
            "measure": "index",
            "files": len(workspace.index),
            "definitions": workspace.index.definitions(),
            "seconds": round(seconds, 2),
            "rss_mb_added": round(after - before, 1),
            "rss_mb_total": round(after, 1),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint directory whose tokenizer counts tokens")
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "codegeex2-lsp" / "bench-context"
    )
    parser.add_argument("--positions", type=int, default=300)
    parser.add_argument("--typing-scenarios", type=int, default=12)
    parser.add_argument("--typing-lines", type=int, default=4)
    parser.add_argument("--index-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.index_only is not None:
        index_only(args.index_only)
        return
    emit(
        {
            "measure": "machine",
            "cpu": next(
                (
                    row.split(":", 1)[1].strip()
                    for row in Path("/proc/cpuinfo").read_text().splitlines()
                    if row.startswith("model name")
                ),
                platform.processor(),
            ),
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
        }
    )
    model = args.model
    if model is None:
        from codegeex2_lsp.testing import write_tiny_model

        model = str(write_tiny_model(args.cache / "tiny-model"))
    tokenizer = load_tokenizer(model)
    cache = LineTokenCache(tokenizer.encode)
    projects = fetch(args.cache)
    positions = retrieval(projects, cache, args.positions)
    typing(projects, cache, positions, args.typing_scenarios, args.typing_lines)
    for files in (1000, 10000):
        root = large_workspace(args.cache, projects, files)
        done = subprocess.run(
            [sys.executable, __file__, "--index-only", str(root)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
        print(done.stdout.strip(), flush=True)
    emit({"measure": "machine-after", "load_average": os.getloadavg()})


if __name__ == "__main__":
    main()
