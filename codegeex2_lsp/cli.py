"""The ``codegeex2-lsp`` command: serve LSP, complete one position, or write a tiny model.

In stdio mode stdout is the JSON-RPC channel, so logs go to stderr or a file, never stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from codegeex2_lsp import __version__
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.fields import Settings
from codegeex2_lsp.settings.sources import add_arguments, from_arguments

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
Run `codegeex2-lsp COMMAND --help` for a command's options.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of ``python -m codegeex2_lsp``."""
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


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    update = from_arguments(args)
    if update.errors:
        parser.error("; ".join(update.errors))
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

    from codegeex2_lsp.lsp.server import create_server

    server = create_server(settings)
    log.info("codegeex2-lsp %s starting", __version__)
    if args.tcp:
        log.info("serving LSP on %s:%d", args.host, args.port)
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()
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
    parser.add_argument("--language", help="LSP language id (default: guessed from the extension)")
    parser.add_argument(
        "--raw", action="store_true", help="print the model's text before post-processing"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = _settings(parser, args)
    _setup_logging(args, stderr_level="WARNING")

    from codegeex2_lsp.backends.loading import load_backend
    from codegeex2_lsp.completion.languages import language_id_for_path
    from codegeex2_lsp.completion.pipeline import generate, generate_raw, prepare
    from codegeex2_lsp.completion.prompt import LineTokenCache

    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"codegeex2-lsp: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    try:
        model, description = load_backend(settings.load_spec())
    except LoadError as failure:
        print(f"codegeex2-lsp: {failure.message}. {failure.hint}", file=sys.stderr)
        return 1
    log.info("model: %s", description)
    language = args.language or language_id_for_path(args.file)
    try:
        request = prepare(
            text,
            args.line,
            args.character,
            settings=settings.within_context(model.context_tokens),
            cache=LineTokenCache(model.tokenizer.encode),
            language_id=language,
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
        print(f"codegeex2-lsp: {failure.message}. {failure.hint}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    sys.stdout.flush()
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
    language = args.language or language_id_for_path(args.file)
    workspace = Workspace()
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
        print(f"codegeex2-lsp: {error.message}. {error.hint}", file=sys.stderr)
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
        print(f"problem: {problem}")
    print_shared_servers()
    return 0 if not problems else 1


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
            "TCP. Serving beyond loopback needs CODEGEEX2_API_KEY, which clients send too."
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
    _setup_logging(args)

    import os

    from codegeex2_lsp.backends.shared.launcher import socket_path
    from codegeex2_lsp.backends.shared.listen import ListenError, serve, tcp_socket, unix_socket

    api_key = os.environ.get("CODEGEEX2_API_KEY") or None
    try:
        if args.port is not None:
            sock = tcp_socket(args.host or "127.0.0.1", args.port, api_key)
        else:
            sock = unix_socket(args.socket or socket_path(settings.load_spec()))
    except (ListenError, LoadError) as error:
        print(f"codegeex2-lsp serve: {error}", file=sys.stderr)
        return 1
    idle = None if args.idle_minutes is None else args.idle_minutes * 60
    serve(settings, sock, idle, api_key)
    return 0
