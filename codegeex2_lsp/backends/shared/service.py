"""The served model's life: loading it on the model thread, who uses it, and when to leave.

Editors attach with a long-lived request that lasts as long as they run, so the server knows
its clients without heartbeats or timeouts: when the last one is gone and no request is in
flight, the idle timer starts, and the server exits when it runs out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import resource
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from codegeex2_lsp import __version__
from codegeex2_lsp.backends.generation import ServedModel
from codegeex2_lsp.backends.worker import Engine, LoadListener, Ticket
from codegeex2_lsp.settings.fields import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

FAILED_LINGER_SECONDS = 30.0
"""A server whose model failed to load stays this long to tell the editors why, then exits."""

FIRST_CLIENT_GRACE_SECONDS = 60.0
"""Until a first client attaches, the idle time is at least this: the editor that started the
server attaches as soon as it listens, and must not find it gone."""


def rss_bytes() -> int:
    """This process's resident memory now (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class Requests:
    """Completion requests since start, by how they ended; tests and ``doctor`` read them."""

    completed: int = 0
    superseded: int = 0
    disconnected: int = 0
    failed: int = 0
    in_flight: int = 0


@dataclass
class ModelService:
    """The engine with one model, its clients, and the idle timer that ends the server."""

    settings: Settings
    idle_seconds: float | None
    on_idle: Callable[[], None]
    engine: Engine = field(default_factory=Engine)
    state: str = "loading"
    progress: str = "Starting"
    failure: tuple[str, str] | None = None
    loads: int = 0
    clients: Counter[str] = field(default_factory=Counter)
    requests: Requests = field(default_factory=Requests)
    share_prefixes: bool = True
    """Whether a document may start from another client's cached prefix: only where every
    client is the same user."""
    model: ServedModel | None = None
    """The loaded model, once ready; read on the event loop for its facts, run only through
    :meth:`submit`."""
    _timer: asyncio.TimerHandle | None = None
    _attached_once: bool = False
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def served_name(self) -> str:
        return self.settings.model

    def start(self) -> None:
        """Load the model on the engine's thread; callbacks come back to this loop."""
        loop = self._loop = asyncio.get_running_loop()

        def later(callback: Callable[..., None]) -> Callable[..., None]:
            def call(*values: Any) -> None:
                loop.call_soon_threadsafe(callback, *values)

            return call

        self.engine.configure_decode(self.settings.compile, self.settings.max_context_tokens)
        self.engine.load(
            self.settings.load_spec(),
            LoadListener(
                on_progress=later(self._on_progress),
                on_ready=later(self._on_ready),
                on_failed=later(self._on_failed),
            ),
        )
        log.info("loading %s", self.settings.model)
        self._check_idle()

    def _on_progress(self, message: str) -> None:
        self.progress = message
        log.info("%s", message)

    def _on_ready(self, description: str) -> None:
        model = self.engine.model
        # The server loads its model as the local backend does, which always gives one it can
        # serve; a backend that cannot is a failure to load, told like any other.
        if not isinstance(model, ServedModel):
            self._on_failed(
                f"{type(model).__name__} cannot be served to other processes",
                'serve a model of the "local" backend',
            )
            return
        # Editors often hold the same files: let a document start from another's prefix.
        model.share_prefixes(self.share_prefixes)
        self.model = model
        self.loads += 1
        self.state, self.progress = "ready", description
        log.info("ready: %s", description)
        self._check_idle()

    def _on_failed(self, message: str, hint: str) -> None:
        self.state, self.failure = "failed", (message, hint)
        log.error("loading failed: %s (%s)", message, hint)
        self._arm(FAILED_LINGER_SECONDS)

    def submit(
        self, key: str, work: Callable[[ServedModel, Callable[[], bool]], T], owner: str
    ) -> Ticket[T]:
        """Queue ``work`` on the model thread (see :meth:`Engine.submit`), once ready.

        The engine holds one model for the server's life, the one :attr:`model` names.
        """
        model = self.model
        assert model is not None, "work is submitted only to a ready model"
        return self.engine.submit(key, lambda _, cancelled: work(model, cancelled), owner=owner)

    def attach(self, client: str) -> None:
        self.clients[client] += 1
        self._attached_once = True
        log.info("client %s attached (%d attached)", client, self.clients.total())
        self._check_idle()

    def detach(self, client: str) -> None:
        self.clients[client] -= 1
        if self.clients[client] <= 0:
            del self.clients[client]
        log.info("client %s left (%d attached)", client, self.clients.total())
        self._check_idle()

    def begin_request(self) -> None:
        self.requests.in_flight += 1
        self._check_idle()

    def end_request(self, outcome: str) -> None:
        self.requests.in_flight -= 1
        setattr(self.requests, outcome, getattr(self.requests, outcome) + 1)
        self._check_idle()

    def _check_idle(self) -> None:
        if self.state == "failed":
            return
        if self.clients or self.requests.in_flight or self.idle_seconds is None:
            self._disarm()
        elif self._timer is None:
            grace = 0.0 if self._attached_once else FIRST_CLIENT_GRACE_SECONDS
            self._arm(max(self.idle_seconds, grace))

    def _arm(self, seconds: float) -> None:
        self._disarm()
        assert self._loop is not None
        self._timer = self._loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        log.info("no clients for the idle time: exiting")
        self.on_idle()

    def status(self) -> dict[str, Any]:
        """What ``doctor`` and the tests read: the model, its loads, clients, work and memory."""
        model = self.model
        totals = model.totals if model is not None else None
        return {
            "version": __version__,
            "pid": os.getpid(),
            "state": self.state,
            "progress": self.progress,
            "failure": list(self.failure) if self.failure else None,
            "model": self.served_name,
            "spec": dataclasses.asdict(self.settings.load_spec()),
            "loads": self.loads,
            "clients": len(self.clients),
            "attached": sorted(self.clients),
            "requests": dataclasses.asdict(self.requests),
            "work": dataclasses.asdict(self.engine.counters),
            "tokens": dataclasses.asdict(totals) if totals is not None else {},
            "memory": {
                "rss": rss_bytes(),
                "prefix_cache": model.cached_bytes if model is not None else 0,
            },
            "idle_seconds": self.idle_seconds,
        }
