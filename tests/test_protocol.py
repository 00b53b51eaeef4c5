"""JSON-RPC over the real server's stdio: one answer per request, whatever the request."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.rpc_client import RawClient, RpcError, stderr_file
from tests.support import local_flags

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

URI = "file:///project/a.py"
POSITION = {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RawClient]:
    """One server for the module: starting one takes seconds, and these tests leave no state."""
    with stderr_file(tmp_path_factory.mktemp("protocol")) as stderr:
        client = await RawClient.start(*local_flags(tiny_model_dir), stderr=stderr)
        try:
            await client.initialize()
            yield client
        finally:
            await client.stop()


@pytest.fixture(autouse=True)
def no_messages_shown(request: pytest.FixtureRequest) -> None:
    if "client" in request.fixturenames:
        request.getfixturevalue("client").notifications.clear()


def inline(position: Any = None, context: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "textDocument": {"uri": URI},
        "position": {"line": 0, "character": 0} if position is None else position,
        "context": {"triggerKind": 1} if context is None else context,
        **extra,
    }


BAD_PARAMS = [
    ("textDocument/inlineCompletion", inline({"line": -1, "character": 0}), "position"),
    ("textDocument/inlineCompletion", inline({"line": 2**31, "character": 0}), "position"),
    ("textDocument/inlineCompletion", inline({"line": 0, "character": "x"}), "character"),
    ("textDocument/inlineCompletion", inline(context={"triggerKind": 0}), "triggerKind"),
    ("textDocument/inlineCompletion", inline(context={"triggerKind": "a"}), "triggerKind"),
    ("textDocument/inlineCompletion", None, "params"),
    ("textDocument/inlineCompletion", [], "params"),
    ("textDocument/inlineCompletion", {}, "params"),
    ("textDocument/completion", {"textDocument": {"uri": URI}, "position": {}}, "line"),
    ("workspace/executeCommand", {"command": 5}, "command"),
    ("workspace/executeCommand", {"command": "codegeex2.status", "arguments": 5}, "arguments"),
    ("workspace/executeCommand", {"command": "no.such.command"}, "no.such.command"),
    (
        "workspace/executeCommand",
        {"command": "codegeex2.toggle", "arguments": ["py"]},
        "languageId",
    ),
    (
        "workspace/executeCommand",
        {"command": "codegeex2.toggle", "arguments": [{"languageId": 5}]},
        "languageId",
    ),
]


@pytest.mark.parametrize(("method", "params", "named"), BAD_PARAMS)
async def test_invalid_params_are_answered_with_what_was_wrong(
    client: RawClient, method: str, params: Any, named: str
) -> None:
    with pytest.raises(RpcError) as raised:
        await client.request(method, params)
    assert raised.value.code == -32602
    assert named.lower() in raised.value.message.lower()
    assert await client.request("workspace/executeCommand", {"command": "codegeex2.status"})
    assert client.shown() == []


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("textDocument/hover", POSITION),
        ("textDocument/hover", {"bad": True}),
        ("no/such/method", None),
        ("$/custom", [1, 2]),
    ],
)
async def test_unknown_methods_are_answered_method_not_found(
    client: RawClient, method: str, params: Any
) -> None:
    with pytest.raises(RpcError) as raised:
        await client.request(method, params)
    assert raised.value.code == -32601


async def test_broken_messages_get_one_message_and_the_server_goes_on(client: RawClient) -> None:
    for n in range(3):
        client.expect(f"no-version-{n}")
        client.send_bytes(b"{not json")
        client.send_bytes(b'{"jsonrpc": "2.0", "method": "\xff\xfe"}')
        client.send_bytes(b"[1, 2, 3]")
        client.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"x": 1}})
        client.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": None})
        client.send({"id": f"no-version-{n}", "method": "shutdown"})
    result = await client.request("workspace/executeCommand", {"command": "codegeex2.status"})
    assert result["state"] in ("loading", "ready")
    for n in range(3):
        assert client.responses[f"no-version-{n}"]["error"]["code"] == -32600
    shown = client.shown()
    assert len(shown) == len(set(shown)) <= 2
    assert client.unexpected == []


async def test_requests_get_one_answer_each(client: RawClient) -> None:
    ids = [client.request_later("textDocument/inlineCompletion", inline()) for _ in range(5)]
    ids += [client.request_later("textDocument/inlineCompletion", None) for _ in range(5)]
    ids += [client.request_later("no/such", {}) for _ in range(5)]
    for msg_id in ids:
        await client.answer(msg_id)
    await client.request("workspace/executeCommand", {"command": "codegeex2.status"})
    assert client.unexpected == []


async def test_status_reports_each_documents_length_and_hash(client: RawClient) -> None:
    text = "a\fb\nc\u2028d\r\n😀\ud83d\n"
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": URI, "languageId": "python", "version": 1, "text": text}},
    )
    edit = {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 0}}
    client.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": URI, "version": 2},
            "contentChanges": [{"range": edit, "text": "X"}],
        },
    )
    expected = "a\fb\nXc\u2028d\r\n😀\ud83d\n"
    status = await client.request("workspace/executeCommand", {"command": "codegeex2.status"})
    document = status["documents"][URI]
    assert document["length"] == len(expected)
    assert (
        document["sha256"] == hashlib.sha256(expected.encode("utf-8", "surrogatepass")).hexdigest()
    )
    assert document["version"] == 2


async def started(model_dir: Path, directory: Path) -> RawClient:
    with stderr_file(directory) as stderr:
        return await RawClient.start(*local_flags(model_dir), stderr=stderr)


async def test_life_cycle(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Before ``initialize`` requests are refused, after ``shutdown`` too; ``exit`` ends the
    process (status 1 without ``shutdown``), and so does the client closing stdin."""
    # No model: the life cycle does not depend on one, and three loads at once are slow.
    ordered, abrupt, closed = [
        await started(tmp_path / "no-model", tmp_path / name)
        for name in ("ordered", "abrupt", "closed")
        if not (tmp_path / name).mkdir()
    ]
    try:
        with pytest.raises(RpcError) as raised:
            await ordered.request("textDocument/inlineCompletion", inline())
        assert raised.value.code == -32002
        for client in (ordered, abrupt, closed):
            await client.initialize()
        await ordered.request("workspace/executeCommand", {"command": "codegeex2.status"})
        assert await ordered.request("shutdown") is None
        with pytest.raises(RpcError) as raised:
            await ordered.request("workspace/executeCommand", {"command": "codegeex2.status"})
        assert raised.value.code == -32600
        ordered.notify("exit")
        abrupt.notify("exit")
        closed.close_stdin()
        assert await ordered.wait() == 0
        assert await abrupt.wait() == 1
        await closed.wait()
    finally:
        for client in (ordered, abrupt, closed):
            await client.stop()
