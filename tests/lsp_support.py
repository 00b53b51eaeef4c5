"""Helpers for end-to-end tests: start the real server over stdio, and an independent reference.

The reference greedy continuation runs the loaded model with a full forward pass per token
and no KV cache, so it shares nothing with the engine's decode loop but the weights.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities
from pytest_lsp.client import make_test_lsp_client

from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.tokenizer import read_tokenizer

READY_TIMEOUT = 60.0

_capabilities: weakref.WeakKeyDictionary[LanguageClient, types.ServerCapabilities] = (
    weakref.WeakKeyDictionary()
)


def server_capabilities(client: LanguageClient) -> types.ServerCapabilities:
    """What the server answered to ``initialize``."""
    return _capabilities[client]


@asynccontextmanager
async def running_server(
    *flags: str,
    capabilities: str | types.ClientCapabilities = "visual-studio-code",
    initialization_options: dict[str, Any] | None = None,
    position_encodings: list[types.PositionEncodingKind] | None = None,
    python_flags: Sequence[str] = (),
    cwd: Path | None = None,
    workspace_folders: Sequence[str | Path] = (),
    prepare_client: Callable[[LanguageClient], None] | None = None,
) -> AsyncIterator[LanguageClient]:
    """A client talking to ``python PYTHON_FLAGS -m codegeex2_lsp FLAGS`` over stdio, started
    in ``cwd`` (this process's by default), initialized, with ``workspace_folders`` (paths or
    URIs) as its workspace; ``prepare_client`` adds features to the client before it starts
    (requests the server sends right after ``initialized``)."""
    client = make_test_lsp_client()
    if prepare_client is not None:
        prepare_client(client)
    await client.start_io(sys.executable, *python_flags, "-m", "codegeex2_lsp", *flags, cwd=cwd)
    if isinstance(capabilities, str):
        capabilities = client_capabilities(capabilities)
    if position_encodings is not None:
        capabilities.general = types.GeneralClientCapabilities(
            position_encodings=position_encodings
        )
    try:
        result = await client.initialize_session(
            types.InitializeParams(
                capabilities=capabilities,
                initialization_options=initialization_options,
                workspace_folders=[
                    types.WorkspaceFolder(uri=uri, name=uri.rsplit("/", 1)[-1])
                    for uri in (
                        folder.as_uri() if isinstance(folder, Path) else folder
                        for folder in workspace_folders
                    )
                ]
                or None,
            )
        )
        _capabilities[client] = result.capabilities
        yield client
        await asyncio.wait_for(client.shutdown_session(), READY_TIMEOUT)
    except BaseException:
        # Without shutdown the server would wait on stdin forever: tell it to exit now.
        client.exit(None)
        raise
    finally:
        await asyncio.wait_for(client.stop(), READY_TIMEOUT)


def remote_flags(model_dir: Path, url: str) -> tuple[str, ...]:
    """The server on the openai backend at ``url``, with ``model_dir``'s tokenizer."""
    return ("--model", str(model_dir), "--backend", "openai", "--server-url", url,
            "--debounce-ms", "0")  # fmt: skip


async def status(client: LanguageClient) -> dict[str, Any]:
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="codegeex2.status")
    )
    assert isinstance(result, dict)
    return result


async def wait_for_status(
    client: LanguageClient, condition: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Poll the status command until ``condition`` holds: the test waits on what the server
    reports, never for a time it guesses; the timeout only stops a server that hangs."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    while True:
        current = await status(client)
        if condition(current):
            return current
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.005)


async def wait_for_state(client: LanguageClient, *states: str) -> dict[str, Any]:
    """Poll the status command until the model reaches one of ``states``."""
    return await wait_for_status(
        client, lambda current: current["state"] in states, f"state in {states}"
    )


async def wait_for_progress_end(client: LanguageClient) -> list[Any]:
    """The reports of the one progress the server began, once it has sent its end."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    while True:
        reports = list(client.progress_reports.values())
        if reports and isinstance(reports[0][-1], types.WorkDoneProgressEnd):
            (only,) = reports
            return only
        assert asyncio.get_running_loop().time() < deadline, "the progress never ended"
        await asyncio.sleep(0.005)


def open_document(client: LanguageClient, uri: str, text: str, language_id: str = "python") -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id=language_id, version=1, text=text
            )
        )
    )


def ask_inline(
    client: LanguageClient,
    uri: str,
    line: int,
    character: int,
    *,
    invoked: bool = True,
    msg_id: str | None = None,
) -> asyncio.Future[list[str]]:
    """Send an inline completion request now, before any other message; await the texts.

    Sending at once, not when a task first runs, keeps the order of requests and edits the
    order the test writes them in.
    """
    kind = (
        types.InlineCompletionTriggerKind.Invoked
        if invoked
        else types.InlineCompletionTriggerKind.Automatic
    )
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=kind),
    )
    # pygls's own send writes the message now; the client's checking wrapper is a coroutine
    # that would send it only when the loop next runs, behind messages written after it.
    sent = asyncio.wrap_future(
        client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
    )

    async def texts() -> list[str]:
        result = await sent
        assert isinstance(result, types.InlineCompletionList)
        for item in result.items:
            assert item.range == types.Range(start=params.position, end=params.position)
        return [str(item.insert_text) for item in result.items]

    return asyncio.ensure_future(texts())


async def inline(
    client: LanguageClient,
    uri: str,
    line: int,
    character: int,
    *,
    invoked: bool = True,
) -> list[str]:
    return await ask_inline(client, uri, line, character, invoked=invoked)


class Reference:
    """The tiny model's greedy continuation, computed without the engine."""

    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = read_tokenizer(model_dir)
        self.model = load_model(model_dir, device=torch.device("cpu"), dtype=torch.float32)

    @torch.inference_mode()
    def greedy(self, prompt_text: str, max_new_tokens: int) -> str:
        prompt = self.tokenizer.prompt_ids(prompt_text)
        vocab = self.model.config.vocab_size
        banned = torch.tensor(self.tokenizer.suppressed_ids(vocab), dtype=torch.long)
        generated: list[int] = []
        for _ in range(max_new_tokens):
            logits = self.model(input_ids=torch.tensor([prompt + generated])).logits[0, -1]
            logits[banned] = float("-inf")
            token = int(torch.argmax(logits))
            if token == self.tokenizer.eos_id:
                break
            generated.append(token)
        return self.tokenizer.decode_continuation(prompt, generated)


async def wait_for_decoding(client: LanguageClient, beyond: int) -> dict[str, Any]:
    """Poll until the server has generated more than ``beyond`` tokens in all: work is running."""
    return await wait_for_status(
        client, lambda current: current["tokens"]["generated"] > beyond, "decoding started"
    )
