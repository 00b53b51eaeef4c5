"""The ``codegeex2-lsp`` command: serve LSP, complete one position, or write a tiny model.

In stdio mode stdout is the JSON-RPC channel, so logs go to stderr or a file, never stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from codegeex2_lsp import __version__
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.fields import API_KEY_VARIABLE, Settings
from codegeex2_lsp.settings.sources import add_arguments, for_command_line, from_arguments

log = logging.getLogger("codegeex2_lsp")


DESCRIPTION = """\
AI code completion from CodeGeeX2-6B for every LSP editor.

Without a command it serves LSP over stdio (or TCP with --tcp). Commands:
  complete FILE --line L --character C   print the completion at a position
  prompt FILE --line L --character C     print the prompt the model would get there
  make-tiny-model DIR                    write a tiny random checkpoint for trying things out
  convert SRC DST [--quantize int8|int4] rewrite a checkpoint as fast-loading safetensors
  doctor                                 check this machine and the settings before loading
  serve [--socket PATH | --host H --port P]
                                         serve the model to every editor (OpenAI-compatible API)
  cache list|clear                       list or clear the kept quantized layouts and kernels
  stats [--json]                         suggestions shown, accepted and dismissed, per language
Run `codegeex2-lsp COMMAND --help` for a command's options.
"""


OPENMP_SPIN_COUNT = "10000"
"""How long torch's OpenMP threads (and the INT4 CPU kernel's) spin for work before they sleep:
some microseconds, against libgomp's default of 300,000 spins. On cores shared with other work a
thread spinning for a descheduled sibling takes the time slice the sibling needs, and decode
fell several times beside busy-looping processes; a short spin still bridges the gap between
two operations on an idle machine, where sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) cost up
to a third of the decode time (benchmarks/bench_contention.py)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of ``python -m codegeex2_lsp``."""
    # OpenMP reads it once, when torch is first imported (never before this point). A wait
    # policy or spin count of the user's own wins: a policy is a spin count in libgomp.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "complete":
        return complete_command(args[1:])
    if args and args[0] == "prompt":
        return prompt_command(args[1:])
    if args and args[0] == "make-tiny-model":
        return make_tiny_model_command(args[1:])
    if args and args[0] == "convert":
        return convert_command(args[1:])
    if args and args[0] == "doctor":
        return doctor_command(args[1:])
    if args and args[0] == "serve":
        return model_server_command(args[1:])
    if args and args[0] == "cache":
        return cache_command(args[1:])
    if args and args[0] == "stats":
        return stats_command(args[1:])
    return serve_command(args)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-file", type=Path, help="also write the log to this file")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log verbosity (default: INFO)",
    )


def _setup_logging(args: argparse.Namespace, stderr_level: str | None = None) -> None:
    """Log to stderr (at ``stderr_level`` when given) and, in full, to ``--log-file``."""
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(stderr_level or args.log_level)
    handlers: list[logging.Handler] = [stderr]
    if args.log_file is not None:
        handlers.append(logging.FileHandler(args.log_file, encoding="utf-8"))
    log.setLevel(args.log_level)
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)


def _fail(error: LoadError) -> None:
    print(f"codegeex2-lsp: {for_command_line(f'{error.message}. {error.hint}')}", file=sys.stderr)


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    update = from_arguments(args)
    if update.errors:
        parser.error(for_command_line("; ".join(update.errors)))
    return update.settings


def serve_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="codegeex2-lsp",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser)
    parser.add_argument("--tcp", action="store_true", help="serve over TCP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2087, help="TCP port (default: 2087)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = _settings(parser, args)
    # Over stdio the client shows the log it gets as window/logMessage; repeating it on
    # stderr would show every line twice, so stderr keeps only warnings and errors.
    _setup_logging(args, stderr_level=None if args.tcp else "WARNING")

    if not args.tcp and sys.stdin.isatty():
        # A person at a terminal, not an editor: say what the silence is waiting for.
        print(
            "codegeex2-lsp: waiting for an LSP client on stdin; editors start this server "
            "themselves (see --help for commands to run by hand). Ctrl-C ends it.",
            file=sys.stderr,
            flush=True,
        )

    from codegeex2_lsp.lsp.server import create_server

    server = create_server(settings)
    log.info("codegeex2-lsp %s starting", __version__)
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()
    # A client that exits without shutdown still has its counts written.
    server.acceptance.store.flush()
    return server.exit_status


def complete_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="codegeex2-lsp complete",
        description="Print the completion at a position of FILE, as the server would offer it.",
    )
    _common(parser)
    parser.add_argument("file", type=Path, help="the source file")
    parser.add_argument("--line", type=int, required=True, help="0-based line, as in LSP")
    parser.add_argument(
        "--character", type=int, required=True, help="0-based UTF-16 character, as in LSP"
    )
    parser.add_argument("--language", help="LSP language id (default: from the file name)")
    parser.add_argument(
        "--raw", action="store_true", help="print the model's text before post-processing"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = _settings(parser, args)
    _setup_logging(args, stderr_level="WARNING")

    from codegeex2_lsp.backends.loading import load_backend
    from codegeex2_lsp.completion.pipeline import generate, generate_raw, prepare
    from codegeex2_lsp.completion.prompt import LineTokenCache
    from codegeex2_lsp.lsp.text import LspText

    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"codegeex2-lsp: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    document = LspText(text)
    if not document.holds(args.line, args.character, "utf-16"):
        print(
            f"codegeex2-lsp: line {args.line}, character {args.character} is outside "
            f"{args.file} ({document.line_count} lines, counted from 0)",
            file=sys.stderr,
        )
        return 2
    try:
        model, description = load_backend(settings.load_spec())
    except LoadError as failure:
        _fail(failure)
        return 1
    log.info("model: %s", description)
    try:
        request = prepare(
            document,
            args.line,
            args.character,
            settings=settings.within_context(model.context_tokens),
            cache=LineTokenCache(model.tokenizer.encode),
            language_id=args.language,
            uri=args.file.resolve().as_uri(),
        )
    except ValueError as error:
        print(f"codegeex2-lsp: {error}", file=sys.stderr)
        return 2
    try:
        if request is None:
            text = ""
        elif args.raw:
            text = generate_raw(request, model, lambda: False).text
        else:
            suggestions = generate(request, model, lambda: False)
            text = suggestions[0].text if suggestions else ""
    except LoadError as failure:
        _fail(failure)
        return 1
    # A line of its own, as a command's output is; the completion is everything before it.
    print(text, flush=True)
    return 0


INDEX_TIMEOUT_S = 120.0
"""The longest ``prompt`` waits for the workspace index before using what is ready."""


def prompt_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="codegeex2-lsp prompt",
        description=(
            "Print exactly the prompt the model would get at a position of FILE (its token ids, "
            "decoded), with the snippets from other files the server would add; list on stderr "
            "where each snippet came from. Loads only the tokenizer, never the model."
        ),
    )
    _common(parser)
    parser.add_argument("file", type=Path, help="the source file")
    parser.add_argument("--line", type=int, required=True, help="0-based line, as in LSP")
    parser.add_argument(
        "--character", type=int, required=True, help="0-based UTF-16 character, as in LSP"
    )
    parser.add_argument("--language", help="LSP language id (default: guessed from the extension)")
    parser.add_argument(
        "--workspace", type=Path, help="workspace folder to index, as the editor would name it"
    )
    parser.add_argument(
        "--open",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="another file open in the editor (repeat for several)",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = _settings(parser, args)
    _setup_logging(args, stderr_level="WARNING")

    from codegeex2_lsp.backends.remote.connect import load_tokenizer
    from codegeex2_lsp.completion.gate import is_excluded
    from codegeex2_lsp.completion.languages import (
        canonical_language_id,
        language_id_for_path,
        tag_line,
    )
    from codegeex2_lsp.completion.pipeline import prepare
    from codegeex2_lsp.completion.prompt import Context, LineTokenCache
    from codegeex2_lsp.context.index import Workspace
    from codegeex2_lsp.context.render import Block
    from codegeex2_lsp.context.select import ContextRequest, ContextSelector, OpenDocument
    from codegeex2_lsp.lsp.text import LspText

    texts: dict[Path, str] = {}
    for path in [args.file, *args.open]:
        try:
            texts[path.resolve()] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            print(f"codegeex2-lsp: cannot read {path}: {error}", file=sys.stderr)
            return 2
    try:
        tokenizer = load_tokenizer(settings.model)
    except LoadError as failure:
        print(f"codegeex2-lsp: {failure.message}. {failure.hint}", file=sys.stderr)
        return 1
    current = args.file.resolve()
    folders = [str(args.workspace.resolve())] if args.workspace is not None else []

    def excluded(path: Path) -> bool:
        return is_excluded(str(path), settings, folders)

    if excluded(current):
        print(
            f"codegeex2-lsp: {args.file} matches the exclude setting: none of it is read into a "
            "prompt or sent to a model",
            file=sys.stderr,
        )
        return 1
    texts = {path: text for path, text in texts.items() if not excluded(path)}
    language = args.language or language_id_for_path(args.file)
    workspace = Workspace(excluded=excluded)
    selector = ContextSelector(workspace.index)
    blocks: list[Block] = []
    if settings.context_tokens > 0:
        workspace.start()
        if args.workspace is not None:
            workspace.set_roots([args.workspace])
        for path, text in texts.items():
            workspace.opened(path, text)
        if not workspace.wait_settled(INDEX_TIMEOUT_S):
            log.warning("the index was not finished; using what was ready")
    documents = [
        OpenDocument(path, 1, partial(str, text), canonical_language_id(None, path.as_uri()))
        for path, text in texts.items()
    ]
    cache = LineTokenCache(tokenizer.encode)

    def context(text: LspText, offset: int, canonical: str | None, budget: int) -> Context:
        request = ContextRequest(
            current,
            text,
            offset,
            canonical,
            tag_line(canonical),
            budget,
            cache.encode_line,
            documents,
        )
        block = selector.block(request)
        blocks.append(block)
        return block.text, block.ids

    try:
        request = prepare(
            texts[current],
            args.line,
            args.character,
            settings=settings,
            cache=cache,
            language_id=language,
            uri=current.as_uri(),
            context=context if settings.context_tokens > 0 else None,
        )
    except ValueError as error:
        print(f"codegeex2-lsp: {error}", file=sys.stderr)
        return 2
    finally:
        workspace.close()
    if request is None:
        print("codegeex2-lsp: nothing is offered at this position", file=sys.stderr)
        return 0
    for block in blocks:
        for snippet in block.snippets:
            print(f"{snippet.path}:{snippet.line + 1}: {snippet.origin}", file=sys.stderr)
    context_tokens = len(blocks[-1].ids) if blocks else 0
    print(
        f"prompt: {len(request.prompt.ids)} tokens, {context_tokens} of them from other files",
        file=sys.stderr,
    )
    sys.stdout.write(tokenizer.decode(request.prompt.ids))
    sys.stdout.flush()
    return 0


def make_tiny_model_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="codegeex2-lsp make-tiny-model",
        description=(
            "Write a small ChatGLM2 checkpoint with random weights in the upstream layout: "
            "real loading and inference code, no 12 GB download. Its suggestions are noise."
        ),
    )
    parser.add_argument("directory", type=Path)
    # Unset options keep the writer's own defaults, so the two never drift apart.
    for option in (
        "--num-layers",
        "--hidden-size",
        "--ffn-hidden-size",
        "--num-attention-heads",
        "--multi-query-group-num",
        "--kv-channels",
        "--vocab-multiple",
        "--shards",
        "--seed",
    ):
        parser.add_argument(option, type=int, default=argparse.SUPPRESS)
    options = vars(parser.parse_args(argv))
    directory = options.pop("directory")

    from codegeex2_lsp.testing import write_tiny_model

    path = write_tiny_model(directory, **options)
    print(path)
    return 0


def convert_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="codegeex2-lsp convert",
        description=(
            "Rewrite a ChatGLM2/CodeGeeX2 checkpoint (directory or hub id) as safetensors in the "
            "layout the server loads directly, optionally with INT8/INT4 weights already made."
        ),
    )
    parser.add_argument("source", help="checkpoint directory or hub id")
    parser.add_argument("destination", type=Path, help="new directory to write")
    parser.add_argument(
        "--quantize", choices=("none", "int8", "int4"), default="none", help="default: none"
    )
    args = parser.parse_args(argv)

    from codegeex2_lsp.backends.local.convert import convert

    try:
        result = convert(
            args.source,
            args.destination,
            quantize=args.quantize,
            progress=lambda message: print(message, file=sys.stderr),
        )
    except LoadError as error:
        _fail(error)
        return 1
    print(
        f"wrote {result.directory}: {result.tensors} tensors, {result.bytes / 1e9:.2f} GB, "
        f"quantization {result.quantize}"
    )
    return 0


def doctor_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="codegeex2-lsp doctor",
        description=(
            "Print versions, the devices found, what the settings resolve to and why, and the "
            "memory the model needs against what is free; with --backend openai, whether the "
            "server answers, what it serves, its context length, whether it takes token-id "
            "prompts, and the round trip. Exits 1 when it cannot work."
        ),
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = _settings(parser, args)

    if settings.backend == "openai":
        from codegeex2_lsp.backends.remote.checkup import diagnose_remote

        remote = diagnose_remote(settings)
        lines, problems = remote.lines, remote.problems
    else:
        from codegeex2_lsp.backends.local.doctor import diagnose

        local = diagnose(settings)
        lines, problems = local.lines, local.problems
    for line in lines:
        print(line)
    for problem in problems:
        print(f"problem: {for_command_line(problem)}")
    print_shared_servers()
    return 0 if not problems else 1


def stats_command(argv: Sequence[str]) -> int:
    """Print the acceptance counts every editor's server has kept on this machine."""
    from codegeex2_lsp.completion.acceptance import default_stats_path, read_stats, table_to_json

    parser = argparse.ArgumentParser(
        prog="codegeex2-lsp stats",
        description="Suggestions shown, accepted and dismissed, and the characters accepted, "
        "counted on this machine only, per language and backend.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    path = default_stats_path()
    try:
        summary = table_to_json(read_stats(path))
    except ValueError as problem:
        print(f"codegeex2-lsp: cannot read {path}: {problem}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print(f"counts in {path}")
    header = ("language", "backend", "shown", "accepted", "dismissed", "rate", "chars")
    rows: list[tuple[str, ...]] = [header]

    def row(language: str, backend: str, counts: dict[str, int]) -> tuple[str, ...]:
        shown = counts["shown"]
        rate = f"{100 * counts['accepted'] / shown:.0f}%" if shown else "-"
        numbers = (counts["shown"], counts["accepted"], counts["dismissed"])
        return (language, backend, *map(str, numbers), rate, str(counts["acceptedChars"]))

    for language, per_language in summary["languages"].items():
        for backend, counts in per_language["backends"].items():
            rows.append(row(language, backend, counts))
    rows.append(row("all", "", summary))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for cells in rows:
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    return 0


def print_shared_servers() -> None:
    """The running shared model servers of this user: what each serves, to whom, in how much."""
    from codegeex2_lsp.backends.shared.launcher import describe, running_servers

    servers = running_servers()
    print("shared servers:" + ("" if servers else " none running"))
    for path, status in servers:
        print(f"  {describe(path, status)}")


def model_server_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="codegeex2-lsp serve",
        description=(
            "Load the model once and serve it over an OpenAI-compatible completions API: on the "
            "per-user Unix socket the shared backend uses (default), on another socket, or over "
            "TCP. TCP needs CODEGEEX2_API_KEY, which clients send too, or --insecure-no-key."
        ),
    )
    _common(parser)
    parser.add_argument("--socket", type=Path, help="Unix socket (default: the shared one)")
    parser.add_argument("--host", help="serve over TCP on this address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="serve over TCP on this port")
    parser.add_argument(
        "--idle-minutes",
        type=float,
        help="exit after this many minutes without clients (default: never)",
    )
    parser.add_argument(
        "--max-request-mb",
        type=float,
        default=2.0,
        help="refuse request bodies over this size with 413 (default: 2)",
    )
    parser.add_argument(
        "--insecure-no-key",
        action="store_true",
        help="serve over TCP without CODEGEEX2_API_KEY: every user of this machine can use it",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = _settings(parser, args)
    # The server is where the model runs: here, whatever backend its windows use.
    settings = dataclasses.replace(settings, backend="local")
    if args.socket is not None and (args.host is not None or args.port is not None):
        parser.error("--socket and --host/--port exclude each other")
    if args.host is not None and args.port is None:
        parser.error("--host needs --port")
    if args.idle_minutes is not None and args.idle_minutes < 0:
        parser.error("--idle-minutes must not be negative")
    if not args.max_request_mb > 0:
        parser.error("--max-request-mb must be positive")
    tcp = args.port is not None
    # A Unix socket admits this user only (its mode and SO_PEERCRED): it needs no key, and the
    # windows that start it send none, even with the key in the environment for other servers.
    api_key = (os.environ.get(API_KEY_VARIABLE) or None) if tcp else None
    if tcp and api_key is None and not args.insecure_no_key:
        # Loopback is not private: every user of this machine can connect to a port.
        print(
            "codegeex2-lsp serve: a TCP port is open to every user of this machine: set "
            "CODEGEEX2_API_KEY (clients send it too), or pass --insecure-no-key",
            file=sys.stderr,
        )
        return 1
    _setup_logging(args)

    from codegeex2_lsp.backends.shared.app import Policy
    from codegeex2_lsp.backends.shared.launcher import socket_path
    from codegeex2_lsp.backends.shared.listen import ListenError, serve, tcp_socket, unix_socket

    if tcp and api_key is None:
        log.warning("serving without an API key (--insecure-no-key): any local user may connect")
    policy = Policy(max_body_bytes=int(args.max_request_mb * 2**20), one_user=not tcp)
    try:
        if args.port is not None:
            sock = tcp_socket(args.host or "127.0.0.1", args.port, api_key)
        else:
            sock = unix_socket(args.socket or socket_path(settings.load_spec()))
    except (ListenError, LoadError) as error:
        print(f"codegeex2-lsp serve: {error}", file=sys.stderr)
        return 1
    idle = None if args.idle_minutes is None else args.idle_minutes * 60
    serve(settings, sock, idle, api_key, policy)
    return 0


def cache_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="codegeex2-lsp cache",
        description="List or clear what loading keeps in the user's cache: quantized weights in "
        "their kernels' layout (mapped by later loads) and the built INT4 CPU kernels.",
    )
    parser.add_argument("action", choices=("list", "clear"))
    args = parser.parse_args(argv)

    from codegeex2_lsp.backends.local import int4_cpu, layout_cache

    kernels = int4_cpu.cache_directory()
    if args.action == "clear":
        freed = layout_cache.clear()
        for built in kernels.glob("int4_cpu-*.so"):
            freed += built.stat().st_size
            built.unlink(missing_ok=True)
        print(f"cleared {freed / 1e9:.2f} GB from {layout_cache.cache_root()} and {kernels}")
        return 0
    entries = layout_cache.list_entries()
    print(f"quantized layouts in {layout_cache.cache_root()}:")
    for entry in entries:
        print(f"  {entry.size / 1e9:6.2f} GB  {entry.source}  ({entry.directory.name})")
    if not entries:
        print("  none")
    print(f"INT4 CPU kernels in {kernels}: {len(list(kernels.glob('int4_cpu-*.so')))}")
    return 0
