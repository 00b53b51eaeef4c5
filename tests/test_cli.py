"""The command line: help and version, the complete and make-tiny-model commands, TCP serving."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp.client import make_test_lsp_client

from codegeex2_lsp import __version__
from codegeex2_lsp.postprocess import make_context, postprocess
from tests.lsp_support import Reference
from tests.rpc_client import RawClient
from tests.support import SOURCE, free_port

pytestmark = pytest.mark.slow


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codegeex2_lsp", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> Reference:
    return Reference(tiny_model_dir)


def test_version_and_help() -> None:
    version = run("--version")
    assert version.returncode == 0
    assert __version__ in version.stdout
    help_text = run("--help").stdout
    for expected in (
        "complete",
        "make-tiny-model",
        "--tcp",
        "--log-file",
        "--model",
        "--max-new-tokens",
        "--max-context-tokens",
        "--top-p",
        "--debounce-ms",
    ):
        assert expected in help_text


def test_make_tiny_model_writes_the_upstream_layout(tmp_path: Path) -> None:
    result = run("make-tiny-model", str(tmp_path / "m"), "--num-layers", "1", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "m"
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "chatglm"
    assert config["num_layers"] == 1
    assert (tmp_path / "m" / "tokenizer.model").is_file()
    assert (tmp_path / "m" / "pytorch_model.bin.index.json").is_file()


def test_complete_prints_the_post_processed_suggestion(
    tiny_model_dir: Path, tmp_path: Path, reference: Reference
) -> None:
    source = tmp_path / "app.py"
    source.write_text(SOURCE)
    result = run(
        "complete",
        str(source),
        "--line",
        "5",
        "--character",
        "8",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    raw = reference.greedy("# language: Python\n" + SOURCE, 64)
    expected = postprocess(raw, make_context(SOURCE, "", "python"))
    assert expected
    assert result.stdout == expected + "\n"


def test_complete_raw_prints_the_models_text_and_language_follows_the_extension(
    tiny_model_dir: Path, tmp_path: Path, reference: Reference
) -> None:
    source = tmp_path / "app.js"
    text = "function add(a, b) {\n  return "
    source.write_text(text)
    common = ("--line", "1", "--character", "9", "--model", str(tiny_model_dir), "--raw")
    guessed = run("complete", str(source), *common, "--max-new-tokens", "20")
    assert guessed.returncode == 0, guessed.stderr
    assert guessed.stdout == reference.greedy("// language: JavaScript\n" + text, 20) + "\n"
    forced = run("complete", str(source), *common, "--max-new-tokens", "20", "--language", "go")
    assert forced.stdout == reference.greedy("// language: Go\n" + text, 20) + "\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("missing.py", "--line", "0", "--character", "0"), 2, "cannot read"),
        (("{file}", "--line", "0", "--character", "0", "--dtype", "fp8"), 2, "--dtype"),
        (
            ("{file}", "--line", "0", "--character", "0", "--model", "{missing}"),
            1,
            "does not exist",
        ),
        (("{file}", "--line", "-1", "--character", "0", "--model", "{model}"), 2, "line"),
        # A position outside the file is the user's mistake, not a stale client position.
        (("{file}", "--line", "5", "--character", "0", "--model", "{model}"), 2, "outside"),
        (("{file}", "--line", "0", "--character", "6", "--model", "{model}"), 2, "outside"),
    ],
)
def test_complete_errors_go_to_stderr_with_a_non_zero_exit(
    tiny_model_dir: Path, tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    values = {"file": str(source), "missing": str(tmp_path / "nope"), "model": str(tiny_model_dir)}
    result = run("complete", *(a.format(**values) for a in args))
    assert result.returncode == code
    assert message in result.stderr
    # The command line names flags: the editor's setting names mean nothing there.
    assert "codegeex2." not in result.stderr
    assert result.stdout == ""


def tcp_server_command(port: int, model_dir: Path, *extra: str) -> list[str]:
    """The server on the tiny model, serving TCP on ``port``."""
    serve = ["-m", "codegeex2_lsp", "--tcp", "--port", str(port), "--model", str(model_dir)]
    return [sys.executable, *serve, "--device", "cpu", *extra]


async def test_tcp_serves_lsp_on_loopback(tiny_model_dir: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        tcp_server_command(port, tiny_model_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    client = make_test_lsp_client()
    try:
        for _ in range(600):
            try:
                await client.start_tcp("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        result = await asyncio.wait_for(
            client.initialize_session(
                types.InitializeParams(capabilities=types.ClientCapabilities())
            ),
            60,
        )
        assert result.capabilities.inline_completion_provider is not None
        assert result.server_info is not None
        assert result.server_info.name == "codegeex2-lsp"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.stdout is not None
    assert server.stdout.read() == b""


def _inline_request(uri: str, msg_id: str) -> dict[str, object]:
    line = SOURCE.count("\n")
    character = len(SOURCE.rsplit("\n", 1)[1])
    params = {
        "textDocument": {"uri": uri},
        "position": {"line": line, "character": character},
        "context": {"triggerKind": 1},
    }
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "textDocument/inlineCompletion",
        "params": params,
    }


def _open(uri: str, text: str) -> dict[str, object]:
    document = {"uri": uri, "languageId": "python", "version": 1, "text": text}
    return {
        "jsonrpc": "2.0",
        "method": "textDocument/didOpen",
        "params": {"textDocument": document},
    }


def _without_commands(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "command"} for item in result["items"]]


async def test_over_tcp_a_request_is_answered_for_the_text_it_was_sent_for(
    tiny_model_dir: Path,
) -> None:
    """A request and an edit right behind it reach the server in one piece, as a socket
    delivers a burst: the request is answered for the text it was sent for."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *tcp_server_command(port, tiny_model_dir, "--debounce-ms", "0"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    client = await RawClient.connect(process, port)
    try:
        await client.initialize()
        status = {"command": "codegeex2.status"}
        for _ in range(1200):
            if (await client.request("workspace/executeCommand", status))["state"] == "ready":
                break
            await asyncio.sleep(0.05)
        client.send(_open("file:///project/app.py", SOURCE))
        client.expect("sent-for")
        emptied = {
            "textDocument": {"uri": "file:///project/app.py", "version": 2},
            "contentChanges": [{"text": ""}],
        }
        client.send_together(
            _inline_request("file:///project/app.py", "sent-for"),
            {"jsonrpc": "2.0", "method": "textDocument/didChange", "params": emptied},
        )
        answer = await client.answer("sent-for")
        client.send(_open("file:///project/again.py", SOURCE))
        client.expect("alone")
        client.send(_inline_request("file:///project/again.py", "alone"))
        alone = await client.answer("alone")
        assert alone["result"]["items"] != []
        # The same suggestions; each answer's items carry ids of their own.
        assert _without_commands(answer["result"]) == _without_commands(alone["result"])
    finally:
        await client.stop()


def test_started_in_a_terminal_it_says_what_it_waits_for(tmp_path: Path) -> None:
    main, terminal = pty.openpty()
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "codegeex2_lsp", "--model", str(tmp_path / "none")],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(main, b"\x04")  # end of input, as Ctrl-D at the terminal
        _, stderr = server.communicate(timeout=120)
    finally:
        os.close(main)
        os.close(terminal)
    assert "waiting for an LSP client on stdin" in stderr


def test_a_pipe_gets_no_terminal_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "codegeex2_lsp", "--model", str(tmp_path / "none")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "waiting for an LSP client" not in done.stderr
