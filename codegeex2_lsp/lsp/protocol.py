"""JSON-RPC as the protocol requires it, whatever the client sends: a pygls protocol and server
that answer every request exactly once and keep the user's screen free of repeated errors.

pygls 2.x turns a request it cannot deserialize (a negative position, ``params: null``, an
unknown enum value) into an exception raised out of its read loop: the request id is lost, no
response is ever sent (a client waiting on it leaks it or blocks) and every such message pops
up "Error in server: ..." in the editor. Here a message that cannot be structured is answered
from its raw JSON instead: ``-32602`` naming the fields that were wrong, ``-32601`` for a
method the server does not serve, ``-32600`` for something that is not a request at all or
comes after ``shutdown``, ``-32002`` before ``initialize``. Notifications are never answered:
bad ones are logged. Errors outside any request are logged, and shown to the user once per
distinct problem per session.

The document store also lives here: the text synchronization notifications update
:class:`~codegeex2_lsp.lsp.documents.DocumentStore` instead of pygls's workspace documents. A
request sees the document as it was when the request arrived: the part of its handler before
the first wait runs before the next message is read, on stdio (pygls reads each line in a
thread) and on TCP (:class:`~codegeex2_lsp.lsp.transport.InTurn`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import cattrs
from lsprotocol import types
from pygls.exceptions import FeatureRequestError, JsonRpcException, JsonRpcInternalError
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method

from codegeex2_lsp.lsp.documents import DocumentStore
from codegeex2_lsp.lsp.transport import TcpListener, send_error

log = logging.getLogger(__name__)

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_NOT_INITIALIZED = -32002

_ALWAYS_ALLOWED = frozenset({types.INITIALIZE, types.EXIT})


@dataclass(frozen=True)
class Rejected:
    """A message that could not be turned into a request or notification, with why."""

    id: int | str | None
    method: str | None
    code: int
    reason: str


def _valid_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _describe(error: BaseException) -> str:
    """What was wrong, by field: ``... @ $.params.position.line`` for each problem found."""
    cause = error.__cause__ or error
    if isinstance(cause, cattrs.BaseValidationError):
        problems = cattrs.transform_error(cause, format_exception=lambda exc, _type: _problem(exc))
        return "; ".join(_wire_path(problem) for problem in problems)
    return str(cause) or type(cause).__name__


def _wire_path(problem: str) -> str:
    """The path in ``problem`` names Python attributes; the client knows the camelCase ones."""
    what, at, path = problem.rpartition(" @ ")
    if not at:
        return problem
    return f"{what} @ {_SNAKE.sub(lambda m: m.group(1).upper(), path)}"


def _problem(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return f"missing {error}"
    return str(error) or type(error).__name__


SHOWN_CHARS = 600
"""A message shown to the user is cut to this length; the log keeps it whole."""

_SNAKE = re.compile(r"(?<=[a-z])_([a-z])")

_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _readable(message: str) -> str:
    """``message`` without terminal colour codes (libraries put them in exception texts),
    cut in the middle to ``SHOWN_CHARS``: what failed comes first and what to do last."""
    message = _TERMINAL_CODES.sub("", message)
    if len(message) > SHOWN_CHARS:
        end = SHOWN_CHARS // 4
        message = message[: SHOWN_CHARS - end - 3] + " … " + message[-end:]
    return message


class SafeProtocol(LanguageServerProtocol):
    """The LSP protocol with a response for every request and LSP's own line breaks."""

    def __init__(self, server: LanguageServer, converter: cattrs.Converter) -> None:
        super().__init__(server, converter)
        self.documents = DocumentStore()
        self.initialize_seen = False
        self.shutdown_seen = False
        self.exit_status = 0
        """What the process should exit with: 1 after ``exit`` without ``shutdown``."""

    def _serves(self, method: str) -> bool:
        return (
            method in self.fm.features
            or method in self.fm.builtin_features
            or method == types.CANCEL_REQUEST
        )

    def structure_message(self, data: dict[str, Any]) -> Any:
        """Structure a message, or return :class:`Rejected` saying why it cannot be served.

        Called by the JSON reader for every object in a message, nested ones too: only
        objects with a ``jsonrpc`` member are messages.
        """
        if "jsonrpc" not in data:
            return data
        method = data.get("method")
        msg_id = data.get("id")
        if "method" in data:
            if "id" in data and not _valid_id(msg_id):
                return Rejected(None, None, INVALID_REQUEST, f"invalid request id {msg_id!r}")
            if not isinstance(method, str):
                return Rejected(msg_id, None, INVALID_REQUEST, f"invalid method {method!r}")
            if data["jsonrpc"] != self.VERSION:
                return Rejected(msg_id, method, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
            if not self._serves(method):
                return Rejected(msg_id, method, METHOD_NOT_FOUND, f"unknown method {method!r}")
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            return Rejected(msg_id, method, INVALID_PARAMS, _describe(error))

    def handle_message(self, message: Any) -> None:
        """Answer what cannot be served; hand the rest to pygls."""
        if isinstance(message, Rejected):
            self._reject(message)
            return
        method = getattr(message, "method", None)
        if not isinstance(getattr(message, "jsonrpc", None), str):
            if isinstance(message, dict) and "method" in message and _valid_id(message.get("id")):
                reason = "not a JSON-RPC 2.0 message"
                self._reject(Rejected(message["id"], None, INVALID_REQUEST, reason))
                return
            log.warning("ignored a message that is not JSON-RPC: %.200r", message)
            return
        msg_id = getattr(message, "id", None) if method is not None else None
        if method is not None and method not in _ALWAYS_ALLOWED:
            if not self.initialize_seen:
                reason = "the server is not initialized"
                self._reject(Rejected(msg_id, method, SERVER_NOT_INITIALIZED, reason))
                return
            if self.shutdown_seen:
                self._reject(Rejected(msg_id, method, INVALID_REQUEST, "the server is shut down"))
                return
        if method == types.INITIALIZE:
            if self.initialize_seen:
                self._reject(Rejected(msg_id, method, INVALID_REQUEST, "already initialized"))
                return
            self.initialize_seen = True
        elif method == types.SHUTDOWN:
            self.shutdown_seen = True
        elif method == types.EXIT:
            self.exit_status = 0 if self.shutdown_seen else 1
        super().handle_message(message)

    def _reject(self, rejected: Rejected) -> None:
        """Log a message that cannot be served and answer it when it is a request."""
        quiet = rejected.id is None and (rejected.method or "").startswith("$/")
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "%s %s%s: %s",
            "request" if rejected.id is not None else "notification",
            rejected.method or "(no method)",
            f" (id {rejected.id!r})" if rejected.id is not None else "",
            rejected.reason,
        )
        if rejected.id is not None:
            send_error(self, rejected.id, rejected.code, rejected.reason)

    # -- text synchronization into the document store -----------------------------------------

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(
        self, params: types.InitializeParams
    ) -> Generator[Any, Any, types.InitializeResult]:
        result = yield from super().lsp_initialize(params)
        self.documents.set_encoding(self.workspace.position_encoding)
        return result

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(
        self, params: types.DidOpenTextDocumentParams
    ) -> Generator[Any, Any, None]:
        self.documents.open(params.text_document)
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(
        self, params: types.DidChangeTextDocumentParams
    ) -> Generator[Any, Any, None]:
        self.documents.change(params)
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(
        self, params: types.DidCloseTextDocumentParams
    ) -> Generator[Any, Any, None]:
        self.documents.close(params.text_document.uri)
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None


class SafeLanguageServer(LanguageServer):
    """A pygls server on :class:`SafeProtocol` that shows each distinct problem once."""

    protocol: SafeProtocol

    def __init__(self, name: str, version: str, **kwargs: Any) -> None:
        super().__init__(name, version, protocol_cls=SafeProtocol, **kwargs)
        self._shown: set[str] = set()
        self._tcp: TcpListener | None = None

    @property
    def documents(self) -> DocumentStore:
        return self.protocol.documents

    def start_tcp(self, host: str, port: int, ready: Callable[[int], None] | None = None) -> None:
        """Serve one client at a time over TCP, reading its messages in turn (:class:`InTurn`);
        ``ready`` hears the port once it is bound (port 0 picks a free one)."""
        log.info("serving LSP on %s:%s", host, port)
        self._tcp = TcpListener(self.protocol, self.report_server_error, self.shutdown)
        self._tcp.serve(host, port, ready)

    def shutdown(self) -> None:
        super().shutdown()
        if self._tcp is not None:
            self._tcp.stop()

    @property
    def exit_status(self) -> int:
        return self.protocol.exit_status

    def show_once(self, kind: types.MessageType, message: str, problem: str | None = None) -> bool:
        """``window/showMessage`` unless the same problem was shown before this session.

        ``problem`` names it when messages about one problem differ (say, in the bad value);
        by default the message is the problem.
        """
        problem = message if problem is None else problem
        message = _readable(message)
        if problem in self._shown:
            log.info("not shown again: %s", message)
            return False
        self._shown.add(problem)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))
        return True

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Log an error with its traceback; show the user each kind once, unless an error
        response to a request already carries it.

        pygls reports here failures in handlers (as ``JsonRpcInternalError`` holding the
        traceback) and messages it could not read at all (broken JSON, invalid UTF-8).
        """
        if isinstance(error, JsonRpcInternalError):
            data = error.data if isinstance(error.data, dict) else {}
            log.error("internal error: %s\n%s", error, "".join(data.get("traceback", [])))
            problem = f"internal error ({error})"
        elif isinstance(error, JsonRpcException):
            log.warning("%s", error)
            problem = str(error)
        else:
            log.warning("unreadable message: %r", error)
            problem = "the editor sent a message that is not valid JSON-RPC"
        if source is FeatureRequestError:
            return
        self.show_once(
            types.MessageType.Error, f"CodeGeeX2: {problem}; details in the log.", problem
        )
