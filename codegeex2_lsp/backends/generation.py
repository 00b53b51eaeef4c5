"""What every backend's model speaks: sampling parameters in, a generation out.

It imports no backend, so the LSP side (server, completion, CLI) can name these types while a
remote backend runs without torch. A backend's model implements :class:`CompletionModel`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token; temperature 0 means greedy.

    ``speculative`` lets greedy decoding check tokens drafted from the prompt, the generated
    text and ``following_ids`` (the text after the cursor) several at a time; the output is
    the same, only sooner when drafts hit. Backends without it decode one token at a time.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 0
    seed: int = 0
    speculative: bool = False
    following_ids: tuple[int, ...] = ()


@dataclass
class Generation:
    """What one generation produced and what it cost, for logs, tests and benchmarks.

    ``decode_mode`` names the backend's decode path (the local one's ``dynamic``, ``static``
    or ``compiled``), for benchmarks that compare them.
    """

    text: str = ""
    ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    finish_reason: str = "length"
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_mode: str = "dynamic"


@dataclass
class Totals:
    """Work done by the model since it was loaded, including cancelled work.

    ``reused`` counts prompt tokens whose KV came from a prefix cache instead of a prefill;
    ``generations`` counts calls of :meth:`CompletionModel.generate`, so callers can prove that
    an answer cost no model work; ``seconds`` is the time spent in them, so a benchmark can tell
    model time from the server's own.
    """

    prefilled: int = 0
    generated: int = 0
    reused: int = 0
    generations: int = 0
    seconds: float = 0.0


class Cancelled(Exception):
    """The request was cancelled or superseded while it ran; its partial work is not answered."""


StopCheck = Callable[[str], bool]
"""Called with the text generated so far after each token; True ends generation."""


class Continuation:
    """The per-token rule of every backend: one place says what a generated token does.

    End-of-text ends the answer without being kept. Any other token is appended to
    ``result``, its text decoded incrementally (``prompt_ids`` give the context a first
    character may continue), ``on_token`` hears the grown generation, and ``should_stop``
    or ``limit`` tokens settle the answer. :meth:`add` and :meth:`add_text` return True once
    it is settled; ``result.finish_reason`` says why.
    """

    def __init__(
        self,
        tokenizer: ChatGLM2Tokenizer,
        prompt_ids: Sequence[int],
        result: Generation,
        *,
        should_stop: StopCheck | None,
        limit: int | None = None,
        on_token: Callable[[Generation], None] | None = None,
    ) -> None:
        self.result = result
        self._eos_id = tokenizer.eos_id
        self._text = tokenizer.text_after(prompt_ids)
        self._should_stop = should_stop
        self._limit = limit
        self._on_token = on_token

    def add(self, token: int) -> bool:
        """Take one generated id."""
        if token == self._eos_id:
            self.result.finish_reason = "eos"
            return True
        self.result.ids.append(token)
        return self.add_text(self._text.add((token,)))

    def add_text(self, text: str) -> bool:
        """Take one token's text: from :meth:`add`, or from a server that sends no ids."""
        result = self.result
        result.generated_tokens += 1
        result.text += text
        if self._on_token is not None:
            self._on_token(result)
        if self._should_stop is not None and self._should_stop(result.text):
            result.finish_reason = "stop"
            return True
        return self._limit is not None and result.generated_tokens >= self._limit


class CompletionModel(Protocol):
    """A loaded model of any backend, used by one thread at a time (the engine's)."""

    tokenizer: ChatGLM2Tokenizer
    totals: Totals
    context_tokens: int | None
    """The most tokens (prompt and generated) the backend takes, when it has a limit of its own
    (a server's context length); None when only the settings limit the context."""

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        cancelled: Callable[[], bool],
        should_stop: StopCheck | None,
        cache_key: str,
        cache_bytes: int,
    ) -> Generation:
        """Continue ``prompt_ids`` (which include ``[gMASK] sop``) by up to ``max_new_tokens``.

        Checks ``cancelled()`` and ``should_stop`` at every token and raises :class:`Cancelled`
        once cancelled. ``cache_key`` (a document) and ``cache_bytes`` say under which key and
        within how much memory the backend may keep the prompt's state for the next request.
        """
        ...

    def forget(self, key: str | None = None) -> None:
        """Drop what is kept for one document, or for all of them."""
        ...

    def status(self) -> dict[str, Any]:
        """The backend's own part of the status command, as JSON-ready values."""
        ...


Observer = Callable[[Generation], None]
"""Hears the generation after every token: how a server streams it."""


@runtime_checkable
class ServedModel(CompletionModel, Protocol):
    """A model the ``serve`` server can serve to other processes: what it checks requests
    against, how it streams, and whether its clients may share a cached prefix.

    The server checks a request before the model thread sees it, so the model's own limits
    are facts it states rather than settings; the local backend's model is one.
    """

    @property
    def vocab_size(self) -> int:
        """How many ids the model scores (the padded vocabulary): a prompt's ids are below it."""
        ...

    @property
    def context_length(self) -> int:
        """The most tokens (prompt and generated) the model's positions cover."""
        ...

    @property
    def cached_bytes(self) -> int:
        """The memory the model keeps now for prompts' reuse."""
        ...

    def share_prefixes(self, across_keys: bool) -> None:
        """Let a cache key start from a prefix another key left (``across_keys``), or not.

        Only where every client is the same user: another's prefix would reveal their prompt.
        """
        ...

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        cancelled: Callable[[], bool],
        should_stop: StopCheck | None = None,
        cache_key: str,
        cache_bytes: int,
        observe: Observer | None = None,
    ) -> Generation:
        """As :meth:`CompletionModel.generate`; ``observe`` hears every token as it comes."""
        ...


@runtime_checkable
class ChoosesDecode(Protocol):
    """A model with a choice of decode path, set by the ``compile`` setting.

    Only some backends have one (the local one can compile its decode step); the engine
    applies the setting to those and skips the others.
    """

    def choose_decode(
        self, setting: str, context_tokens: int, progress: Callable[[str], None]
    ) -> None:
        """Use ``setting``'s decode path for ``context_tokens``; ``progress`` hears slow steps."""
        ...


@runtime_checkable
class Prefills(Protocol):
    """A model that can run a prompt into its kept KV cache before any request asks for it.

    Only the local backend has one: a server's prefix cache is its own business, and a
    prompt sent ahead would cost the server a generation. The engine runs it at the lowest
    priority, so any request pre-empts it; for the other backends a prefill is no work.
    """

    def prefill(
        self,
        prompt_ids: Sequence[int],
        *,
        cancelled: Callable[[], bool],
        cache_key: str,
        cache_bytes: int,
    ) -> int:
        """Keep ``prompt_ids``'s KV under ``cache_key``; the tokens run, 0 if already kept.

        Raises :class:`Cancelled` between chunks once ``cancelled()``; the chunks finished
        until then stay kept, for whichever request shares their prefix.
        """
        ...


@runtime_checkable
class Closes(Protocol):
    """A model holding connections or threads to release when it is replaced."""

    def close(self) -> None: ...
