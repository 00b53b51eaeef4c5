"""Prefill ahead of the request: the prompt it keeps, its place behind requests, its chunks.

The engine's thread is held inside a prefill chunk until the test has submitted what it
tests, so what runs before what follows from the events alone, never from timing.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from codegeex2_lsp.backends.generation import Cancelled, CompletionModel, Generation
from codegeex2_lsp.backends.local import inference
from codegeex2_lsp.backends.local.inference import LocalModel
from codegeex2_lsp.backends.local.kvcache import CacheEntry
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.backends.worker import Engine, LoadListener
from codegeex2_lsp.completion.languages import tag_line
from codegeex2_lsp.completion.pipeline import (
    CompletionRequest,
    PrefillRequest,
    Suggestion,
    generate,
    prepare,
    prepare_prefill,
)
from codegeex2_lsp.completion.prompt import LineTokenCache, prompt_at
from codegeex2_lsp.completion.scheduler import Scheduler
from codegeex2_lsp.lsp.text import LspText
from codegeex2_lsp.settings.fields import Settings
from codegeex2_lsp.testing import TINY_CORPUS
from tests.lsp_support import open_document, running_server, wait_for_status
from tests.support import local_flags

CHUNK = 16
"""The prefill chunk in these tests: short prompts then run in many chunks."""

URI = "file:///project/app.py"
OTHER = "file:///project/other.py"
TEXT = TINY_CORPUS[:600]
SETTINGS = Settings(max_new_tokens=12)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[Engine]:
    engine = Engine()
    ready = threading.Event()
    engine.load(
        Settings(model=str(tiny_model_dir), device="cpu", dtype="float32").load_spec(),
        LoadListener(on_ready=lambda description: ready.set()),
    )
    assert ready.wait(120)
    yield engine
    engine.close()


@pytest.fixture
def model(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> LocalModel:
    model = engine.model
    assert isinstance(model, LocalModel)
    model.forget()
    monkeypatch.setattr(inference, "PREFILL_CHUNK", CHUNK)
    return model


class Chunks:
    """Records every forward pass on the model's thread; holds the first until released."""

    def __init__(self, model: LocalModel, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        original = model._forward

        def forward(entry: CacheEntry, ids: Sequence[int], keep: int = 1) -> torch.Tensor:
            self.events.append("chunk")
            if not self.entered.is_set():
                self.entered.set()
                self.release.wait(60)
            return original(entry, ids, keep)

        monkeypatch.setattr(model, "_forward", forward)

    def mark(self, event: str) -> None:
        self.events.append(event)

    def after(self, event: str) -> list[str]:
        return self.events[self.events.index(event) + 1 :]


def cache_for(model: CompletionModel) -> LineTokenCache:
    return LineTokenCache(model.tokenizer.encode)


def prefill_of(model: CompletionModel, text: str, settings: Settings = SETTINGS) -> PrefillRequest:
    request = prepare_prefill(
        text, settings=settings, cache=cache_for(model), language_id="python", uri=URI
    )
    assert request is not None
    return request


def request_at(
    model: CompletionModel, text: str, line: int, character: int, settings: Settings = SETTINGS
) -> CompletionRequest:
    request = prepare(
        text,
        line,
        character,
        settings=settings,
        cache=cache_for(model),
        language_id="python",
        uri=URI,
        invoked=True,
    )
    assert request is not None
    return request


def end_of(text: str) -> tuple[int, int]:
    return text.count("\n"), len(text) - (text.rfind("\n") + 1)


def marked(chunks: Chunks, request: CompletionRequest) -> Callable[..., list[Suggestion]]:
    def work(model: CompletionModel, cancelled: Callable[[], bool]) -> list[Suggestion]:
        chunks.mark("request runs")
        return generate(request, model, cancelled)

    return work


def cold(engine: Engine, request: CompletionRequest) -> list[Suggestion]:
    """The answer with no kept cache at all."""
    uncached = dataclasses.replace(request, cache_bytes=0)
    ticket = engine.submit("\0cold", partial(generate, uncached))
    return ticket.future.result(60)


def test_the_prefilled_prompt_begins_every_prompt_of_the_first_window(engine: Engine) -> None:
    model = engine.model
    assert model is not None
    settings = Settings(max_new_tokens=12, max_context_tokens=140)
    text = TINY_CORPUS[:3000]
    ahead = prefill_of(model, text, settings)
    assert ahead.prompt.first_line == 0 and not ahead.prompt.trimmed
    window_lines = ahead.prompt.text.count("\n") - 1
    assert 3 < window_lines < text.count("\n"), "the window must end before the document"
    document = LspText(text)
    for line in range(window_lines + 1):
        # What a request's prompt holds above a cursor on this line.
        above = prompt_at(
            document,
            document.line_start(line),
            tag_line=tag_line("python"),
            cache=cache_for(model),
            budget=settings.prompt_budget(),
        )
        assert above.first_line == 0
        assert ahead.prompt.ids[: len(above.ids)] == above.ids, line
    # A cursor past the window gets a prompt that starts lower down.
    below = request_at(model, text, *end_of(text), settings)
    assert below.prompt.first_line > 0


def test_a_request_preempts_the_prefill_within_one_chunk_and_reuses_its_chunks(
    engine: Engine, model: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = request_at(model, TEXT, *end_of(TEXT))
    expected = cold(engine, request)
    chunks = Chunks(model, monkeypatch)
    before = model.background_prefilled
    background = Scheduler(engine).prefill(URI, lambda: prefill_of(model, TEXT))
    assert background is not None
    assert chunks.entered.wait(60)
    chunks.mark("request")
    answer = engine.submit(URI, marked(chunks, request))
    chunks.release.set()
    suggestions = answer.future.result(60)

    # The chunk running when the request came was the only one it waited for.
    assert chunks.after("request")[0] == "request runs"
    with pytest.raises(Cancelled):
        background.future.result(60)
    assert [s.text for s in suggestions] == [s.text for s in expected]
    assert suggestions[0].generation.ids == expected[0].generation.ids
    # The finished chunk stayed kept, and the request started from it.
    assert suggestions[0].generation.reused_tokens == CHUNK
    assert model.background_prefilled - before == CHUNK


def test_a_request_elsewhere_preempts_the_prefill_which_then_goes_on(
    engine: Engine, model: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = Chunks(model, monkeypatch)
    other_text = TINY_CORPUS[2000:2300]
    other = dataclasses.replace(request_at(model, other_text, *end_of(other_text)), cache_key=OTHER)
    ahead = prefill_of(model, TEXT)
    preempted, before = engine.counters.preempted, model.background_prefilled
    background = Scheduler(engine).prefill(URI, lambda: ahead)
    assert background is not None
    assert chunks.entered.wait(60)
    chunks.mark("request")
    answer = engine.submit(OTHER, marked(chunks, other))
    chunks.release.set()
    answer.future.result(60)
    total = len(model.tokenizer.prefix_ids) + len(ahead.prompt.ids)

    assert chunks.after("request")[0] == "request runs"
    # It goes on from its finished chunk once the request is answered.
    assert background.future.result(60) == total - CHUNK
    assert engine.counters.preempted == preempted + 1
    assert model.background_prefilled - before == total

    request = request_at(model, TEXT, *end_of(TEXT))
    assert list(request.prompt.ids) == list(ahead.prompt.ids)
    later = engine.submit(URI, partial(generate, request)).future.result(60)
    assert later[0].generation.reused_tokens == total - 1
    assert later[0].generation.prefilled_tokens == 1
    assert later[0].generation.ids == cold(engine, request)[0].generation.ids


def test_closing_the_document_cancels_its_prefill(
    engine: Engine, model: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = Chunks(model, monkeypatch)
    scheduler = Scheduler(engine)
    background = scheduler.prefill(URI, lambda: prefill_of(model, TEXT))
    assert background is not None
    assert chunks.entered.wait(60)
    chunks.mark("closed")
    scheduler.forget(URI)
    done = engine.submit("\0after", lambda model, cancelled: None)
    chunks.release.set()
    done.future.result(60)

    with pytest.raises(Cancelled):
        background.future.result(60)
    assert chunks.after("closed") == []
    assert len(model.prefixes) == 0


def test_a_queued_request_runs_before_background_work(
    engine: Engine, model: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = Chunks(model, monkeypatch)
    order: list[str] = []
    hold = engine.submit("\0hold", lambda model, cancelled: chunks.release.wait(60))
    background = engine.submit(
        URI, lambda model, cancelled: order.append("prefill"), background=True
    )
    request = engine.submit(OTHER, lambda model, cancelled: order.append("request"))
    chunks.release.set()
    for ticket in (hold, background, request):
        ticket.future.result(60)
    assert order == ["request", "prefill"]


def test_background_work_for_a_document_with_work_waiting_is_dropped(
    engine: Engine, model: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = Chunks(model, monkeypatch)
    hold = engine.submit("\0hold", lambda model, cancelled: chunks.release.wait(60))
    request = engine.submit(URI, lambda model, cancelled: "answered")
    background = engine.submit(URI, lambda model, cancelled: "prefilled", background=True)
    chunks.release.set()
    hold.future.result(60)
    assert request.future.result(60) == "answered"
    with pytest.raises(Cancelled):
        background.future.result(60)


def test_chunk_boundaries_give_the_same_logits_and_tokens(
    model: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = model.tokenizer.prompt_ids(TEXT)

    def last_logits(chunk: int) -> torch.Tensor:
        monkeypatch.setattr(inference, "PREFILL_CHUNK", chunk)
        with torch.inference_mode():
            logits = model._prefill(CacheEntry(), ids, Generation(), lambda: False)
        assert logits is not None
        return logits

    def greedy(chunk: int) -> list[int]:
        monkeypatch.setattr(inference, "PREFILL_CHUNK", chunk)
        return model.generate(ids, inference.SamplingParams(max_new_tokens=24), cache_bytes=0).ids

    whole = last_logits(len(ids))
    for chunk in (7, CHUNK, 100):
        assert len(ids) > chunk
        torch.testing.assert_close(last_logits(chunk), whole, rtol=1e-4, atol=1e-4)
        assert greedy(chunk) == greedy(len(ids))


async def test_opening_a_document_prefills_it_unless_the_gate_refuses(
    tiny_model_dir: Path,
) -> None:
    tokenizer = read_tokenizer(tiny_model_dir)
    other_text = TINY_CORPUS[1000:1600]

    def ahead(text: str, uri: str) -> int:
        request = prepare_prefill(
            text,
            settings=Settings(),
            cache=LineTokenCache(tokenizer.encode),
            language_id="python",
            uri=uri,
        )
        assert request is not None
        return len(tokenizer.prefix_ids) + len(request.prompt.ids)

    def prefilled(current: dict[str, Any]) -> int:
        return int(current.get("prefix_cache", {}).get("prefilled_ahead", 0))

    # Without snippets from the other open document, so the prompts are the ones built here.
    options: dict[str, Any] = {"disabledLanguages": ["markdown"], "contextTokens": 0}
    async with running_server(
        *local_flags(tiny_model_dir), initialization_options=options
    ) as client:
        open_document(client, URI, TEXT)
        # Opened while the model loads: prefilled once it is ready.
        first = ahead(TEXT, URI)
        await wait_for_status(client, lambda s: prefilled(s) >= first, "prefilled")
        open_document(client, "file:///project/notes.md", TEXT, language_id="markdown")
        open_document(client, OTHER, other_text)
        # Background work runs in order: the refused document would have come first.
        both = first + ahead(other_text, OTHER)
        done = await wait_for_status(client, lambda s: prefilled(s) >= both, "both prefilled")
        assert prefilled(done) == both
        assert done["prefix_cache"]["documents"] == 2
        assert done["tokens"]["generations"] == 0
