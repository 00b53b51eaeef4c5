"""Typing through the real server: typed-ahead without the model, bursts cost one completion."""

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
from codegeex2_lsp.backends.worker import Engine, LoadListener
from codegeex2_lsp.completion.prompt import LineTokenCache, build_prompt
from codegeex2_lsp.settings.fields import LoadSpec
from codegeex2_lsp.testing import write_tiny_model
from tests.lsp_support import (
    ask_inline,
    inline,
    open_document,
    running_server,
    status,
    wait_for_state,
)

pytestmark = pytest.mark.slow

URI = "file:///project/app.py"
SOURCE = "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        "
LINE, COLUMN = 5, 8
TAG = "# language: Python"


def flags(model_dir: Path, *extra: str) -> tuple[str, ...]:
    return ("--model", str(model_dir), "--device", "cpu", "--debounce-ms", "0", *extra)


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
    async with running_server(*flags(tiny_model_dir)) as client:
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


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wide enough that one answer takes longer than the gap between two keystrokes."""
    return write_tiny_model(
        tmp_path_factory.mktemp("wide-model"),
        num_layers=6,
        hidden_size=512,
        ffn_hidden_size=1376,
        num_attention_heads=8,
        kv_channels=64,
    )


async def test_a_burst_of_keystrokes_costs_about_one_completion(wide_model_dir: Path) -> None:
    run = ("--max-new-tokens", "300", "--multiline", "always", "--candidates", "1")
    async with running_server(*flags(wide_model_dir, *run)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        await inline(client, URI, LINE, COLUMN, invoked=False)
        one = await status(client)
        completion = one["tokens"]["prefilled"] + one["tokens"]["generated"]

        # Every keystroke and its request are written before the test yields, in typing order:
        # each request reaches the server behind the last and supersedes it long before a
        # 300-token generation could end.
        pending = []
        for i, char in enumerate("value = compute(x)"):
            type_text(client, 2 + i, LINE, 8 + i, char)
            pending.append(ask_inline(client, URI, LINE, 9 + i, invoked=False))
        answers = await asyncio.gather(*pending)
        # Superseded requests answer empty; only the last may answer. Another answer would mean
        # a whole generation ended before the server read the next message behind it.
        assert sum(answer != [] for answer in answers) <= 2

        after = await status(client)
        work = (after["tokens"]["prefilled"] + after["tokens"]["generated"]) - completion
        assert work <= 2 * completion
        requests = after["requests"]
        assert requests["completed"] - one["requests"]["completed"] <= 2
        assert requests["cancelled"] + requests["dropped"] >= len(answers) - 2


HELD = (
    "--debounce-ms",
    "2000",
    "--candidates",
    "1",
    "--max-new-tokens",
    "300",
    "--multiline",
    "always",
)
"""A debounce far longer than these tests take: an automatic request they send is answered
only when a newer request supersedes it, so what reaches the model depends on the order of
the messages alone."""
TYPED = "value = compute(x)"


async def test_a_burst_of_typing_reaches_the_model_once(tiny_model_dir: Path) -> None:
    """Each keystroke's automatic request waits for the pause; the next keystroke's request
    supersedes it and it is answered empty at once. The completion the user invokes at the end
    is the burst's one piece of model work."""
    async with running_server("--model", str(tiny_model_dir), "--device", "cpu", *HELD) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        pending = []
        for i, char in enumerate(TYPED):
            type_text(client, 2 + i, LINE, COLUMN + i, char)
            pending.append(ask_inline(client, URI, LINE, COLUMN + 1 + i, invoked=False))
        await inline(client, URI, LINE, COLUMN + len(TYPED), invoked=True)
        assert await asyncio.gather(*pending) == [[] for _ in TYPED]
        current = await status(client)
        assert current["served"]["debounced"] == len(TYPED)
        assert current["tokens"]["generations"] == 1


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
        current = await status(client)
        assert current["requests"]["cancelled"] == 0
        assert current["tokens"]["generations"] == 1


async def test_automatic_requests_wait_and_invoked_ones_do_not(tiny_model_dir: Path) -> None:
    async with running_server("--model", str(tiny_model_dir), "--device", "cpu", *HELD) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        type_text(client, 2, LINE, COLUMN, "x")
        first = ask_inline(client, URI, LINE, COLUMN + 1, invoked=False)
        type_text(client, 3, LINE, COLUMN + 1, "y")
        second = ask_inline(client, URI, LINE, COLUMN + 2, invoked=False)
        assert await first == []
        assert (await status(client))["served"]["debounced"] == 1
        # An invoked request supersedes the one still held, and goes to the model unheld.
        await inline(client, URI, LINE, COLUMN + 2, invoked=True)
        assert await second == []
        current = await status(client)
        assert current["served"]["debounced"] == 2
        assert current["tokens"]["generations"] == 1
        # An invoked request right after another is never held back, so never debounced away.
        type_text(client, 4, LINE, COLUMN + 2, "z")
        third = ask_inline(client, URI, LINE, COLUMN + 3, invoked=True)
        type_text(client, 5, LINE, COLUMN + 3, "w")
        await inline(client, URI, LINE, COLUMN + 4, invoked=True)
        await third
        current = await status(client)
        assert current["served"]["debounced"] == 2
        assert current["tokens"]["generations"] >= 2


def test_superseded_work_waiting_in_the_queue_is_never_prefilled(tiny_model_dir: Path) -> None:
    engine = Engine()
    ready = threading.Event()
    engine.load(
        LoadSpec(str(tiny_model_dir), "cpu", "float32"),
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
