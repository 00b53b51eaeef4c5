"""The client side of the completion wire protocol: OpenAI-compatible, as vLLM speaks it.

One pooled ``httpx.AsyncClient`` per server (HTTP/1.1 keep-alive), over TCP to a base URL or
over a Unix socket. The subset used:

- ``GET {base}/models``: ``{"data": [{"id": NAME, "max_model_len": N}, ...]}``
  (``max_model_len`` is vLLM's addition; other servers may leave it out).
- ``POST {base}/completions`` with ``stream: true``: ``prompt`` is a list of token ids (or a
  string, for servers that refuse ids), ``return_token_ids: true`` asks for the ids of every
  streamed piece (``choices[0].token_ids``), ``stream_options.include_usage`` for a last chunk
  with ``usage`` (``prompt_tokens_details.cached_tokens`` when the server counts prefix cache
  hits). Events are SSE lines ``data: {json}``, ended by ``data: [DONE]``; an event
  ``{"error": {...}}`` is an error the server met after it had answered 200.
- Closing the connection before the stream ends aborts the request on the server: vLLM stops
  its work, and so must any other server speaking this protocol to us.

Every wait on the server is bounded: connecting and each read by the endpoint's ``timeout``, the
time since the last event that carried a token by it too (keep-alive comments do not count), and
a whole answer by ``answer_timeout``. Every read is bounded in size (a line, an answer, a model
list, an error body), and an answer that is not what the protocol says is one clear error, so a
broken or hostile server costs a message and a backoff, never memory or a hung request.

Every failure becomes a :class:`RemoteError`, a :class:`~codegeex2_lsp.errors.LoadError` with a
``kind`` and a hint saying what to check. Messages never carry the API key, nor the user and
password part of a URL.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.fields import API_KEY_VARIABLE

log = logging.getLogger(__name__)

ErrorKind = Literal[
    "unreachable", "timeout", "auth", "model", "refused", "server", "cut", "garbled"
]

_TRANSIENT: frozenset[ErrorKind] = frozenset({"unreachable", "timeout", "server", "cut"})

_DETAIL_CHARS = 300
"""How much of a server's error body goes into a message: enough to say what it disliked."""

MAX_LINE_BYTES = 4 * 2**20
"""The longest event line read: the first event repeats the prompt's ids, a few hundred KB at
most for the longest context; a line that goes on past this is not an answer."""

MAX_ANSWER_BYTES = 64 * 2**20
"""The most one answer's stream may carry, all events together."""

MAX_JSON_BYTES = 4 * 2**20
"""The most a model list or an error body may be."""


class RemoteError(LoadError):
    """A failure talking to the completion server.

    ``kind`` says which (``unreachable``, ``timeout``, ``auth``, ``model``, ``refused`` for
    another 4xx, ``server`` for 5xx or an error event, ``cut`` for a stream that ended early,
    ``garbled`` for an answer that breaks the protocol);
    ``status`` is the HTTP status when there was one. ``transient`` kinds are worth retrying
    as they are; the others need a change on one side, but are retried too, more slowly.
    """

    def __init__(self, kind: ErrorKind, message: str, hint: str, status: int | None = None):
        super().__init__(message, hint)
        self.kind: ErrorKind = kind
        self.status = status
        self.transient = kind in _TRANSIENT


@dataclass(frozen=True)
class Endpoint:
    """Where the server is: a base URL (``.../v1``), over TCP or, with ``socket``, a Unix socket.

    With a socket, the URL's host is only a name and its path still prefixes every route.
    ``timeout`` (seconds) bounds connecting, each wait for data and the time since the last
    token, so a stream that stalls, or sends only keep-alives, fails instead of hanging;
    ``answer_timeout`` bounds a whole answer, however steadily it streams. The key is left out
    of ``repr`` so it cannot reach a log.
    """

    base_url: str
    socket: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    answer_timeout: float = 120.0

    @property
    def display(self) -> str:
        """The address for messages: the URL without user and password, or the socket."""
        if self.socket is not None:
            return f"unix:{self.socket}"
        return redact_url(self.base_url)


def redact_url(url: str) -> str:
    """``url`` without its user and password part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host))


@dataclass(frozen=True)
class ServedModel:
    """One entry of ``GET /models``; ``max_model_len`` is None where the server does not say."""

    id: str
    max_model_len: int | None = None


@dataclass
class Piece:
    """One streamed event: the new text and, when the server sends them, the new token ids."""

    text: str = ""
    ids: list[int] | None = None
    finish_reason: str | None = None


@dataclass
class Usage:
    """The last chunk's accounting: prompt tokens, those the prefix cache served, generated.

    ``server_seconds`` is the engine's own time for the request (queued to last token) when
    the server reports it (vLLM with ``--enable-per-request-metrics``).
    """

    prompt_tokens: int = 0
    cached_tokens: int | None = None
    completion_tokens: int = 0
    server_seconds: float | None = None


@dataclass
class _Watch:
    """When one answer's stream began, and when its last token came."""

    started: float
    last_token: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_token = self.started


class WireClient:
    """One server's connection pool and the two calls the protocol has.

    Proxies (``HTTPS_PROXY``, ``NO_PROXY``, ...) and CA bundles (``SSL_CERT_FILE``,
    ``SSL_CERT_DIR``) come from the environment for TCP; https is always verified. Use from one
    event loop; :meth:`aclose` releases the pool. ``clock`` times the stream bounds.
    """

    def __init__(self, endpoint: Endpoint, clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self.clock = clock
        # Compressed answers would make the size bounds count the wire, not what is decoded.
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        transport = (
            httpx.AsyncHTTPTransport(uds=endpoint.socket) if endpoint.socket is not None else None
        )
        self._http = httpx.AsyncClient(
            base_url=endpoint.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(endpoint.timeout),
            transport=transport,
            trust_env=True,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def models(self) -> list[ServedModel]:
        """The models the server serves, from ``GET {base}/models``."""
        try:
            async with self._http.stream("GET", "models") as response:
                text = await self._read(response, MAX_JSON_BYTES)
        except httpx.HTTPError as error:
            raise self._transport_error(error) from error
        if response.status_code != 200:
            raise self._status_error(response.status_code, text, route="models")
        try:
            entries = json.loads(text)["data"]
            return [
                ServedModel(str(entry["id"]), _positive_int(entry.get("max_model_len")))
                for entry in entries
            ]
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise RemoteError(
                "refused",
                f"{self.endpoint.display}/models is not an OpenAI-compatible model list",
                "check codegeex2.serverUrl: it is the API's base URL, usually ending in /v1",
                response.status_code,
            ) from error

    @asynccontextmanager
    async def stream(
        self, body: Mapping[str, Any], usage: Usage | None = None
    ) -> AsyncIterator[AsyncIterator[Piece]]:
        """``POST {base}/completions`` with ``stream: true``; yields an iterator of pieces.

        Leaving the ``async with`` before the stream ended closes the connection, which is how
        the server learns to stop. ``usage`` is filled from the last chunk when it has one.
        """
        request = {**body, "stream": True}
        try:
            async with self._http.stream("POST", "completions", json=request) as response:
                if response.status_code != 200:
                    text = await self._read(response, MAX_JSON_BYTES)
                    raise self._status_error(response.status_code, text, route="completions")
                yield self._pieces(response, usage)
        except httpx.HTTPError as error:
            raise self._transport_error(error) from error

    async def _read(self, response: httpx.Response, limit: int) -> str:
        """A whole (small) body as text, refused once it grows past ``limit`` bytes."""
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > limit:
                raise self._garbled(f"a body of more than {limit // 2**20} MiB")
        return body.decode("utf-8", errors="replace")

    async def _lines(self, response: httpx.Response, watch: _Watch) -> AsyncIterator[str]:
        """The stream's lines, each bounded, and the whole answer bounded in size and time.

        A line counts only once its newline came: a stream cut in the middle of one is cut.
        """
        buffer = bytearray()
        received = 0
        async for chunk in response.aiter_raw():
            self._check_time(watch)
            received += len(chunk)
            if received > MAX_ANSWER_BYTES:
                raise self._garbled(f"an answer of more than {MAX_ANSWER_BYTES // 2**20} MiB")
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end]).rstrip(b"\r")
                del buffer[: end + 1]
                yield line.decode("utf-8", errors="replace")
                self._check_time(watch)
            if len(buffer) > MAX_LINE_BYTES:
                raise self._garbled(f"a line of more than {MAX_LINE_BYTES // 2**20} MiB")

    def _check_time(self, watch: _Watch) -> None:
        now = self.clock()
        if now - watch.started > self.endpoint.answer_timeout:
            raise RemoteError(
                "timeout",
                f"the completion server at {self.endpoint.display} did not finish an answer "
                f"within {self.endpoint.answer_timeout:.0f} s",
                "check the server's load",
            )
        if now - watch.last_token > self.endpoint.timeout:
            raise RemoteError(
                "timeout",
                f"the completion server at {self.endpoint.display} sent no token within "
                f"{self.endpoint.timeout * 1000:.0f} ms",
                "check the server's load, or raise codegeex2.requestTimeoutMs",
            )

    async def _pieces(self, response: httpx.Response, usage: Usage | None) -> AsyncIterator[Piece]:
        finished = False
        watch = _Watch(self.clock())
        async for line in self._lines(response, watch):
            if not line.startswith("data:"):
                continue  # blank separators, SSE comments and other fields
            data = line[5:].strip()
            if data == "[DONE]":
                return
            event = self._event(data)
            if "error" in event or event.get("object") == "error":
                raise self._event_error(event)
            if usage is not None and isinstance(event.get("usage"), Mapping):
                _read_usage(event["usage"], usage)
                _read_metrics(event.get("metrics"), usage)
            for piece in self._choices(event):
                if piece.text or piece.ids or piece.finish_reason is not None:
                    watch.last_token = self.clock()
                finished = finished or piece.finish_reason is not None
                yield piece
        if not finished:
            raise self._cut("the stream ended before the answer was complete")

    def _event(self, data: str) -> Mapping[str, Any]:
        try:
            event = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise self._garbled(f"an event that is not JSON: {data[:80]!r}") from error
        if not isinstance(event, Mapping):
            raise self._garbled(f"an event that is not a JSON object: {data[:80]!r}")
        return event

    def _choices(self, event: Mapping[str, Any]) -> list[Piece]:
        """The event's choices as pieces, each field checked for the type the protocol gives."""
        choices = event.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, Mapping) for c in choices):
            raise self._garbled("choices that are not a list of objects")
        pieces = []
        for choice in choices:
            text, ids, reason = (choice.get(k) for k in ("text", "token_ids", "finish_reason"))
            if not isinstance(text, str | None) or not isinstance(reason, str | None):
                raise self._garbled("a choice whose text or finish_reason is not a string")
            if ids is not None and not (
                isinstance(ids, list)
                and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
            ):
                raise self._garbled(f"token_ids that are not token ids: {str(ids)[:80]!r}")
            pieces.append(Piece(text=text or "", ids=ids, finish_reason=reason))
        return pieces

    def _garbled(self, what: str) -> RemoteError:
        return RemoteError(
            "garbled",
            f"the completion server at {self.endpoint.display} sent {what}",
            "check that codegeex2.serverUrl is an OpenAI-compatible completions server "
            "(vLLM, or codegeex2-lsp serve), and its log",
        )

    def _cut(self, what: str) -> RemoteError:
        return RemoteError(
            "cut",
            f"the completion server at {self.endpoint.display} broke off an answer: {what}",
            "check the server's log: it may have restarted or run out of memory",
        )

    def _transport_error(self, error: httpx.HTTPError) -> RemoteError:
        where = self.endpoint.display
        if isinstance(error, httpx.ConnectTimeout | httpx.ConnectError):
            return RemoteError(
                "unreachable",
                f"cannot reach the completion server at {where} ({type(error).__name__})",
                "check that the server runs and that codegeex2.serverUrl is right "
                "(and HTTPS_PROXY/NO_PROXY, if a proxy is in the way)",
            )
        if isinstance(error, httpx.TimeoutException):
            return RemoteError(
                "timeout",
                f"the completion server at {where} did not answer within "
                f"{self.endpoint.timeout * 1000:.0f} ms",
                "check the server's load, or raise codegeex2.requestTimeoutMs",
            )
        if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            return self._cut(type(error).__name__)
        return RemoteError(
            "unreachable",
            f"talking to the completion server at {where} failed: {error}",
            "check codegeex2.serverUrl, the server, and for https its certificate "
            "(SSL_CERT_FILE for a private CA)",
        )

    def _status_error(self, status: int, body: str, *, route: str) -> RemoteError:
        where = self.endpoint.display
        detail = _error_message(body)
        if status in (401, 403):
            if self.endpoint.api_key:
                hint = f"set {API_KEY_VARIABLE} to a key the server accepts"
            else:
                hint = f"the server wants an API key: set {API_KEY_VARIABLE}"
            return RemoteError(
                "auth", f"the completion server at {where} refused access ({status})", hint, status
            )
        if status == 404 and route == "completions" and "model" in detail.lower():
            return RemoteError(
                "model",
                f"the completion server at {where} does not serve that model: {detail}",
                "set codegeex2.servedModel to one the server lists, or leave it empty",
                status,
            )
        if status == 404:
            return RemoteError(
                "refused",
                f"{where}/{route} does not exist (404)",
                "check codegeex2.serverUrl: it is the API's base URL, usually ending in /v1",
                status,
            )
        if status >= 500:
            return RemoteError(
                "server",
                f"the completion server at {where} failed ({status}): {detail}",
                "check the server's log",
                status,
            )
        return RemoteError(
            "refused",
            f"the completion server at {where} refused the request ({status}): {detail}",
            "check that the server runs a CodeGeeX2 or ChatGLM2 model, and its log",
            status,
        )

    def _event_error(self, event: Mapping[str, Any]) -> RemoteError:
        error = event.get("error")
        body = error if isinstance(error, Mapping) else event
        code = body.get("code")
        status = code if isinstance(code, int) else None
        message = str(body.get("message") or body)[:_DETAIL_CHARS]
        if status is not None and 400 <= status < 500:
            return self._status_error(status, json.dumps({"message": message}), route="completions")
        return RemoteError(
            "server",
            f"the completion server at {self.endpoint.display} failed mid-answer: {message}",
            "check the server's log",
            status,
        )


def _error_message(body: str) -> str:
    """The human part of an error body: OpenAI's ``error.message``, else the text itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:_DETAIL_CHARS]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:_DETAIL_CHARS]
        if isinstance(data.get("detail"), str | list):
            return str(data["detail"])[:_DETAIL_CHARS]
    return body.strip()[:_DETAIL_CHARS]


def _read_usage(raw: Mapping[str, Any], usage: Usage) -> None:
    """The counts the server gave; one that is not a count is left out, it is only accounting."""
    usage.prompt_tokens = _count(raw.get("prompt_tokens")) or 0
    usage.completion_tokens = _count(raw.get("completion_tokens")) or 0
    details = raw.get("prompt_tokens_details")
    if isinstance(details, Mapping):
        usage.cached_tokens = _count(details.get("cached_tokens"))


def _read_metrics(raw: Any, usage: Usage) -> None:
    if not isinstance(raw, Mapping):
        return
    queue, first = raw.get("queue_time_ms"), raw.get("time_to_first_token_ms")
    if isinstance(queue, int | float) and isinstance(first, int | float):
        generation = raw.get("generation_time_ms")
        total = queue + first + (generation if isinstance(generation, int | float) else 0.0)
        usage.server_seconds = total / 1000


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
