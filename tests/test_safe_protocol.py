"""The protocol layer in process: failing handlers are answered and logged, shown at most once."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from lsprotocol import types

from codegeex2_lsp.lsp.protocol import SHOWN_CHARS, SafeLanguageServer


class Wire:
    """Collects what the server writes, one JSON message per write."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.messages.append(json.loads(data))

    def close(self) -> None:
        pass


def failing_server() -> tuple[SafeLanguageServer, Wire]:
    server = SafeLanguageServer("test", "0")

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: SafeLanguageServer, params: types.HoverParams) -> None:
        raise RuntimeError("hover broke")

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: SafeLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        raise RuntimeError("save broke")

    wire = Wire()
    server.protocol.set_writer(wire, include_headers=False)
    return server, wire


def receive(server: SafeLanguageServer, message: dict[str, Any]) -> None:
    protocol = server.protocol
    protocol.handle_message(json.loads(json.dumps(message), object_hook=protocol.structure_message))


def test_a_failing_request_is_answered_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, wire = failing_server()
    receive(
        server, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
    )
    hover = {"textDocument": {"uri": "file:///a.py"}, "position": {"line": 0, "character": 0}}
    with caplog.at_level(logging.ERROR, logger="codegeex2_lsp"):
        receive(
            server, {"jsonrpc": "2.0", "id": 2, "method": "textDocument/hover", "params": hover}
        )
    (answer,) = [m for m in wire.messages if m.get("id") == 2]
    assert answer["error"]["code"] == -32603
    assert "hover broke" in answer["error"]["message"]
    assert any("raise RuntimeError" in record.getMessage() for record in caplog.records)
    assert not [m for m in wire.messages if m.get("method") == "window/showMessage"]


def test_a_failing_notification_is_shown_once(caplog: pytest.LogCaptureFixture) -> None:
    server, wire = failing_server()
    receive(
        server, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
    )
    saved = {"textDocument": {"uri": "file:///a.py"}}
    with caplog.at_level(logging.ERROR, logger="codegeex2_lsp"):
        for _ in range(3):
            receive(server, {"jsonrpc": "2.0", "method": "textDocument/didSave", "params": saved})
    shown = [m for m in wire.messages if m.get("method") == "window/showMessage"]
    assert len(shown) == 1
    assert "save broke" in shown[0]["params"]["message"]
    assert sum("raise RuntimeError" in record.getMessage() for record in caplog.records) == 3
    assert not [m for m in wire.messages if "id" in m and m["id"] != 1]


def test_messages_are_shown_once_per_problem_without_terminal_codes() -> None:
    server, wire = failing_server()
    long = "cannot read x.bin: \x1b[1mdo this only if you trust it\x1b[0m " + "detail " * 200
    long += ". Download the model again"
    assert server.show_once(types.MessageType.Error, long)
    assert not server.show_once(types.MessageType.Error, long)
    assert server.show_once(types.MessageType.Error, "maxNewTokens: 'x'", problem="maxNewTokens")
    assert not server.show_once(types.MessageType.Error, "maxNewTokens: -1", problem="maxNewTokens")
    shown = [
        m["params"]["message"] for m in wire.messages if m.get("method") == "window/showMessage"
    ]
    assert len(shown) == 2
    assert shown[0].startswith("cannot read x.bin: do this only if you trust it detail")
    assert "\x1b" not in shown[0]
    assert len(shown[0]) <= SHOWN_CHARS
    assert shown[0].endswith(". Download the model again")
    assert shown[1] == "maxNewTokens: 'x'"
