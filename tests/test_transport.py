"""The transport the server owns (error responses, the TCP listener) and the pygls surface it
stands on: if a pygls release changes that surface, these tests say so by name."""

from __future__ import annotations

import inspect
import json
import socket
import threading

from pygls.io_ import run_async
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCProtocol

from codegeex2_lsp.lsp.protocol import SERVER_NOT_INITIALIZED, SafeLanguageServer
from codegeex2_lsp.lsp.transport import frame

WAIT = 30.0
"""Only stops a test whose server hangs; nothing waits for it to pass."""


def test_pygls_still_offers_what_the_transport_uses() -> None:
    parameters = list(inspect.signature(run_async).parameters)
    assert parameters == ["stop_event", "reader", "protocol", "logger", "error_handler"]
    assert list(inspect.signature(JsonRPCProtocol.set_writer).parameters)[:2] == [
        "self",
        "writer",
    ]
    assert callable(LanguageServer.shutdown)
    for hook in ("structure_message", "handle_message"):
        assert list(inspect.signature(getattr(JsonRPCProtocol, hook)).parameters)[:2] in (
            ["self", "data"],
            ["self", "message"],
        ), hook
    server = SafeLanguageServer("transport-test", "0")
    server.protocol.set_writer(_Sink())
    assert isinstance(server.protocol.writer, _Sink)


class _Sink:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


def test_a_frame_counts_bytes_and_escapes_what_is_not_ascii() -> None:
    message = {"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "wörld"}}
    header, _, body = frame(message).partition(b"\r\n\r\n")
    assert header == b"Content-Length: %d" % len(body)
    assert body.isascii()
    assert json.loads(body) == message


def _read_message(stream: socket.socket) -> dict[str, object]:
    reader = stream.makefile("rb")
    header = reader.readline()
    assert header.startswith(b"Content-Length: "), header
    length = int(header.split(b":")[1])
    while reader.readline() not in (b"\r\n", b""):
        pass
    message = json.loads(reader.read(length))
    assert isinstance(message, dict)
    return message


def test_the_tcp_listener_answers_a_rejected_request_and_stops_when_the_client_leaves() -> None:
    server = SafeLanguageServer("transport-test", "0")
    bound: list[int] = []
    listening = threading.Event()

    def ready(port: int) -> None:
        bound.append(port)
        listening.set()

    thread = threading.Thread(target=server.start_tcp, args=("127.0.0.1", 0, ready), daemon=True)
    thread.start()
    assert listening.wait(WAIT)
    with socket.create_connection(("127.0.0.1", bound[0]), timeout=WAIT) as client:
        request = {"jsonrpc": "2.0", "id": 7, "method": "shutdown"}
        client.sendall(frame(request))
        answer = _read_message(client)
    assert answer["id"] == 7
    assert isinstance(answer["error"], dict)
    assert answer["error"]["code"] == SERVER_NOT_INITIALIZED
    thread.join(WAIT)
    assert not thread.is_alive(), "the listener did not stop when its client left"
