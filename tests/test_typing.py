"""Typing through the real server: typed-ahead without the model, bursts cost one completion."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from codegeex2_lsp.config import LoadSpec
from codegeex2_lsp.context import LineTokenCache, build_prompt
from codegeex2_lsp.generation import Cancelled, CompletionModel, SamplingParams
from codegeex2_lsp.testing import write_tiny_model
from codegeex2_lsp.worker import Engine, LoadListener
from tests.lsp_support import inline, open_document, running_server, status, wait_for_state

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

        pending = []
        for i, char in enumerate("value = compute(x)"):
            type_text(client, 2 + i, LINE, 8 + i, char)
            pending.append(asyncio.ensure_future(inline(client, URI, LINE, 9 + i, invoked=False)))
        answers = await asyncio.gather(*pending)
        # Superseded requests answer empty; one that finished before the next keystroke arrived
        # (a busy machine delays the client) is the only other answer, as counted below.
        assert sum(answer != [] for answer in answers) <= 2

        after = await status(client)
        work = (after["tokens"]["prefilled"] + after["tokens"]["generated"]) - completion
        assert work <= 2 * completion
        requests = after["requests"]
        assert requests["completed"] - one["requests"]["completed"] <= 2
        assert requests["cancelled"] + requests["dropped"] >= len(answers) - 2


async def test_in_a_burst_requests_wait_for_the_pause(tiny_model_dir: Path) -> None:
    """Keystrokes 40 ms apart, longer than the 20 ms debounce: each waits 60 ms, so only the
    last reaches the model."""
    run = ("--debounce-ms", "20", "--max-new-tokens", "300", "--multiline", "always")
    async with running_server("--model", str(tiny_model_dir), "--device", "cpu", *run) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        pending = []
        for i, char in enumerate("value = compute(x)"):
            type_text(client, 2 + i, LINE, COLUMN + i, char)
            pending.append(
                asyncio.ensure_future(inline(client, URI, LINE, COLUMN + 1 + i, invoked=False))
            )
            await asyncio.sleep(0.04)
        await asyncio.gather(*pending)
        current = await status(client)
        # The first keystroke is no burst yet; a late timer on a busy machine may let one more in.
        assert current["tokens"]["generations"] <= 4
        assert current["served"]["debounced"] >= len(pending) - 4


async def test_a_burst_is_held_when_the_client_cancels_each_request(
    tiny_model_dir: Path,
) -> None:
    """As VS Code does: each keystroke cancels the last request before it asks again.

    The hold is sized well above the 40 ms gap, so a test process delayed by a busy machine
    does not let a keystroke through."""
    run = ("--debounce-ms", "50", "--max-new-tokens", "300", "--multiline", "always")
    async with running_server("--model", str(tiny_model_dir), "--device", "cpu", *run) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        pending = []
        for i, char in enumerate("value = compute(x)"):
            if pending:
                client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=f"key-{i - 1}"))
            type_text(client, 2 + i, LINE, COLUMN + i, char)
            params = types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=URI),
                position=types.Position(line=LINE, character=COLUMN + 1 + i),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Automatic
                ),
            )
            request = client.protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=f"key-{i}"
            )
            pending.append(asyncio.ensure_future(request))
            await asyncio.sleep(0.04)
        answers = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 20)
        assert not isinstance(answers[-1], BaseException)
        assert (await status(client))["tokens"]["generations"] <= 4


async def test_automatic_requests_are_debounced_and_invoked_ones_are_not(
    tiny_model_dir: Path,
) -> None:
    async with running_server(
        "--model", str(tiny_model_dir), "--device", "cpu", "--debounce-ms", "300"
    ) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        first = asyncio.ensure_future(inline(client, URI, LINE, COLUMN, invoked=False))
        await asyncio.sleep(0.05)
        type_text(client, 2, LINE, 8, "x")
        second = asyncio.ensure_future(inline(client, URI, LINE, 9, invoked=False))
        assert await first == []
        await second
        current = await status(client)
        assert current["served"]["debounced"] == 1
        assert current["tokens"]["generations"] == 1
        # An invoked request right after another is never held back, so never debounced away.
        type_text(client, 3, LINE, 9, "y")
        third = asyncio.ensure_future(inline(client, URI, LINE, 10, invoked=True))
        await asyncio.sleep(0.05)
        type_text(client, 4, LINE, 10, "z")
        await inline(client, URI, LINE, 11, invoked=True)
        await third
        current = await status(client)
        assert current["served"]["debounced"] == 1
        assert current["tokens"]["generations"] >= 3


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
