"""End to end: the real server over stdio on the tiny checkpoint, driven like an editor."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.postprocess import make_context, postprocess
from codegeex2_lsp.testing import write_tiny_model
from tests.lsp_support import (
    READY_TIMEOUT,
    Reference,
    ask_inline,
    inline,
    open_document,
    remote_flags,
    running_server,
    server_capabilities,
    status,
    wait_for_progress_end,
    wait_for_state,
    wait_for_status,
)
from tests.scripted_server import Reply, ScriptedServer, tokens
from tests.support import CURSOR, SOURCE, local_flags

pytestmark = pytest.mark.slow

URI = "file:///project/app.py"
TAG = "# language: Python\n"


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> Reference:
    return Reference(tiny_model_dir)


def expected_at(reference: Reference, prefix: str, suffix: str = "", new_tokens: int = 64) -> str:
    raw = reference.greedy(TAG + prefix, new_tokens)
    return postprocess(raw, make_context(prefix, suffix, "python"))


async def test_capabilities_advertise_inline_and_classic_completion(tiny_model_dir: Path) -> None:
    async with running_server(*local_flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        capabilities = server_capabilities(client)
        assert capabilities.inline_completion_provider is not None
        assert capabilities.completion_provider is not None
        sync = capabilities.text_document_sync
        assert isinstance(sync, types.TextDocumentSyncOptions)
        assert sync.change == types.TextDocumentSyncKind.Incremental


async def test_inline_completion_is_the_models_greedy_continuation(
    tiny_model_dir: Path, reference: Reference
) -> None:
    expected = expected_at(reference, SOURCE)
    assert expected, "the tiny model should suggest something here"
    async with running_server(*local_flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        assert await inline(client, URI, *CURSOR, invoked=False) == [expected]
        invoked = await inline(client, URI, *CURSOR, invoked=True)
        assert invoked[0] == expected
        assert len(set(invoked)) == len(invoked)
        # Every candidate is what the model continues with, given the first's text is not it.
        assert all(text and text != expected for text in invoked[1:])


async def test_classic_completion_inserts_the_same_text(
    tiny_model_dir: Path, reference: Reference
) -> None:
    expected = expected_at(reference, SOURCE)
    async with running_server(*local_flags(tiny_model_dir, "--candidates", "1")) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        result = await client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=URI),
                position=types.Position(*CURSOR),
            )
        )
    assert isinstance(result, types.CompletionList)
    assert result.is_incomplete
    (item,) = result.items
    assert isinstance(item.text_edit, types.TextEdit)
    assert item.text_edit.new_text == expected
    here = types.Position(*CURSOR)
    assert item.text_edit.range == types.Range(start=here, end=here)
    assert item.label == expected.strip().splitlines()[0].strip()
    assert isinstance(item.documentation, types.MarkupContent)
    assert expected in item.documentation.value


async def test_incremental_edits_are_applied_before_completing(
    tiny_model_dir: Path, reference: Reference
) -> None:
    edited = SOURCE.replace("read_config", "load_settings") + "data = "
    expected = expected_at(reference, edited)
    async with running_server(*local_flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(3, 4), end=types.Position(3, 15)),
                        text="load_settings",
                    ),
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(5, 8), end=types.Position(5, 8)),
                        text="data = ",
                    ),
                ],
            )
        )
        assert await inline(client, URI, 5, 15, invoked=False) == ([expected] if expected else [])


async def test_utf8_positions_are_negotiated_and_honoured(
    tiny_model_dir: Path, reference: Reference
) -> None:
    source = 'name = "héllo wörld"\nprint(name)\n'
    expected = expected_at(reference, source)
    async with running_server(
        *local_flags(tiny_model_dir), position_encodings=[types.PositionEncodingKind.Utf8]
    ) as client:
        capabilities = server_capabilities(client)
        assert capabilities.position_encoding == types.PositionEncodingKind.Utf8
        await wait_for_state(client, "ready")
        open_document(client, URI, source)
        assert await inline(client, URI, 2, 0, invoked=False) == ([expected] if expected else [])
        cut = source.index("wörld")
        mid_line = expected_at(reference, source[:cut], source[cut:])
        column = len(source[:cut].encode())
        assert await inline(client, URI, 0, column, invoked=False) == (
            [mid_line] if mid_line else []
        )


async def test_bad_positions_and_unknown_documents_answer_empty(tiny_model_dir: Path) -> None:
    async with running_server(*local_flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        assert await inline(client, "file:///never/opened.py", 0, 0) == []
        # Past the end of a line or of the document: answered, never a crash.
        await inline(client, URI, 1, 500)
        await inline(client, URI, 900, 3)
        result = await client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri="file:///never/opened.py"),
                position=types.Position(0, 0),
            )
        )
        assert isinstance(result, types.CompletionList)
        assert list(result.items) == []
        assert (await status(client))["state"] == "ready"


async def test_loading_reports_progress(tiny_model_dir: Path) -> None:
    async with running_server(*local_flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        reports = await wait_for_progress_end(client)
        assert isinstance(reports[0], types.WorkDoneProgressBegin)
        assert isinstance(reports[-1], types.WorkDoneProgressEnd)
        assert "Ready" in str(reports[-1].message)


async def test_missing_model_is_shown_once_and_the_server_recovers(
    tiny_model_dir: Path, tmp_path: Path, reference: Reference
) -> None:
    missing = tmp_path / "no-such-model"
    async with running_server(*local_flags(missing)) as client:
        await wait_for_state(client, "failed")
        open_document(client, URI, SOURCE)
        assert await inline(client, URI, *CURSOR) == []
        assert await inline(client, URI, *CURSOR) == []
        errors = [m for m in client.messages if m.type == types.MessageType.Error]
        assert len(errors) == 1
        assert str(missing) in errors[0].message
        assert "codegeex2.model" in errors[0].message
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"codegeex2": {"model": str(tiny_model_dir)}}
            )
        )
        await wait_for_state(client, "ready")
        assert await inline(client, URI, *CURSOR, invoked=False) == [expected_at(reference, SOURCE)]
        assert len([m for m in client.messages if m.type == types.MessageType.Error]) == 1


async def test_invalid_settings_are_reported_and_the_previous_value_stays(
    tiny_model_dir: Path,
) -> None:
    async with running_server(
        *local_flags(tiny_model_dir),
        initialization_options={"maxNewTokens": "lots", "unknownKey": 1},
    ) as client:
        current = await wait_for_state(client, "ready")
        assert current["settings"]["max_new_tokens"] == 64
        (error,) = client.messages
        assert "codegeex2.maxNewTokens" in error.message
        assert any("unknownKey" in m.message for m in client.log_messages)


async def test_configuration_change_switches_models(tiny_model_dir: Path, tmp_path: Path) -> None:
    other_dir = write_tiny_model(tmp_path / "other", seed=7)
    other = Reference(other_dir)
    expected = expected_at(other, SOURCE)
    async with running_server(*local_flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        before = await inline(client, URI, *CURSOR, invoked=False)
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"codegeex2": {"model": str(other_dir)}})
        )
        current = await wait_for_state(client, "loading", "ready")
        current = await wait_for_state(client, "ready")
        assert str(other_dir) in current["description"]
        after = await inline(client, URI, *CURSOR, invoked=False)
    assert after == ([expected] if expected else [])
    assert before != after


HELD_ANSWER = " + 1"


@contextmanager
def held_server(model_dir: Path) -> Iterator[tuple[ScriptedServer, threading.Event]]:
    """A completion server that streams two tokens of each answer, then holds the rest until
    the test sets the event: a request is at work for as long as the test needs it to be.
    The backend's probe while loading is answered at once."""
    tokenizer = ChatGLM2Tokenizer(model_dir / "tokenizer.model")
    release = threading.Event()
    scripted = ScriptedServer()
    answer = tokens(tokenizer.encode(HELD_ANSWER), finish="stop")
    scripted.script(Reply(events=answer))
    scripted.default = Reply(events=answer, hold=release, hold_after=2)
    with scripted.running() as server:
        try:
            yield server, release
        finally:
            release.set()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition``; the deadline only stops a test whose server hangs."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.005)


async def test_cancel_request_stops_the_work(tiny_model_dir: Path) -> None:
    with held_server(tiny_model_dir) as (server, release):
        async with running_server(*remote_flags(tiny_model_dir, server.url)) as client:
            await wait_for_state(client, "ready")
            open_document(client, URI, SOURCE)
            pending = ask_inline(client, URI, *CURSOR, msg_id="to-cancel")
            await until(lambda: len(server.completions()) == 2, "the request reached the model")
            client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="to-cancel"))
            with pytest.raises(JsonRpcRequestCancelled):
                await pending
            after = await wait_for_status(
                client, lambda current: current["requests"]["cancelled"] == 1, "work stopped"
            )
            assert after["requests"]["completed"] == 0
            # Closing the stream is what stops the work on the server: it finds no one there.
            release.set()
            await until(server.hung_up.is_set, "the stream was closed")


async def test_newer_request_supersedes_older(tiny_model_dir: Path) -> None:
    with held_server(tiny_model_dir) as (server, release):
        async with running_server(*remote_flags(tiny_model_dir, server.url)) as client:
            await wait_for_state(client, "ready")
            open_document(client, URI, SOURCE)
            first = ask_inline(client, URI, *CURSOR)
            await until(lambda: len(server.completions()) == 2, "the first reached the model")
            second = ask_inline(client, URI, CURSOR[0], CURSOR[1] - 4)
            assert await first == []
            await until(lambda: len(server.completions()) == 3, "the second reached the model")
            release.set()
            assert await second == [HELD_ANSWER.strip()]
            after = await status(client)
    assert after["requests"]["cancelled"] == 1
    assert after["requests"]["completed"] == 1


async def test_quantize_setting_reaches_the_loader(tiny_model_dir: Path) -> None:
    async with running_server(
        *local_flags(tiny_model_dir), initialization_options={"quantize": "int8"}
    ) as client:
        current = await wait_for_state(client, "ready")
        assert "int8 weights" in current["description"]
        open_document(client, URI, SOURCE)
        await inline(client, URI, *CURSOR)
