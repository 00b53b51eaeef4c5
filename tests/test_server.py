"""End to end: the real server over stdio on the tiny checkpoint, driven like an editor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from codegeex2_lsp.postprocess import make_context, postprocess
from codegeex2_lsp.testing import write_tiny_model
from tests.lsp_support import (
    Reference,
    inline,
    open_document,
    running_server,
    server_capabilities,
    status,
    wait_for_decoding,
    wait_for_progress_end,
    wait_for_state,
    wait_for_status,
)

pytestmark = pytest.mark.slow

URI = "file:///project/app.py"
SOURCE = "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        "
CURSOR = (5, 8)
TAG = "# language: Python\n"


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> Reference:
    return Reference(tiny_model_dir)


def expected_at(reference: Reference, prefix: str, suffix: str = "", new_tokens: int = 64) -> str:
    raw = reference.greedy(TAG + prefix, new_tokens)
    return postprocess(raw, make_context(prefix, suffix, "python"))


def flags(model_dir: Path, *extra: str) -> tuple[str, ...]:
    return ("--model", str(model_dir), "--device", "cpu", "--debounce-ms", "0", *extra)


async def test_capabilities_advertise_inline_and_classic_completion(tiny_model_dir: Path) -> None:
    async with running_server(*flags(tiny_model_dir)) as client:
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
    async with running_server(*flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        assert await inline(client, URI, *CURSOR, invoked=False) == [expected]
        invoked = await inline(client, URI, *CURSOR, invoked=True)
        assert invoked[0] == expected
        assert 1 <= len(invoked) <= 3
        assert len(set(invoked)) == len(invoked)


async def test_classic_completion_inserts_the_same_text(
    tiny_model_dir: Path, reference: Reference
) -> None:
    expected = expected_at(reference, SOURCE)
    async with running_server(*flags(tiny_model_dir, "--candidates", "1")) as client:
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
    async with running_server(*flags(tiny_model_dir)) as client:
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
        *flags(tiny_model_dir), position_encodings=[types.PositionEncodingKind.Utf8]
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
    async with running_server(*flags(tiny_model_dir)) as client:
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
    async with running_server(*flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        reports = await wait_for_progress_end(client)
        assert isinstance(reports[0], types.WorkDoneProgressBegin)
        assert isinstance(reports[-1], types.WorkDoneProgressEnd)
        assert "Ready" in str(reports[-1].message)


async def test_missing_model_is_shown_once_and_the_server_recovers(
    tiny_model_dir: Path, tmp_path: Path, reference: Reference
) -> None:
    missing = tmp_path / "no-such-model"
    async with running_server(*flags(missing)) as client:
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
        *flags(tiny_model_dir),
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
    async with running_server(*flags(tiny_model_dir)) as client:
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


@pytest.fixture(scope="module")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wide enough that a token takes milliseconds to decode, so a cancel lands mid-decode."""
    return write_tiny_model(
        tmp_path_factory.mktemp("slow-model"),
        num_layers=6,
        hidden_size=512,
        ffn_hidden_size=1376,
        num_attention_heads=8,
        kv_channels=64,
    )


LONG_RUN = ("--max-new-tokens", "400", "--multiline", "always", "--candidates", "1")
LONG_SOURCE = "import os\n\n\ndef f(path):\n    x = "
LONG_CURSOR = (4, 8)
"""Where the model writes dozens of tokens before a stop rule fires."""


async def test_cancel_request_stops_decoding(slow_model_dir: Path) -> None:
    async with running_server(*flags(slow_model_dir, *LONG_RUN)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, LONG_SOURCE)
        await inline(client, URI, *LONG_CURSOR)
        full = (await status(client))["tokens"]["generated"]
        assert full >= 20
        other = "file:///project/other.py"
        open_document(client, other, LONG_SOURCE)
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=other),
            position=types.Position(*LONG_CURSOR),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Invoked
            ),
        )
        pending = asyncio.ensure_future(
            client.protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="to-cancel"
            )
        )
        await wait_for_decoding(client, beyond=full)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="to-cancel"))
        with pytest.raises(JsonRpcRequestCancelled):
            await pending
        # The worker counts a cancellation when its decode loop stops for it: from then on no
        # token is generated for the request. Left alone it would generate ``full`` tokens.
        after = await wait_for_status(
            client, lambda current: current["requests"]["cancelled"] == 1, "the decode stopped"
        )
        assert after["requests"]["completed"] == 1
        assert after["tokens"]["generated"] - full < full
        assert (await status(client))["tokens"]["generated"] == after["tokens"]["generated"]


async def test_newer_request_supersedes_older(slow_model_dir: Path) -> None:
    async with running_server(*flags(slow_model_dir, *LONG_RUN)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, LONG_SOURCE)
        first = asyncio.ensure_future(inline(client, URI, *LONG_CURSOR))
        await wait_for_decoding(client, beyond=0)
        second = await inline(client, URI, 3, 12)
        assert await first == []
        after = await status(client)
        assert after["requests"]["cancelled"] + after["requests"]["dropped"] == 1
        assert after["requests"]["completed"] == 1
        del second


async def test_quantize_setting_reaches_the_loader(tiny_model_dir: Path) -> None:
    async with running_server(
        *flags(tiny_model_dir), initialization_options={"quantize": "int8"}
    ) as client:
        current = await wait_for_state(client, "ready")
        assert "int8 weights" in current["description"]
        open_document(client, URI, SOURCE)
        await inline(client, URI, *CURSOR)
