"""The scheduler on a real engine and the tiny model, with time driven by the test.

The engine is held busy by work that waits for the test to release it, so which requests
reach the model, and in which order, depends on the events alone, never on how fast the
machine is.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from codegeex2_lsp.backends.generation import CompletionModel
from codegeex2_lsp.backends.worker import Engine, LoadListener
from codegeex2_lsp.completion.pipeline import CompletionRequest, generate, prepare
from codegeex2_lsp.completion.prompt import LineTokenCache
from codegeex2_lsp.completion.scheduler import BURST_HOLD, Scheduler
from codegeex2_lsp.settings.fields import Settings
from tests.support import SOURCE

URI = "file:///project/app.py"
DEBOUNCE_MS = 125
"""With the gaps below, every time in these tests is exact in binary floating point."""
SETTINGS = Settings(max_new_tokens=12)


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.sleeps: list[float] = []
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (self.time + seconds, id(future), future))
        await future

    async def sleeping(self, count: int) -> None:
        """Let the event loop run until ``count`` sleeps are waiting."""
        while len(self._waiting) < count:
            await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.time += seconds
        while self._waiting and self._waiting[0][0] <= self.time:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)


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


class Gate:
    """Work that holds the engine until the test opens the gate."""

    def __init__(self, engine: Engine) -> None:
        self.opened = threading.Event()
        self.ticket = engine.submit("\0gate", self._hold)

    def _hold(self, model: CompletionModel, cancelled: Callable[[], bool]) -> None:
        self.opened.wait(60)

    async def open(self) -> None:
        self.opened.set()
        await asyncio.wrap_future(self.ticket.future)


def request_at(engine: Engine, text: str, *, invoked: bool = False) -> CompletionRequest:
    model = engine.model
    assert model is not None
    line = text.count("\n")
    character = len(text) - (text.rfind("\n") + 1)
    request = prepare(
        text,
        line,
        character,
        settings=SETTINGS,
        cache=LineTokenCache(model.tokenizer.encode),
        language_id="python",
        uri=URI,
        invoked=invoked,
    )
    assert request is not None
    return request


async def expected_texts(engine: Engine, request: CompletionRequest) -> list[str]:
    """What the model suggests for ``request``, asked directly (not through the scheduler)."""
    ticket = engine.submit(
        "\0expected", lambda model, cancelled: generate(request, model, cancelled)
    )
    texts = [suggestion.text for suggestion in await asyncio.wrap_future(ticket.future)]
    assert texts and texts[0], "the case must have a non-empty suggestion"
    return texts


def ask(
    scheduler: Scheduler, request: CompletionRequest, *, invoked: bool = False
) -> asyncio.Task[list[str]]:
    return asyncio.ensure_future(
        scheduler.suggest(URI, lambda: request, invoked=invoked, debounce_ms=DEBOUNCE_MS)
    )


async def test_the_newest_request_wins_and_older_ones_are_debounced(engine: Engine) -> None:
    clock = FakeClock()
    scheduler = Scheduler(engine, clock)
    older, newest = request_at(engine, SOURCE[:-4]), request_at(engine, SOURCE)
    expected = await expected_texts(engine, newest)
    first = ask(scheduler, older)
    await clock.sleeping(1)
    second = ask(scheduler, newest)
    await clock.sleeping(2)
    clock.advance(BURST_HOLD * DEBOUNCE_MS / 1000)
    assert await first == []
    assert await second == expected
    assert scheduler.served.debounced == 1
    assert scheduler.served.by_model == 1


async def test_a_request_superseded_in_its_debounce_is_answered_at_once(engine: Engine) -> None:
    clock = FakeClock()
    scheduler = Scheduler(engine, clock)
    first = ask(scheduler, request_at(engine, SOURCE[:-4]))
    await clock.sleeping(1)
    second = ask(scheduler, request_at(engine, SOURCE))
    assert await first == []
    assert clock.time == 1000.0
    assert scheduler.served.debounced == 1
    await clock.sleeping(2)
    clock.advance(BURST_HOLD * DEBOUNCE_MS / 1000)
    assert await second


async def test_an_invoked_request_is_never_held(engine: Engine) -> None:
    clock = FakeClock()
    scheduler = Scheduler(engine, clock)
    request = request_at(engine, SOURCE, invoked=True)
    expected = await expected_texts(engine, request)
    assert await ask(scheduler, request, invoked=True) == expected
    assert clock.sleeps == []


async def test_a_request_the_client_cancelled_leaves_a_burst(engine: Engine) -> None:
    """As VS Code does: each keystroke cancels the last request before it asks again."""
    clock = FakeClock()
    scheduler = Scheduler(engine, clock)
    gap = 0.25
    first = ask(scheduler, request_at(engine, SOURCE[:-1]))
    await clock.sleeping(1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    clock.advance(gap)
    second = ask(scheduler, request_at(engine, SOURCE))
    await clock.sleeping(1)
    assert clock.sleeps == [DEBOUNCE_MS / 1000, pytest.approx(1.5 * gap)]
    clock.advance(1.5 * gap)
    assert await second
    assert scheduler.served.by_model == 1


async def test_in_a_burst_a_request_waits_for_the_pause(engine: Engine) -> None:
    clock = FakeClock()
    scheduler = Scheduler(engine, clock)
    gap = 0.25
    gate = Gate(engine)
    first = ask(scheduler, request_at(engine, SOURCE[:-2]))
    await clock.sleeping(1)
    clock.advance(gap)
    await asyncio.sleep(0)
    # The first waits for the model, unanswered, when the second comes.
    second = ask(scheduler, request_at(engine, SOURCE[:-1]))
    await clock.sleeping(1)
    # A burst: the second waits half again the gap, for the pause.
    assert clock.sleeps == [DEBOUNCE_MS / 1000, pytest.approx(1.5 * gap)]
    await gate.open()
    assert await first == []
    clock.advance(1.5 * gap)
    assert await second
    # Answered: the next request is no burst, however soon it comes.
    clock.advance(gap / 4)
    third = ask(scheduler, request_at(engine, "import sys\n" + SOURCE))
    await clock.sleeping(1)
    assert clock.sleeps[-1] == DEBOUNCE_MS / 1000
    clock.advance(DEBOUNCE_MS / 1000)
    await third


async def test_a_burst_waits_at_most_burst_hold_debounces(engine: Engine) -> None:
    clock = FakeClock()
    scheduler = Scheduler(engine, clock)
    gate = Gate(engine)
    first = ask(scheduler, request_at(engine, SOURCE[:-2]))
    await clock.sleeping(1)
    clock.advance(0.375)
    await asyncio.sleep(0)
    second = ask(scheduler, request_at(engine, SOURCE[:-1]))
    await clock.sleeping(1)
    assert clock.sleeps[-1] == pytest.approx(BURST_HOLD * DEBOUNCE_MS / 1000)
    await gate.open()
    clock.advance(BURST_HOLD * DEBOUNCE_MS / 1000)
    assert await first == []
    assert await second


async def test_typing_along_a_suggestion_is_answered_without_the_model(engine: Engine) -> None:
    scheduler = Scheduler(engine, FakeClock())
    request = request_at(engine, SOURCE, invoked=True)
    (text, *_) = await ask(scheduler, request, invoked=True)
    assert len(text) >= 2
    model = engine.model
    assert model is not None
    before = model.totals.generations
    typed = request_at(engine, SOURCE + text[:1], invoked=True)
    assert (await ask(scheduler, typed, invoked=True))[0] == text[1:]
    deleted = request_at(engine, SOURCE[:-1], invoked=True)
    assert (await ask(scheduler, deleted, invoked=True))[0] == SOURCE[-1] + text
    assert model.totals.generations == before
    assert scheduler.served.typed_ahead == 2
    scheduler.forget_shown()
    await ask(scheduler, typed, invoked=True)
    assert model.totals.generations > before


async def test_identical_requests_share_one_piece_of_model_work(engine: Engine) -> None:
    scheduler = Scheduler(engine, FakeClock())
    request = request_at(engine, SOURCE, invoked=True)
    expected = await expected_texts(engine, request)
    completed = engine.counters.completed
    gate = Gate(engine)
    one, two = ask(scheduler, request, invoked=True), ask(scheduler, request, invoked=True)
    await asyncio.sleep(0)
    await gate.open()
    assert await one == expected
    assert await two == expected
    # The gate and the one generation.
    assert engine.counters.completed == completed + 2


async def test_a_newer_request_stops_the_work_of_the_older(engine: Engine) -> None:
    scheduler = Scheduler(engine, FakeClock())
    newest = request_at(engine, SOURCE, invoked=True)
    expected = await expected_texts(engine, newest)
    dropped = engine.counters.dropped
    gate = Gate(engine)
    older = ask(scheduler, request_at(engine, SOURCE[:-4], invoked=True), invoked=True)
    await asyncio.sleep(0)
    second = ask(scheduler, newest, invoked=True)
    await asyncio.sleep(0)
    await gate.open()
    assert await older == []
    assert await second == expected
    assert engine.counters.dropped == dropped + 1


async def test_the_last_waiter_leaving_stops_the_shared_work(engine: Engine) -> None:
    scheduler = Scheduler(engine, FakeClock())
    request = request_at(engine, SOURCE, invoked=True)
    dropped = engine.counters.dropped
    gate = Gate(engine)
    one, two = ask(scheduler, request, invoked=True), ask(scheduler, request, invoked=True)
    while scheduler.waiting(URI) < 2:
        await asyncio.sleep(0)
    one.cancel()
    while scheduler.waiting(URI) > 1:
        await asyncio.sleep(0)
    assert not two.done()
    two.cancel()
    while scheduler.waiting(URI) > 0:
        await asyncio.sleep(0)
    await gate.open()
    for task in (one, two):
        with pytest.raises(asyncio.CancelledError):
            await task
    # Work is taken in order: once this has run, the shared work has been dropped.
    await asyncio.wrap_future(engine.submit("\0after", lambda model, cancelled: None).future)
    assert engine.counters.dropped == dropped + 1


async def test_nothing_to_offer_counts_as_an_answer(engine: Engine) -> None:
    clock = FakeClock()
    scheduler = Scheduler(engine, clock)
    assert await scheduler.suggest(URI, lambda: None, invoked=False, debounce_ms=DEBOUNCE_MS) == []
    clock.advance(0.01)
    task = ask(scheduler, request_at(engine, SOURCE))
    await clock.sleeping(1)
    assert clock.sleeps == [DEBOUNCE_MS / 1000]
    clock.advance(DEBOUNCE_MS / 1000)
    await task


async def test_a_burst_of_typing_reaches_the_model_once(engine: Engine) -> None:
    """Each keystroke's automatic request is superseded while it waits out its debounce and is
    answered at once; the completion the user invokes at the end is the burst's one piece of
    model work. The clock never moves: no debounce can end during the burst."""
    clock = FakeClock()
    scheduler = Scheduler(engine, clock)
    typed = "data = "
    held = []
    for end in range(1, len(typed) + 1):
        held.append(ask(scheduler, request_at(engine, SOURCE + typed[:end])))
        await clock.sleeping(end)
    invoked = request_at(engine, SOURCE + typed, invoked=True)
    expected = await expected_texts(engine, invoked)
    before = engine.counters.completed
    answer = await ask(scheduler, invoked, invoked=True)
    assert await asyncio.gather(*held) == [[] for _ in typed]
    assert answer == expected
    assert scheduler.served.debounced == len(typed)
    assert engine.counters.completed == before + 1


async def test_forgetting_a_document_stops_its_work(engine: Engine) -> None:
    scheduler = Scheduler(engine, FakeClock())
    dropped = engine.counters.dropped
    gate = Gate(engine)
    waiting = ask(scheduler, request_at(engine, SOURCE, invoked=True), invoked=True)
    while scheduler.waiting(URI) < 1:
        await asyncio.sleep(0)
    scheduler.forget(URI)
    assert scheduler.waiting(URI) == 0
    await gate.open()
    assert await waiting == []
    # Work is taken in order: once this has run, the engine has freed the document too.
    await asyncio.wrap_future(engine.submit("\0after", lambda model, cancelled: None).future)
    assert engine.counters.dropped == dropped + 1
