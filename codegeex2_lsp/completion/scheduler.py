"""Which requests of a document reach the model, and when: the server's per-document policy.

The newest request for a document wins; an older one is answered with an empty result, never
late with stale text, and at once if it is still waiting out its debounce. Which *answer* is
given is decided here; which *work* runs is the engine's rule (newer work for a document
supersedes older work, :meth:`Engine.submit`), so this module never second-guesses it: it
only stops work early, through the work's ticket, when no request can use its answer. An automatic
request waits ``debounceMs`` first, longer in a burst of typing. When the user types (or
deletes) along a suggestion already shown, the rest of it is answered at once, without the
model. Identical requests share one piece of model work. A document's prompt can be
prefilled before any request (:meth:`Scheduler.prefill`), as the engine's background work,
which any request pre-empts.

It knows neither LSP nor any backend: it hands work to the engine and awaits it. Time comes
from a :class:`Clock`, so tests can drive it step by step.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from codegeex2_lsp.backends.generation import Cancelled, Prefills
from codegeex2_lsp.backends.worker import Engine, Ticket
from codegeex2_lsp.completion.pipeline import (
    CompletionRequest,
    PrefillRequest,
    Suggestion,
    generate,
    prefill,
)

log = logging.getLogger(__name__)

SHOWN_PER_DOCUMENT = 8
"""Answers kept per document for typed-ahead: enough to type back and forth along a few."""

BURST_HOLD = 4
"""During a burst an automatic request waits at most this many times ``debounceMs``."""


class Clock(Protocol):
    """Where the scheduler reads the time and waits."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Shown:
    """Suggestions answered at one cursor, kept to answer the typing that follows them."""

    prefix: str
    suffix: str
    texts: tuple[str, ...]
    candidates: int

    def ahead(self, prefix: str, suffix: str) -> list[str]:
        """What is left of the suggestions once the text before the cursor is ``prefix``.

        Typing along a suggestion leaves its rest; deleting back on the same line puts the
        deleted text in front of it again. Anything else (another line, another suffix, a
        character the suggestion does not have, the whole suggestion typed) leaves nothing.
        """
        if suffix != self.suffix:
            return []
        if prefix.startswith(self.prefix):
            typed = prefix[len(self.prefix) :]
            return [t[len(typed) :] for t in self.texts if t.startswith(typed) and t != typed]
        if self.prefix.startswith(prefix):
            deleted = self.prefix[len(prefix) :]
            if "\n" in deleted or "\r" in deleted:
                return []
            return [deleted + t for t in self.texts]
        return []


@dataclass
class Served:
    """How requests were answered, for the status command: tests and benchmarks read it.

    ``by_model`` counts answers the model generated for the newest request; ``typed_ahead``
    those taken from suggestions already shown; ``debounced`` requests a newer one replaced
    before the model saw them.
    """

    by_model: int = 0
    typed_ahead: int = 0
    debounced: int = 0


@dataclass
class _Flight:
    """Model work in progress for one document, shared by identical requests."""

    request: CompletionRequest
    ticket: Ticket[list[Suggestion]]
    numbers: set[int] = field(default_factory=set)
    waiters: int = 0


@dataclass
class _DocumentState:
    """Per-document bookkeeping: which request is the newest, and what is running for it.

    Whether the last request was answered and how long ago it came tell a burst of typing;
    the suggestions shown last serve typed-ahead.
    """

    newest: int = 0
    flight: _Flight | None = None
    held: asyncio.Future[None] | None = None
    answered: bool = True
    last_request: float = float("-inf")
    gap: float = float("inf")
    shown: deque[Shown] = field(default_factory=lambda: deque(maxlen=SHOWN_PER_DOCUMENT))


class Scheduler:
    """Per-document request state in front of the engine."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock = clock or LoopClock()
        self.served = Served()
        self._documents: dict[str, _DocumentState] = {}
        self._counter = 0

    async def suggest(
        self,
        key: str,
        prepare: Callable[[], CompletionRequest | None],
        *,
        invoked: bool,
        debounce_ms: int,
    ) -> list[str]:
        """Distinct texts for the request ``prepare`` builds; empty when there is nothing to offer.

        The request's arrival is noted before ``prepare`` runs, so the time spent building it
        does not count in the gap between keystrokes. ``prepare`` returns None where nothing is
        offered; that counts as an answer, and it supersedes the document's work in flight.
        """
        state = self._documents.setdefault(key, _DocumentState())
        self._counter += 1
        number = state.newest = self._counter
        if state.held is not None and not state.held.done():
            # The request waiting out its debounce is superseded: it is answered now.
            state.held.set_result(None)
        now = self.clock.now()
        state.gap, state.last_request = now - state.last_request, now
        # The last request got no answer (superseded, cancelled by the client, or still
        # waiting) and this one comes soon after it: the user types faster than answers come.
        burst = not state.answered and state.gap < BURST_HOLD * debounce_ms / 1000
        state.answered = False
        request = prepare()
        if request is None:
            # Nothing to offer here, and the work in flight was for an older request.
            if state.flight is not None:
                state.flight.ticket.cancel()
            state.answered = True
            return []
        ahead = self._typed_ahead(state, request)
        if ahead:
            return ahead
        self._drop_stale_flight(state, request)
        if not invoked and debounce_ms:
            await self._hold(state, _debounce_seconds(debounce_ms, state.gap, burst))
            if state.newest != number:
                self.served.debounced += 1
                return []
        return await self._await_model(key, state, request, number)

    async def _hold(self, state: _DocumentState, seconds: float) -> None:
        """Wait out a debounce, or less if a newer request for the document comes first."""
        superseded = state.held = asyncio.get_running_loop().create_future()
        pause = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait((pause, superseded), return_when=asyncio.FIRST_COMPLETED)
        finally:
            pause.cancel()
            if state.held is superseded:
                state.held = None

    async def _await_model(
        self, key: str, state: _DocumentState, request: CompletionRequest, number: int
    ) -> list[str]:
        flight = self._flight_for(key, state, request)
        flight.numbers.add(number)
        flight.waiters += 1
        # Shielded: a cancelled handler must not cancel the shared future under the other
        # waiters of the flight; the last waiter to leave stops the work instead.
        waiting = asyncio.wrap_future(flight.ticket.future)
        try:
            suggestions = await asyncio.shield(waiting)
        except Cancelled:
            return []
        except asyncio.CancelledError:
            waiting.add_done_callback(_consume)
            flight.waiters -= 1
            if flight.waiters == 0:
                flight.ticket.cancel()
            raise
        finally:
            if state.flight is flight and flight.ticket.future.done():
                state.flight = None
        if state.newest not in flight.numbers:
            return []
        self.served.by_model += 1
        state.answered = True
        for suggestion in suggestions:
            generation = suggestion.generation
            # Debug, not info: info goes to the editor's log panel, once per keystroke.
            log.debug(
                "%s: %d prompt tokens (%d reused, %d prefilled), %d generated in %.0f ms (%s)",
                key,
                generation.prompt_tokens,
                generation.reused_tokens,
                generation.prefilled_tokens,
                generation.generated_tokens,
                1000 * (generation.prefill_seconds + generation.decode_seconds),
                generation.finish_reason,
            )
        texts = [suggestion.text for suggestion in suggestions]
        if texts:
            state.shown.append(
                Shown(request.prefix, request.suffix, tuple(texts), request.candidates)
            )
        return texts

    def _drop_stale_flight(self, state: _DocumentState, request: CompletionRequest) -> None:
        """Stop the document's work in flight for another request.

        Its answer could never be used (the newest request wins), so it stops now rather
        than when this request reaches the model after its debounce.
        """
        flight = state.flight
        if flight is not None and flight.request != request:
            flight.ticket.cancel()

    def _typed_ahead(self, state: _DocumentState, request: CompletionRequest) -> list[str]:
        """The rest of a suggestion the user is typing along, newest first; no model work.

        An answer from here supersedes the model work in flight for the document, which
        would only be thrown away.
        """
        for shown in reversed(state.shown):
            if shown.candidates < request.candidates:
                continue
            ahead = shown.ahead(request.prefix, request.suffix)
            if ahead:
                if state.flight is not None:
                    state.flight.ticket.cancel()
                self.served.typed_ahead += 1
                state.answered = True
                return list(dict.fromkeys(ahead))[: request.candidates]
        return []

    def _flight_for(self, key: str, state: _DocumentState, request: CompletionRequest) -> _Flight:
        """Join identical work already in flight, or submit new work superseding the old."""
        flight = state.flight
        if flight is not None and flight.request == request and not flight.ticket.future.done():
            return flight
        ticket = self.engine.submit(key, partial(generate, request))
        state.flight = _Flight(request, ticket)
        return state.flight

    def prefill(self, key: str, prepare: Callable[[], PrefillRequest | None]) -> Ticket[int] | None:
        """Prefill document ``key``'s prompt ``prepare`` builds, in the background.

        Only a model that keeps a cache of its own prefills (the prompt is not even built
        for the others). The engine runs it when no request waits and stops it for any
        request; a request for the document supersedes it, and closing the document
        cancels it. None where nothing is prefilled.
        """
        if not isinstance(self.engine.model, Prefills):
            return None
        request = prepare()
        if request is None:
            return None
        return self.engine.submit(key, partial(prefill, request), background=True)

    def waiting(self, key: str) -> int:
        """How many requests for document ``key`` wait for its model work now."""
        state = self._documents.get(key)
        return state.flight.waiters if state is not None and state.flight is not None else 0

    def forget_shown(self) -> None:
        """Suggestions shown under other settings (multiline, the model) are not reused."""
        for state in self._documents.values():
            state.shown.clear()

    def forget(self, key: str) -> None:
        """A closed document: drop its state, and have the engine free what it keeps for it.

        The engine's request to free supersedes the document's work like any newer work for
        the key, so the newest-wins rule that stops it is the engine's, in one place.
        """
        self._documents.pop(key, None)
        if self.engine.model is not None:
            self.engine.forget(key)


def _debounce_seconds(debounce_ms: int, gap: float, burst: bool) -> float:
    """How long an automatic request waits before it goes to the model.

    ``debounceMs`` normally. In a burst (keystrokes faster than answers), the request waits
    for a pause half again as long as the last gap between keystrokes, up to ``BURST_HOLD``
    debounces: the burst's next keystroke would supersede it anyway, so the burst costs about
    one completion.
    """
    wait = debounce_ms / 1000
    if burst:
        wait = max(wait, min(1.5 * gap, BURST_HOLD * wait))
    return wait


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of work nobody waits for any more as seen, so asyncio does not log it."""
    if not future.cancelled():
        future.exception()
