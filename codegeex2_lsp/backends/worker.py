"""The one thread that owns the model: it loads it, and runs every generation, one at a time.

Callers never touch the model. They submit work under a key (the document) and get a
future; a newer submission under the same key supersedes the older one, which is dropped
unstarted or stopped at its next token. Work is taken in turn between owners (the editors
sharing one model server), so a busy editor cannot starve a quiet one. Background work (a
prefill ahead of a request) runs only when no other work waits, and any other work pre-empts
it: it stops at its next check and waits in the queue to go on, or is dropped when the work
that pre-empted it is for the same document and so supersedes it. Loading runs on the same
thread, so a reload can never race a generation.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from codegeex2_lsp.backends.generation import Cancelled, ChoosesDecode, Closes, CompletionModel
from codegeex2_lsp.backends.loading import load_backend, release_memory
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.fields import LoadSpec

log = logging.getLogger(__name__)

LOAD_RETRY_FIRST = 1.0
LOAD_RETRY_MAX = 10.0
"""Seconds before a load that failed for a passing reason (a server not up yet) is tried
again: doubling from the first to the most, until it succeeds or another load is asked for."""

T = TypeVar("T")

DECODE_KEY = "\0decode"
"""The queue key of decode-path changes; no document has it."""

Work = Callable[[CompletionModel, Callable[[], bool]], T]
"""A unit of model work: it gets the model and a ``cancelled()`` probe to check every token."""


@dataclass
class LoadListener:
    """Callbacks from the worker thread about loading; they must hand off to their own thread."""

    on_progress: Callable[[str], None] = lambda message: None
    on_ready: Callable[[str], None] = lambda description: None
    on_failed: Callable[[str, str], None] = lambda message, hint: None


@dataclass
class Ticket(Generic[T]):
    """A submitted unit of work: its future, and the flag that stops it."""

    key: str
    work: Work[T]
    owner: str = ""
    background: bool = False
    future: concurrent.futures.Future[T] = field(default_factory=concurrent.futures.Future)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    preempt_event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop the work at its next check, or drop it if it has not started."""
        self.cancel_event.set()

    def stopped(self) -> bool:
        """The work's ``cancelled()`` probe: cancelled, or pre-empted by other work."""
        return self.cancel_event.is_set() or self.preempt_event.is_set()


@dataclass
class Counters:
    """Work done since start; tests and the status command read it."""

    completed: int = 0
    cancelled: int = 0
    dropped: int = 0
    preempted: int = 0


class Engine:
    """Owns the worker thread, the loaded model and the queue of work."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queue: deque[Ticket[Any]] = deque()
        self._pending_load: tuple[LoadSpec, LoadListener] | None = None
        self._retry: tuple[LoadSpec, LoadListener, float] | None = None
        self._retry_delay = LOAD_RETRY_FIRST
        self._running: Ticket[Any] | None = None
        self._model: CompletionModel | None = None
        self._state = "idle"
        self._closed = False
        self._decode = ("off", 0)
        self._turns = 0
        self._last_turn: dict[str, int] = {}
        self.description = ""
        self.counters = Counters()
        self._thread = threading.Thread(target=self._loop, name="codegeex2-model", daemon=True)
        self._thread.start()

    @property
    def state(self) -> str:
        """``idle``, ``loading``, ``ready`` or ``failed``."""
        return self._state

    @property
    def model(self) -> CompletionModel | None:
        """The loaded model, for its tokenizer on the caller's thread; never run it from there."""
        return self._model if self._state == "ready" else None

    def load(self, spec: LoadSpec, listener: LoadListener | None = None) -> None:
        """Load ``spec`` in the background, replacing any load that has not started yet."""
        with self._lock:
            self._pending_load = (spec, listener or LoadListener())
            self._retry = None
            self._retry_delay = LOAD_RETRY_FIRST
            self._state = "loading"
            self._lock.notify()

    def configure_decode(self, setting: str, context_tokens: int) -> None:
        """Use the ``compile`` setting's decode path for a context of ``context_tokens``.

        Applied on the worker thread: at the next load, or now if a model is loaded, queued
        behind running work so that compiling never races a generation.
        """
        with self._lock:
            changed = self._decode != (setting, context_tokens)
            self._decode = (setting, context_tokens)
        if changed and self.model is not None:
            self.submit(DECODE_KEY, lambda model, cancelled: self._apply_decode(model, log.info))

    def forget(self, key: str) -> None:
        """Stop the work for document ``key`` and free the KV cache kept for it."""
        self.submit(key, lambda model, cancelled: model.forget(key))

    def _apply_decode(self, model: CompletionModel, progress: Callable[[str], None]) -> None:
        with self._lock:
            setting, context_tokens = self._decode
        if isinstance(model, ChoosesDecode):
            model.choose_decode(setting, context_tokens, progress)

    def submit(
        self, key: str, work: Work[T], *, owner: str = "", background: bool = False
    ) -> Ticket[T]:
        """Queue ``work`` for the document ``key``, superseding earlier work for it.

        ``background`` work runs only when nothing else waits. It never supersedes the
        document's other work: while that waits or runs, background work for the document is
        dropped at once, since the other work runs what it needs itself.
        """
        ticket: Ticket[T] = Ticket(key, work, owner, background)
        with self._lock:
            running = self._running
            if background and any(
                not t.background and t.key == key for t in (*self._queue, running) if t
            ):
                self.counters.dropped += 1
                _drop(ticket)
                return ticket
            for older in [t for t in self._queue if t.key == key]:
                self._queue.remove(older)
                self.counters.dropped += 1
                _drop(older)
            if running is not None and running.key == key:
                running.cancel()
            elif running is not None and running.background and not background:
                running.preempt_event.set()
            self._queue.append(ticket)
            self._lock.notify()
        return ticket

    def close(self) -> None:
        """Stop the thread after the current work; queued work is cancelled."""
        with self._lock:
            self._closed = True
            if self._running is not None:
                self._running.cancel()
            while self._queue:
                _drop(self._queue.popleft())
            self._lock.notify()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and self._pending_load is None and not self._queue:
                    self._lock.wait(self._until_retry())
                if self._closed:
                    self._release()
                    return
                if self._pending_load is not None:
                    load, self._pending_load = self._pending_load, None
                    ticket = None
                else:
                    load = None
                    ticket = self._next()
                    self._running = ticket
            if load is not None:
                self._load(*load)
            elif ticket is not None:
                self._run(ticket)

    def _until_retry(self) -> float | None:
        """Seconds to wait for work before a failed load is due again (None: no retry).

        Called with the lock held; a retry that is due becomes the pending load.
        """
        if self._retry is None:
            return None
        spec, listener, due = self._retry
        wait = due - time.monotonic()
        if wait <= 0:
            self._retry = None
            self._pending_load = (spec, listener)
            self._state = "loading"
            return 0
        return wait

    def _next(self) -> Ticket[Any]:
        """The oldest queued work of the owner whose turn came longest ago; background work
        (oldest first) only when no other work waits, and without taking a turn."""
        foreground = [queued for queued in self._queue if not queued.background]
        if not foreground:
            return self._queue.popleft()
        ticket = min(foreground, key=lambda queued: self._last_turn.get(queued.owner, -1))
        self._queue.remove(ticket)
        self._turns += 1
        self._last_turn[ticket.owner] = self._turns
        return ticket

    def _run(self, ticket: Ticket[Any]) -> None:
        # Running, the future can no longer be cancelled by its waiter (asyncio's wrap_future
        # cancels it when the handler is cancelled), so the results below always land.
        # A pre-empted ticket going on has a running future already.
        started = ticket.future.running() or ticket.future.set_running_or_notify_cancel()
        if not started or ticket.cancel_event.is_set():
            self.counters.dropped += 1
            _drop(ticket)
            with self._lock:
                self._running = None
            return
        try:
            if self._model is None:
                raise LoadError(
                    "the model is not loaded", "wait for it to load, or fix the model setting"
                )
            result = ticket.work(self._model, ticket.stopped)
        except Cancelled as stop:
            if not self._requeue(ticket):
                self.counters.cancelled += 1
                ticket.future.set_exception(stop)
        except LoadError as failure:
            # A backend that cannot be reached: its own log line says so, the server tells
            # the user once; a traceback per keystroke would drown the log.
            ticket.future.set_exception(failure)
        except BaseException as error:
            log.exception("model work for %s failed", ticket.key)
            ticket.future.set_exception(error)
        else:
            self.counters.completed += 1
            ticket.future.set_result(result)
        finally:
            with self._lock:
                self._running = None

    def _requeue(self, ticket: Ticket[Any]) -> bool:
        """Put pre-empted background work back first in line to go on; False for work that
        was cancelled (or superseded, or the engine closed) instead."""
        with self._lock:
            if ticket.cancel_event.is_set() or not ticket.preempt_event.is_set() or self._closed:
                return False
            ticket.preempt_event.clear()
            self.counters.preempted += 1
            self._queue.appendleft(ticket)
            return True

    def _load(self, spec: LoadSpec, listener: LoadListener) -> None:
        started = time.perf_counter()
        self._release()
        try:
            model, description = load_backend(spec, listener.on_progress)
        except LoadError as failure:
            log.error(
                "loading %s failed: %s", spec.model, failure.message, exc_info=failure.__cause__
            )
            self._finish_load("failed", None)
            if failure.transient:
                self._schedule_retry(spec, listener)
            listener.on_failed(failure.message, failure.hint)
            return
        except Exception as error:
            # A failure no backend foresaw must still end the load, not this thread: the
            # window would wait for it forever, and no other setting could load again.
            log.exception("loading %s failed", spec.model)
            self._finish_load("failed", None)
            listener.on_failed(
                f"loading {spec.model} failed: {type(error).__name__}: {error}",
                "the log has the details; a change of settings tries again",
            )
            return
        self._retry_delay = LOAD_RETRY_FIRST
        self._apply_decode(model, listener.on_progress)
        seconds = time.perf_counter() - started
        self.description = f"{description}, loaded in {seconds:.1f} s"
        log.info("model ready: %s", self.description)
        # The model and the libraries make millions of long-lived objects; a full collection
        # walking them all would stall a keystroke's answer. Frozen, they are never walked.
        gc.collect()
        gc.freeze()
        self._finish_load("ready", model)
        listener.on_ready(self.description)

    def _schedule_retry(self, spec: LoadSpec, listener: LoadListener) -> None:
        with self._lock:
            if self._pending_load is not None:
                return
            self._retry = (spec, listener, time.monotonic() + self._retry_delay)
            log.info("trying to load %s again in %.0f s", spec.model, self._retry_delay)
            self._retry_delay = min(LOAD_RETRY_MAX, 2 * self._retry_delay)

    def _finish_load(self, state: str, model: CompletionModel | None) -> None:
        with self._lock:
            self._model = model
            # A newer load queued meanwhile keeps the state at "loading".
            if self._pending_load is None:
                self._state = state

    def _release(self) -> None:
        """Free the old model before loading the next, so two never share the memory."""
        with self._lock:
            model, self._model = self._model, None
        if isinstance(model, Closes):
            model.close()
        gc.unfreeze()
        release_memory()


def _drop(ticket: Ticket[Any]) -> None:
    """End ``ticket`` unstarted; its waiter may have cancelled the future already."""
    if not ticket.future.done():
        ticket.future.set_exception(Cancelled())
