"""Typing through the real server: typed-ahead without the model, bursts cost one completion.

How the debounce counts a burst is test_scheduler.py's, on a clock the test drives."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import LanguageClient

from codegeex2_lsp.backends.generation import Cancelled, CompletionModel, SamplingParams
from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.backends.worker import Engine, LoadListener
from codegeex2_lsp.completion.prompt import LineTokenCache, build_prompt
from codegeex2_lsp.settings.fields import Settings
from tests.lsp_support import (
    ask_inline,
    inline,
    open_document,
    remote_flags,
    running_server,
    status,
    wait_for_state,
    wait_for_status,
)
from tests.scripted_server import Reply, ScriptedServer, tokens
from tests.support import SOURCE, local_flags

pytestmark = pytest.mark.slow

URI = "file:///project/app.py"
LINE, COLUMN = 5, 8
TAG = "# language: Python"
TYPED = "value = compute(x)"


def type_text(client: LanguageClient, version: int, line: int, column: int, text: str) -> None:
    """Insert ``text`` at (line, column), as an editor reports a keystroke."""
    here = types.Position(line=line, character=column)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=here, end=here), text=text
                )
            ],
        )
    )


def type_burst(client: LanguageClient) -> list[asyncio.Future[list[str]]]:
    """Type ``TYPED`` at the cursor, each keystroke followed by its automatic request."""
    pending = []
    for i, char in enumerate(TYPED):
        type_text(client, 2 + i, LINE, COLUMN + i, char)
        pending.append(ask_inline(client, URI, LINE, COLUMN + 1 + i, invoked=False))
    return pending


def delete_back(client: LanguageClient, version: int, line: int, column: int, count: int) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(
                        start=types.Position(line=line, character=column - count),
                        end=types.Position(line=line, character=column),
                    ),
                    text="",
                )
            ],
        )
    )


async def test_typing_along_a_suggestion_is_answered_without_the_model(
    tiny_model_dir: Path,
) -> None:
    source = SOURCE + "data = "
    async with running_server(*local_flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, source)
        column = COLUMN + len("data = ")
        (suggestion,) = await inline(client, URI, LINE, column, invoked=False)
        assert len(suggestion) >= 3
        before = await status(client)

        type_text(client, 2, LINE, column, suggestion[:2])
        assert await inline(client, URI, LINE, column + 2, invoked=False) == [suggestion[2:]]
        delete_back(client, 3, LINE, column + 2, 2)
        assert await inline(client, URI, LINE, column, invoked=False) == [suggestion]
        # Deleting past where the suggestion was shown puts the deleted text back in front.
        delete_back(client, 4, LINE, column, 1)
        assert await inline(client, URI, LINE, column - 1, invoked=False) == [
            source[-1] + suggestion
        ]

        after = await status(client)
        assert after["served"]["typed_ahead"] == 3
        assert after["tokens"]["generations"] == before["tokens"]["generations"]

        # A character the suggestion does not have goes to the model, which reuses the prompt.
        type_text(client, 5, LINE, column - 1, source[-1] + ("Z" if suggestion[0] != "Z" else "Q"))
        await inline(client, URI, LINE, column + 1, invoked=False)
        changed = await status(client)
        assert changed["tokens"]["generations"] == before["tokens"]["generations"] + 1
        assert changed["tokens"]["prefilled"] - before["tokens"]["prefilled"] <= 4
        assert changed["prefix_cache"]["documents"] == 1


async def test_a_burst_of_keystrokes_costs_one_completion(tiny_model_dir: Path) -> None:
    """The server holds every answer until the test releases it, so each request of the burst
    is superseded while the one before it is at the model or queued behind it: what is
    answered depends on the order of the messages alone."""
    tokenizer = ChatGLM2Tokenizer(tiny_model_dir / "tokenizer.model")
    release = threading.Event()
    scripted = ScriptedServer()
    answer = tokens(tokenizer.encode(" + 1"), finish="stop")
    scripted.script(Reply(events=answer))  # the backend's probe while it loads
    scripted.default = Reply(events=answer, hold=release)
    with scripted.running() as server:
        async with running_server(*remote_flags(tiny_model_dir, server.url)) as client:
            await wait_for_state(client, "ready")
            open_document(client, URI, SOURCE)
            pending = type_burst(client)
            superseded = len(TYPED) - 1
            await wait_for_status(
                client,
                lambda current: (
                    current["requests"]["cancelled"] + current["requests"]["dropped"] == superseded
                ),
                "every request but the last superseded",
            )
            release.set()
            answers = await asyncio.gather(*pending)
            after = await status(client)
    assert answers[:-1] == [[] for _ in range(superseded)]
    assert answers[-1] == [" + 1"]
    assert after["requests"]["completed"] == 1


HELD = ("--debounce-ms", "2000", "--candidates", "1")
"""The longest debounce. How many requests it holds back depends on how fast the server reads
them, so these tests check only what holds either way (a superseded request never answers
text) and that the setting arrived; the counts are test_scheduler.py's, on a clock it drives."""


async def test_a_burst_of_typing_is_answered_only_at_its_end(tiny_model_dir: Path) -> None:
    """Each keystroke's automatic request is superseded by the next one; only the completion
    the user invokes at the end answers text."""
    async with running_server("--model", str(tiny_model_dir), "--device", "cpu", *HELD) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        pending = type_burst(client)
        await inline(client, URI, LINE, COLUMN + len(TYPED), invoked=True)
        assert await asyncio.gather(*pending) == [[] for _ in TYPED]
        assert (await status(client))["settings"]["debounce_ms"] == 2000


async def test_a_burst_is_held_when_the_client_cancels_each_request(
    tiny_model_dir: Path,
) -> None:
    """As VS Code does: each keystroke cancels the last request before it asks again."""
    async with running_server("--model", str(tiny_model_dir), "--device", "cpu", *HELD) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        pending = []
        for i, char in enumerate(TYPED):
            if pending:
                client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=f"key-{i - 1}"))
            type_text(client, 2 + i, LINE, COLUMN + i, char)
            pending.append(
                ask_inline(client, URI, LINE, COLUMN + 1 + i, invoked=False, msg_id=f"key-{i}")
            )
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=f"key-{len(TYPED) - 1}"))
        await inline(client, URI, LINE, COLUMN + len(TYPED), invoked=True)
        answers = await asyncio.gather(*pending, return_exceptions=True)
        # Cancelled, or superseded by the next request before the cancel was read: never text.
        assert all(
            answer == [] or isinstance(answer, JsonRpcRequestCancelled) for answer in answers
        )


def test_superseded_work_waiting_in_the_queue_is_never_prefilled(tiny_model_dir: Path) -> None:
    engine = Engine()
    ready = threading.Event()
    engine.load(
        Settings(model=str(tiny_model_dir), device="cpu", dtype="float32").load_spec(),
        LoadListener(on_ready=lambda description: ready.set()),
    )
    assert ready.wait(60)
    release = threading.Event()
    prompts: list[int] = []

    def block(model: CompletionModel, cancelled: Callable[[], bool]) -> None:
        release.wait(10)

    def work(length: int) -> Callable[[CompletionModel, Callable[[], bool]], int]:
        def run(model: CompletionModel, cancelled: Callable[[], bool]) -> int:
            prompts.append(length)
            ids = model.tokenizer.prompt_ids(SOURCE[:length])
            params = SamplingParams(max_new_tokens=4)
            return model.generate(ids, params, cancelled=cancelled).prefilled_tokens

        return run

    try:
        engine.submit("other", block)
        tickets = [engine.submit(URI, work(length)) for length in (30, 40, len(SOURCE))]
        release.set()
        assert tickets[-1].future.result(30) > 0
        for older in tickets[:-1]:
            with pytest.raises(Cancelled):
                older.future.result(0)
        assert prompts == [len(SOURCE)]
        assert engine.counters.dropped == 2
    finally:
        engine.close()


def test_a_keystroke_encodes_only_the_line_being_typed() -> None:
    calls: list[str] = []

    def encode(text: str) -> list[int]:
        calls.append(text)
        return [ord(char) for char in text]

    cache = LineTokenCache(encode)
    above = "".join(f"line_{i} = {i}\n" for i in range(400))
    build_prompt(above + "x = ", tag_line=TAG, cache=cache, budget=2000)
    calls.clear()
    typed = build_prompt(above + "x = 1", tag_line=TAG, cache=cache, budget=2000)
    assert calls == ["x = 1"]
    assert typed == build_prompt(
        above + "x = 1", tag_line=TAG, cache=LineTokenCache(encode), budget=2000
    )
    # A new line above invalidates the kept walk; the result is still the same as fresh.
    edited = "# header\n" + above + "x = 1"
    assert build_prompt(edited, tag_line=TAG, cache=cache, budget=2000) == build_prompt(
        edited, tag_line=TAG, cache=LineTokenCache(encode), budget=2000
    )
