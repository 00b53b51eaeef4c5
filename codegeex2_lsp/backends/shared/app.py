"""The HTTP routes: vLLM's completions subset, plus health, status and the clients' attachment.

A completion becomes one unit of work on the model thread, keyed by its document (the client
and the URI), so a newer request for the same document supersedes the older one whichever
connection it came on; a request that names no document is never superseded. Every request is
answered: a superseded one, even one dropped before it started, with an ``abort`` choice.
Tokens cross from the model thread to the event loop one by one and go out as server-sent
events; when the client goes away, the work is stopped at its next token.

The event loop only moves bytes: a body is refused with 413 once it is over the size limit, before
it is parsed, and parsing and tokenizing run on a thread of their own, so a huge or deeply nested
request never stalls the health check or the other clients' streams.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from codegeex2_lsp.backends.generation import Cancelled, Generation, SamplingParams, ServedModel
from codegeex2_lsp.backends.shared.schema import (
    Answer,
    BadRequest,
    CompletionCall,
    error_body,
    parse_completion,
    random_seed,
)
from codegeex2_lsp.backends.shared.service import ModelService
from codegeex2_lsp.backends.worker import Ticket

log = logging.getLogger(__name__)

_END = None
"""What ends a unit of work's events, however it ended: sent once its ticket is settled."""

MAX_BODY_BYTES = 2 * 2**20
"""The default limit on a request body: the longest prompt a CodeGeeX2 context holds, as text or
as ids, is a few hundred KB."""


@dataclass(frozen=True)
class Policy:
    """What the server lets its clients do; the defaults fit the per-user Unix socket.

    ``one_user``: every client is the same user (the private socket), so a document may start
    from a prefix another client's document left in the cache. Over TCP the clients are people
    who must not learn each other's prompts: a prefix then serves only later requests naming
    the same client and document, so ``cached_tokens`` only ever counts the caller's own tokens,
    and requests that name none reuse nothing.
    """

    max_body_bytes: int = MAX_BODY_BYTES
    one_user: bool = True


PER_USER = Policy()
"""The per-user socket's policy: its every client is its one user."""


Handler = Callable[[Request], Awaitable[Response]]


class TooLarge(Exception):
    """A request body over the limit."""


def _error(message: str, status: int, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, param), status_code=status)


def _sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


class Job:
    """One completion: its work on the model thread and its events on the event loop."""

    def __init__(
        self,
        call: CompletionCall,
        prompt_ids: list[int],
        cache_bytes: int,
        answer: Answer,
        policy: Policy,
    ) -> None:
        self.call = call
        self.prompt_ids = prompt_ids
        self.cache_bytes = cache_bytes
        self.answer = answer
        # Only a named document has newer requests that may supersede this one.
        self.named = bool(call.document)
        self.key = f"{call.client}\0{call.document}" if self.named else f"\0{uuid.uuid4().hex}"
        # Over TCP an unnamed request's cache could serve no one else: it is not kept.
        self.keep_cache = self.named or policy.one_user
        self.seed = call.seed if call.seed is not None else random_seed()
        self.events: asyncio.Queue[tuple[int, str, list[int], str | None] | None] = asyncio.Queue()
        self.generated = 0
        self.cached = 0
        self._loop = asyncio.get_running_loop()

    def _emit(self, event: tuple[int, str, list[int], str | None] | None) -> None:
        self._loop.call_soon_threadsafe(self.events.put_nowait, event)

    def follow(self, ticket: Ticket[None]) -> None:
        """End the events when ``ticket`` settles: run to the end, failed, or dropped unstarted.

        The work's own events were sent before its future settled, so the end comes last.
        """
        ticket.future.add_done_callback(lambda future: self._emit(_END))

    def run(self, model: ServedModel, cancelled: Callable[[], bool]) -> None:
        """On the model thread: generate each of the ``n`` choices, sending every token."""
        try:
            for index in range(self.call.n):
                self._choice(model, cancelled, index)
        finally:
            if not self.keep_cache:
                model.forget(self.key)

    def _choice(self, model: ServedModel, cancelled: Callable[[], bool], index: int) -> None:
        sent_ids, sent_text = 0, ""

        def observe(generation: Generation) -> None:
            nonlocal sent_ids, sent_text
            text = generation.text
            # A character still missing bytes decodes as U+FFFD until its last byte comes.
            delta = "" if text.endswith("\ufffd") or not text.startswith(sent_text) else text
            delta = delta[len(sent_text) :]
            self._emit((index, delta, generation.ids[sent_ids:], None))
            sent_ids, sent_text = len(generation.ids), sent_text + delta

        params = SamplingParams(
            max_new_tokens=self.call.max_tokens,
            temperature=self.call.temperature,
            top_p=self.call.top_p,
            top_k=self.call.top_k,
            seed=(self.seed + index) % 2**63,
        )
        generation = model.generate(
            self.prompt_ids,
            params,
            cancelled=cancelled,
            cache_key=self.key,
            cache_bytes=self.cache_bytes,
            observe=observe,
        )
        if index == 0:
            self.cached = generation.reused_tokens
        rest = generation.text[len(sent_text) :] if generation.text.startswith(sent_text) else ""
        reason = "stop" if generation.finish_reason == "eos" else "length"
        self._emit((index, rest, generation.ids[sent_ids:], reason))

    async def stream(self, ticket: Ticket[None], service: ModelService) -> AsyncIterator[bytes]:
        """The server-sent events of the answer; leaving early stops the work."""
        outcome = "disconnected"
        first = set()
        try:
            while (event := await self.events.get()) is not _END:
                index, text, ids, reason = event
                self.generated += len(ids)
                choice = self.answer.choice(index, text, ids, reason, index not in first)
                first.add(index)
                yield _sse(self.answer.chunk(choice))
            outcome, error = await _outcome(ticket)
            if outcome == "superseded":
                yield _sse(self.answer.chunk(self.answer.choice(0, "", [], "abort", False)))
            elif error is not None:
                yield _sse(error_body(error, 500))
            if self.call.include_usage:
                yield _sse(self.answer.usage_chunk(self.generated, self.cached))
            yield _sse("[DONE]")
        finally:
            ticket.cancel()
            service.end_request(outcome)

    async def collect(self, ticket: Ticket[None], request: Request) -> tuple[str, Response]:
        """The whole answer at once, unless the client leaves first: then the work stops."""
        texts: dict[int, list[str]] = {}
        ids: dict[int, list[int]] = {}
        reasons: dict[int, str | None] = {}
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            while True:
                getting = asyncio.ensure_future(self.events.get())
                await asyncio.wait({getting, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    ticket.cancel()
                    return "disconnected", Response(status_code=499)
                event = getting.result()
                if event is _END:
                    break
                index, text, new_ids, reason = event
                texts.setdefault(index, []).append(text)
                ids.setdefault(index, []).extend(new_ids)
                reasons[index] = reason
        finally:
            gone.cancel()
        outcome, error = await _outcome(ticket)
        if error is not None:
            return outcome, _error(error, 500)
        if not texts:
            texts, ids, reasons = {0: []}, {0: []}, {0: "abort"}
        choices = [
            self.answer.choice(
                i,
                "".join(texts[i]),
                ids[i],
                "abort" if outcome != "completed" else reasons[i],
                True,
            )
            for i in sorted(texts)
        ]
        return outcome, JSONResponse(
            self.answer.body(choices, sum(map(len, ids.values())), self.cached)
        )


async def _outcome(ticket: Ticket[None]) -> tuple[str, str | None]:
    """How the work ended: ``completed``, ``superseded`` or ``failed`` with its error."""
    try:
        await asyncio.wrap_future(ticket.future)
    except Cancelled:
        return "superseded", None
    except Exception as error:
        return "failed", f"generation failed: {error}"
    return "completed", None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(
    service: ModelService,
    api_key: str | None,
    on_close: asyncio.Event,
    policy: Policy = PER_USER,
) -> Starlette:
    """The ASGI application serving ``service``; ``api_key`` guards all routes but /health."""
    service.share_prefixes = policy.one_user
    # Parsing and tokenizing, off the event loop; two at a time at most.
    parsing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="codegeex2-parse")

    def guarded(handler: Handler) -> Handler:
        """``handler`` behind the API key."""

        async def checked(request: Request) -> Response:
            if api_key is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                    return _error("invalid API key", 401)
            return await handler(request)

        return checked

    def serving(handler: Callable[[Request, ServedModel], Awaitable[Response]]) -> Handler:
        """``handler`` behind the API key, given the model; answered 503 until it is ready."""

        async def checked(request: Request) -> Response:
            model = ready_model()
            if model is None:
                return _error(f"the model is {service.state}: {service.progress}", 503)
            return await handler(request, model)

        return guarded(checked)

    def ready_model() -> ServedModel | None:
        return service.model if service.state == "ready" else None

    async def health(request: Request) -> Response:
        return Response(status_code=200 if ready_model() is not None else 503)

    async def status(request: Request) -> Response:
        return JSONResponse(service.status())

    async def models(request: Request, model: ServedModel) -> Response:
        card = {
            "id": service.served_name,
            "object": "model",
            "created": 0,
            "owned_by": "codegeex2-lsp",
            "root": service.served_name,
            "parent": None,
            "max_model_len": model.context_length,
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def completions(request: Request, model: ServedModel) -> Response:
        try:
            raw = await _read_body(request, policy.max_body_bytes)
        except TooLarge:
            return _error(f"the request body is over {policy.max_body_bytes} bytes", 413)
        loop = asyncio.get_running_loop()
        try:
            call, prompt_ids = await loop.run_in_executor(
                parsing, _prepare, raw, model, service.served_name
            )
        except BadRequest as bad:
            status = 404 if bad.param == "model" else 400
            return _error(str(bad), status, bad.param)
        answer = Answer.start(service.served_name, prompt_ids, call.return_token_ids)
        job = Job(call, prompt_ids, service.settings.prefix_cache_mb * 2**20, answer, policy)
        service.begin_request()
        ticket = service.submit(job.key, job.run, owner=call.client)
        job.follow(ticket)
        if call.stream:
            return StreamingResponse(job.stream(ticket, service), media_type="text/event-stream")
        outcome = "disconnected"
        try:
            outcome, response = await job.collect(ticket, request)
        finally:
            ticket.cancel()
            service.end_request(outcome)
        return response

    async def attach(request: Request) -> Response:
        client = request.query_params.get("client", "")

        async def attached() -> AsyncIterator[bytes]:
            service.attach(client)
            try:
                # The first line tells the client it counts; then nothing until either leaves.
                yield b": attached\n\n"
                await on_close.wait()
            finally:
                service.detach(client)

        return StreamingResponse(attached(), media_type="text/event-stream")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            on_close.set()
            service.engine.close()
            parsing.shutdown(wait=False, cancel_futures=True)

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/status", guarded(status)),
            Route("/attach", guarded(attach)),
            Route("/v1/models", serving(models)),
            Route("/v1/completions", serving(completions), methods=["POST"]),
        ],
        lifespan=lifespan,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to be over ``limit`` bytes: by its declared
    length before a byte is read, else as it arrives."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge
    return bytes(body)


def _prepare(raw: bytes, model: ServedModel, served: str) -> tuple[CompletionCall, list[int]]:
    """On a parsing thread: the checked call and its prompt's ids; :class:`BadRequest` else."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest("the request body is not JSON") from error
    except RecursionError as error:
        raise BadRequest("the request body is nested too deeply") from error
    call = parse_completion(body)
    return call, _check(call, body, model, served)


def _check(call: CompletionCall, body: Any, model: ServedModel, served: str) -> list[int]:
    """The prompt's ids, once the call is known to fit this model.

    Ids are the model's input as they are, as vLLM takes them, so they must carry
    ``[gMASK] sop`` as every backend's prompt does; a text prompt gets it from the tokenizer,
    as it would from the model's own on vLLM.
    """
    name = body.get("model")
    if name not in (None, "", served):
        raise BadRequest(f"The model `{name}` does not exist.", "model")
    tokenizer = model.tokenizer
    vocab = model.vocab_size
    ids = tokenizer.prompt_ids(call.prompt) if isinstance(call.prompt, str) else call.prompt
    if max(ids) >= vocab:
        raise BadRequest(f"token ids must be below {vocab}", "prompt")
    if not tokenizer.has_prefix(ids):
        gmask, sop = tokenizer.prefix_ids
        raise BadRequest(
            f"token ids must start with [gMASK] sop ({gmask}, {sop}), as the model's prompts do",
            "prompt",
        )
    limit = model.context_length
    if len(ids) + call.max_tokens > limit:
        raise BadRequest(
            f"this model's maximum context length is {limit} tokens; the prompt has {len(ids)} "
            f"and max_tokens asks for {call.max_tokens}",
            "max_tokens",
        )
    if not call.stop_token_ids <= {tokenizer.eos_id}:
        raise BadRequest("only the end-of-text id may stop a generation", "stop_token_ids")
    if not call.suppressed <= set(tokenizer.suppressed_ids(vocab)):
        raise BadRequest("logit_bias may keep out only special and padding ids", "logit_bias")
    return ids
