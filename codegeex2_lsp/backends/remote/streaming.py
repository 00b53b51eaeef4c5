"""A completion model that lives on a server: the remote side of the ``CompletionModel`` protocol.

The LSP side builds and trims the prompt exactly, in token ids, as for the local model; this
class sends it, streams the answer back token by token and applies the same early stop and
cancellation checks as the local decode loop, closing the stream (which aborts the request on
the server) the moment the answer is settled or no longer wanted. Answers that carry token ids
are decoded here with the same tokenizer, so the text is what the local model would produce.

It runs its own asyncio event loop on the calling thread (the engine's one model thread), so
the HTTP connection pool outlives each call without a thread of its own.

After a failure every call fails at once with the same error until a backoff has passed (0.5 s,
doubling up to 10 s), so a server that is down costs no time per keystroke; the first call after
the backoff tries again, and a success ends the outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from codegeex2_lsp.backends.generation import (
    Cancelled,
    Continuation,
    Generation,
    SamplingParams,
    StopCheck,
    Totals,
)
from codegeex2_lsp.backends.remote.http import Piece, RemoteError, ServedModel, Usage, WireClient
from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer

log = logging.getLogger(__name__)

PromptForm = Literal["ids", "text"]

CANCEL_POLL_SECONDS = 0.01
"""How often ``cancelled()`` is asked while waiting for the server, between streamed tokens."""

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0

SUPPRESS_BIAS = -100.0
"""The strongest bias the OpenAI API (and vLLM) accepts: the id is never sampled."""

_TEXT_ONLY_SERVERS: set[str] = set()
"""Servers that refused a token-id prompt and took the text: remembered for the process."""


@dataclass
class Backoff:
    """When to try a failing server again; ``clock`` is injectable for tests."""

    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    retry_at: float = float("-inf")
    error: RemoteError | None = None

    def check(self) -> None:
        """Raise the last error while its backoff lasts."""
        if self.error is not None and self.clock() < self.retry_at:
            raise self.error

    def failed(self, error: RemoteError) -> None:
        self.failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
        self.retry_at = self.clock() + delay
        self.error = error

    def succeeded(self) -> bool:
        """Forget the outage; True when there was one, so the caller can say it is over."""
        was_down = self.error is not None
        self.failures, self.retry_at, self.error = 0, float("-inf"), None
        return was_down


class RemoteModel:
    """The ``CompletionModel`` of a server reached through ``client``, serving ``served``.

    ``context_tokens`` is the server's context length when it reports one: prompts plus
    generated tokens must fit it. ``label`` names the backend in status (``openai``, ...).
    With ``identity`` (a server of our own, which keeps a cache per document) each request
    names its caller in ``user`` and its document in ``vllm_xargs.document``; a third-party
    server is told neither.
    """

    def __init__(
        self,
        tokenizer: ChatGLM2Tokenizer,
        client: WireClient,
        served: ServedModel,
        *,
        loop: asyncio.AbstractEventLoop,
        label: str = "openai",
        identity: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokenizer = tokenizer
        self.identity = identity
        self.totals = Totals()
        self.client = client
        self.served = served
        self.label = label
        self.context_tokens = served.max_model_len
        self.backoff = Backoff(clock)
        self.answers: PromptForm | None = None
        self.last_server_seconds: float | None = None
        """The engine's own time for the last answer read to its end, when the server says."""
        self._loop = loop
        self._key = client.endpoint.display
        self._prompt_form: PromptForm = "text" if self._key in _TEXT_ONLY_SERVERS else "ids"
        self._form_known = self._prompt_form == "text"
        # Up to the last special id: the server's vocabulary may be padded further, but by how
        # much the API does not say, and ids it rejects would fail every request.
        specials = tokenizer.suppressed_ids(tokenizer.eop_id + 1)
        self._logit_bias = {str(i): SUPPRESS_BIAS for i in specials}

    @property
    def prompt_form(self) -> PromptForm:
        """How prompts go: token ids, or text for a server that refused ids."""
        return self._prompt_form

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        should_stop: StopCheck | None = None,
        cache_key: str = "",
        cache_bytes: int = 0,
    ) -> Generation:
        """Continue ``prompt_ids`` (with ``[gMASK] sop``) on the server, as the local model does.

        ``cache_key`` and ``cache_bytes`` are the local model's; the server keeps its own prefix
        cache. Raises :class:`Cancelled` once ``cancelled()`` is true, and :class:`RemoteError`
        for a failure (at once, while the backoff of an earlier one lasts).
        """
        if not prompt_ids:
            raise ValueError("empty prompt")
        self.backoff.check()
        self.totals.generations += 1
        started = time.perf_counter()
        try:
            work = self._generate(list(prompt_ids), params, cancelled, should_stop, cache_key)
            result = self.run(work)
        except RemoteError as error:
            self.backoff.failed(error)
            log.warning("completion failed: %s", error.message)
            raise
        finally:
            self.totals.seconds += time.perf_counter() - started
        if self.backoff.succeeded():
            log.info("the completion server at %s answers again", self._key)
        return result

    def run(self, work: Any) -> Any:
        """Run a coroutine on this model's event loop, on the calling thread."""
        return self._loop.run_until_complete(work)

    def forget(self, key: str | None = None) -> None:
        """Nothing to free here: the server owns its prefix cache."""

    def close(self) -> None:
        """Release the connection pool and the event loop."""
        if self._loop.is_closed():
            return
        self._loop.run_until_complete(self.client.aclose())
        self._loop.close()

    def status(self) -> dict[str, Any]:
        """The backend's part of the status command (never the key)."""
        error = self.backoff.error
        return {
            "backend": self.label,
            "server": self._key,
            "served_model": self.served.id,
            "max_model_len": self.served.max_model_len,
            "prompts": self._prompt_form,
            "answers": self.answers,
            "reachable": error is None,
            "last_error": None if error is None else f"{error.message}. {error.hint}",
        }

    # -- one request ------------------------------------------------------------------------

    async def _generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        cancelled: Callable[[], bool],
        should_stop: StopCheck | None,
        document: str,
    ) -> Generation:
        answer = self._answer(prompt_ids, params, cancelled, should_stop, document)
        task = asyncio.ensure_future(answer)
        watcher = asyncio.ensure_future(_watch(task, cancelled))
        try:
            return await task
        except asyncio.CancelledError:
            # Only the watcher cancels the task: the stream is closed, the server aborts.
            raise Cancelled from None
        finally:
            watcher.cancel()

    async def _answer(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        cancelled: Callable[[], bool],
        should_stop: StopCheck | None,
        document: str,
    ) -> Generation:
        form = self._prompt_form
        body = self._body(prompt_ids, params, form, document)
        try:
            result = await self._stream(body, prompt_ids, cancelled, should_stop)
        except RemoteError as refused:
            if self._form_known or refused.kind != "refused" or refused.status not in (400, 422):
                raise
            # A server that cannot take token ids (text-only OpenAI routes) gets the text; if
            # the text fails too, the refusal had another reason and that is what we report.
            text_body = self._body(prompt_ids, params, "text", document)
            try:
                result = await self._stream(text_body, prompt_ids, cancelled, should_stop)
            except RemoteError:
                raise refused from None
            log.info("%s refuses token-id prompts; sending text from now on", self._key)
            _TEXT_ONLY_SERVERS.add(self._key)
            self._prompt_form = "text"
        self._form_known = True
        return result

    def _body(
        self, prompt_ids: list[int], params: SamplingParams, form: PromptForm, document: str
    ) -> dict[str, Any]:
        prompt: list[int] | str = prompt_ids
        if form == "text":
            # The one place the prefix comes off: a text-only server's own tokenizer adds
            # [gMASK] sop, as ChatGLM2's does.
            tokenizer = self.tokenizer
            text_ids = prompt_ids[len(tokenizer.prefix_ids) :]
            prompt = tokenizer.decode(text_ids if tokenizer.has_prefix(prompt_ids) else prompt_ids)
        body: dict[str, Any] = {
            "model": self.served.id,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "logit_bias": self._logit_bias,
            # Servers started without a tokenizer do not know eos; vLLM then needs it here.
            "stop_token_ids": [self.tokenizer.eos_id],
            "return_token_ids": True,
            "stream_options": {"include_usage": True},
        }
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.temperature > 0:
            body["seed"] = params.seed
        if self.identity is not None:
            body["user"] = self.identity
            body["vllm_xargs"] = {"document": document}
        return body

    async def _stream(
        self,
        body: dict[str, Any],
        prompt_ids: list[int],
        cancelled: Callable[[], bool],
        should_stop: StopCheck | None,
    ) -> Generation:
        result = Generation(prompt_tokens=len(prompt_ids))
        decoder = _Decoder(self.tokenizer, prompt_ids, should_stop, result)
        usage = Usage()
        started = time.perf_counter()
        first: float | None = None
        async with self.client.stream(body, usage) as pieces:
            async for piece in pieces:
                if first is None:
                    first = time.perf_counter()
                if cancelled():
                    raise Cancelled
                if decoder.take(piece):
                    break  # leaving the stream closes it: the server stops generating
        ended = time.perf_counter()
        result.prefill_seconds = (first or ended) - started
        result.decode_seconds = ended - (first or ended)
        self.answers = "ids" if decoder.saw_ids else "text"
        self.last_server_seconds = usage.server_seconds
        cached = usage.cached_tokens or 0
        result.reused_tokens = cached
        result.prefilled_tokens = max(len(prompt_ids) - cached, 0)
        self.totals.reused += cached
        self.totals.prefilled += result.prefilled_tokens
        self.totals.generated += result.generated_tokens
        return result


class _Decoder:
    """Turns streamed pieces into the generation by the backends' per-token rule.

    Ids are decoded here (the server may have no tokenizer); a server that sends no ids is
    taken by its text, one piece standing for one token.
    """

    def __init__(
        self,
        tokenizer: ChatGLM2Tokenizer,
        prompt_ids: list[int],
        should_stop: StopCheck | None,
        result: Generation,
    ) -> None:
        self.rule = Continuation(tokenizer, prompt_ids, result, should_stop=should_stop)
        self.result = result
        self.saw_ids = False
        self.done = False

    def take(self, piece: Piece) -> bool:
        """Add ``piece``; True when the answer is settled and the stream should close.

        An answer the server ended itself is read to the end of the stream, for the usage
        chunk that follows it.
        """
        if self.done:
            return False
        if piece.ids is not None:
            self.saw_ids = True
            for token in piece.ids:
                if self.rule.add(token):
                    self.done = True
                    # A server that ignored stop_token_ids would go on after eos: stop it.
                    return self.result.finish_reason != "eos" or piece.finish_reason is None
        elif piece.text and self.rule.add_text(piece.text):
            self.done = True
            return True
        if piece.finish_reason is not None:
            self.result.finish_reason = "length" if piece.finish_reason == "length" else "eos"
            self.done = True
        return False


async def _watch(task: asyncio.Future[Any], cancelled: Callable[[], bool]) -> None:
    """Cancel ``task`` as soon as ``cancelled()`` turns true, even while no data comes."""
    while not task.done():
        if cancelled():
            task.cancel()
            return
        await asyncio.sleep(CANCEL_POLL_SECONDS)
