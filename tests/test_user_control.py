"""End to end over stdio: the user's switch, languages and exclusions, and acceptance counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from tests.lsp_support import (
    open_document,
    running_server,
    server_capabilities,
    status,
    wait_for_state,
)

pytestmark = pytest.mark.slow

FOLDER = "file:///project"
URI = f"{FOLDER}/app.py"
SOURCE = "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        "
CURSOR = types.Position(line=5, character=8)


def flags(model_dir: Path, *extra: str) -> tuple[str, ...]:
    return ("--model", str(model_dir), "--device", "cpu", "--debounce-ms", "0", *extra)


async def inline_items(client: LanguageClient, uri: str) -> list[types.InlineCompletionItem]:
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=CURSOR,
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Invoked
            ),
        )
    )
    assert isinstance(result, types.InlineCompletionList)
    return list(result.items)


async def command(client: LanguageClient, name: str, *arguments: Any) -> Any:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=list(arguments))
    )


async def model_work(client: LanguageClient) -> int:
    return int((await status(client))["served"]["by_model"])


async def test_the_commands_are_advertised(tiny_model_dir: Path) -> None:
    async with running_server(*flags(tiny_model_dir)) as client:
        provider = server_capabilities(client).execute_command_provider
        assert provider is not None
        assert {"codegeex2.status", "codegeex2.toggle", "codegeex2.accept"} <= set(
            provider.commands
        )


async def test_off_answers_nothing_without_model_work_until_toggled(tiny_model_dir: Path) -> None:
    async with running_server(
        *flags(tiny_model_dir), initialization_options={"enable": False}
    ) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        assert await inline_items(client, URI) == []
        current = await status(client)
        assert current["enabled"] is False
        assert current["served"]["by_model"] == 0 and current["requests"]["completed"] == 0

        assert await command(client, "codegeex2.toggle") == {"enabled": True}
        assert await inline_items(client, URI) != []
        assert await model_work(client) == 1
        # The editor sends its whole section for another change: the toggle holds.
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"codegeex2": {"enable": False, "maxNewTokens": 16}}
            )
        )
        assert (await status(client))["settings"]["max_new_tokens"] == 16
        assert (await status(client))["enabled"] is True

        assert await command(client, "codegeex2.toggle") == {"enabled": False}
        assert await inline_items(client, URI) == []
        assert await model_work(client) == 1


async def test_languages_turn_off_and_on_by_toggle(tiny_model_dir: Path) -> None:
    async with running_server(*flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        notes = f"{FOLDER}/notes.md"
        open_document(client, notes, SOURCE, language_id="markdown")
        open_document(client, URI, SOURCE)
        assert await inline_items(client, notes) == []
        assert await model_work(client) == 0
        assert "markdown" in (await status(client))["disabledLanguages"]

        toggled = await command(client, "codegeex2.toggle", {"languageId": "python"})
        assert toggled == {"languageId": "python", "enabled": False}
        assert await inline_items(client, URI) == []
        assert await command(client, "codegeex2.toggle", {"languageId": "markdown"}) == {
            "languageId": "markdown",
            "enabled": True,
        }
        await inline_items(client, notes)
        assert await model_work(client) == 1
        current = await status(client)
        assert "python" in current["disabledLanguages"]
        assert "markdown" not in current["disabledLanguages"]


async def test_excluded_files_get_nothing_and_bad_patterns_are_named(
    tiny_model_dir: Path,
) -> None:
    async with running_server(*flags(tiny_model_dir), workspace_folders=[FOLDER]) as client:
        await wait_for_state(client, "ready")
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"codegeex2": {"exclude": ["generated/**", ".env"]}}
            )
        )
        generated = f"{FOLDER}/generated/app.py"
        dotenv = f"{FOLDER}/.env"
        open_document(client, generated, SOURCE)
        open_document(client, dotenv, SOURCE)
        open_document(client, URI, SOURCE)
        assert await inline_items(client, generated) == []
        assert await inline_items(client, dotenv) == []
        assert await model_work(client) == 0
        assert await inline_items(client, URI) != []

        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"codegeex2": {"exclude": ["*.py", "broken\\"]}}
            )
        )
        current = await status(client)
        assert current["settings"]["exclude"] == ["generated/**", ".env"]
        (shown,) = [m for m in client.messages if "exclude" in m.message]
        assert "broken" in shown.message
        assert await inline_items(client, generated) == []


async def test_accepts_are_counted_and_written_to_the_state_directory(
    tiny_model_dir: Path, state_home: Path
) -> None:
    async with running_server(*flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        first = await inline_items(client, URI)
        assert first
        taken = first[0]
        assert taken.command is not None and taken.command.command == "codegeex2.accept"
        assert await inline_items(client, URI)  # supersedes the first answer
        assert taken.command.arguments is not None
        assert await command(client, "codegeex2.accept", *taken.command.arguments) is True
        assert await command(client, "codegeex2.accept", "unknown-id") is False

        popup = await client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=URI), position=CURSOR
            )
        )
        assert isinstance(popup, types.CompletionList)
        assert all(
            item.command and item.command.command == "codegeex2.accept" for item in popup.items
        )

        stats = (await status(client))["stats"]
        chars = len(str(taken.insert_text))
        assert stats["shown"] == 3 and stats["accepted"] == 1 and stats["acceptedChars"] == chars
        assert stats["dismissed"] == 1
        assert stats["languages"]["python"]["backends"]["local"]["accepted"] == 1
    written = json.loads((state_home / "codegeex2-lsp" / "stats.json").read_text(encoding="utf-8"))
    assert written["accepted"] == 1 and written["shown"] == 3
    assert written["languages"]["python"]["acceptedChars"] == chars


async def test_a_corrupt_stats_file_never_breaks_the_server(
    tiny_model_dir: Path, state_home: Path
) -> None:
    path = state_home / "codegeex2-lsp" / "stats.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00{not json")
    async with running_server(*flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        assert await inline_items(client, URI)
        assert (await status(client))["stats"]["shown"] == 1
        logged = [m.message for m in client.log_messages if "cannot be read" in m.message]
        assert len(logged) == 1
    assert json.loads(path.read_text(encoding="utf-8"))["shown"] == 1
    assert path.with_name("stats.json.corrupt").read_bytes() == b"\x00{not json"
