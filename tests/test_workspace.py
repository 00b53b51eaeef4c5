"""End to end over stdio: context from other files of the workspace reaches the prompt.

The prompt is observed where a user would look for it: the server's debug log (``prompt for
URI:`` and the text), and the ``prompt`` command, which must print the same text.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from tests.lsp_support import (
    inline,
    open_document,
    running_server,
    wait_for_state,
    wait_for_status,
)

pytestmark = pytest.mark.slow

MODELS = """\
class User:
    def __init__(self, name: str) -> None:
        self.name = name


def make_user(name: str) -> User:
    return User(name)
"""

APP = """\
from pkg.models import make_user
from pkg.util import slugify
from secret.keys import secret_helper
from pkg.big import huge_helper
from pkg.blob import binary_helper


def main():
    a = secret_helper(huge_helper(binary_helper(1)))
    u = make_user(slugify("a"))
    """
CURSOR = (APP.count("\n"), 4)


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(
        root,
        {
            ".gitignore": "secret/\n",
            "pkg/__init__.py": "",
            "pkg/models.py": MODELS,
            "pkg/util.py": "def slugify(text: str) -> str:\n    return text.lower()\n",
            "secret/keys.py": "def secret_helper(token):\n    return token\n",
            "pkg/big.py": "def huge_helper(x):\n    return x\n" + "# padding\n" * 120_000,
            "pkg/blob.py": b"def binary_helper(x):\n    return x\n\x00\x00",
            "app.py": APP,
        },
    )
    os.symlink(root, root / "pkg" / "loop")
    os.symlink("self.py", root / "pkg" / "self.py")
    return root


def flags(model_dir: Path, log_file: Path, *extra: str) -> tuple[str, ...]:
    return (
        "--model",
        str(model_dir),
        "--device",
        "cpu",
        "--debounce-ms",
        "0",
        "--log-level",
        "DEBUG",
        "--log-file",
        str(log_file),
        *extra,
    )


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.MULTILINE)


def last_prompt(log_file: Path, uri: str) -> str:
    """The text of the last prompt the server logged for ``uri``."""
    text = log_file.read_text(encoding="utf-8")
    marker = f"prompt for {uri}:\n"
    start = text.rindex(marker) + len(marker)
    end = _RECORD.search(text, start)
    return text[start : end.start() if end else len(text)].removesuffix("\n")


async def indexed(client: LanguageClient) -> dict[str, Any]:
    return await wait_for_status(
        client,
        lambda current: current["context"]["scans"] >= 1 and current["context"]["pending"] == 0,
        "the workspace indexed",
    )


async def prompt_at(client: LanguageClient, log_file: Path, uri: str) -> str:
    await indexed(client)
    await inline(client, uri, *CURSOR)
    return last_prompt(log_file, uri)


def change_files(client: LanguageClient, *events: tuple[Path, types.FileChangeType]) -> None:
    client.workspace_did_change_watched_files(
        types.DidChangeWatchedFilesParams(
            changes=[types.FileEvent(uri=path.as_uri(), type=kind) for path, kind in events]
        )
    )


def log_lines(client: LanguageClient) -> list[str]:
    return [message.message for message in client.log_messages]


def prompt_command(project: Path, model_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``codegeex2-lsp prompt`` at the test's cursor in ``app.py``, indexing ``project``."""
    line, character = CURSOR
    position = ["--line", str(line), "--character", str(character)]
    where = ["--workspace", str(project), "--model", str(model_dir)]
    command = [sys.executable, "-m", "codegeex2_lsp", "prompt", str(project / "app.py")]
    return subprocess.run(
        [*command, *position, *where, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


async def test_definitions_from_other_files_reach_the_prompt_and_ignored_files_never_do(
    tiny_model_dir: Path, project: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "server.log"
    uri = (project / "app.py").as_uri()
    registered: list[types.Registration] = []

    def accept_registrations(client: LanguageClient) -> None:
        @client.feature(types.CLIENT_REGISTER_CAPABILITY)
        def register(ls: LanguageClient, params: types.RegistrationParams) -> None:
            registered.extend(params.registrations)

    async with running_server(
        *flags(tiny_model_dir, log_file),
        workspace_folders=[project],
        prepare_client=accept_registrations,
    ) as client:
        await wait_for_state(client, "ready")
        open_document(client, uri, APP)
        prompt = await prompt_at(client, log_file, uri)
        context = (await indexed(client))["context"]
        assert context["files"] == 4, "app, __init__, models and util: nothing else is read"
        shown_messages = list(client.messages)
        logged = log_lines(client)
    assert prompt.startswith("# language: Python\n# path: ")
    assert "# path: pkg/models.py\n# def make_user(name: str) -> User:\n" in prompt
    assert "# path: pkg/util.py\n# def slugify(text: str) -> str:\n" in prompt
    for hidden in ("def secret_helper", "def huge_helper", "def binary_helper"):
        assert hidden not in prompt
    assert prompt.endswith(APP)
    assert any("the client reports changes to the workspace's files" in line for line in logged)
    (watch,) = registered
    assert watch.method == types.WORKSPACE_DID_CHANGE_WATCHED_FILES
    assert any("already read (a loop?)" in line for line in logged)
    assert any("cannot read" in line and "self.py" in line for line in logged)
    assert shown_messages == []

    done = prompt_command(project, tiny_model_dir)
    assert done.stdout == prompt, "the prompt command prints what the server sends the model"
    assert "pkg/models.py:6: definition of make_user" in done.stderr
    assert "pkg/util.py:1: definition of slugify" in done.stderr


async def test_edits_renames_and_deletions_keep_the_prompt_current(
    tiny_model_dir: Path, project: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "server.log"
    uri = (project / "app.py").as_uri()
    models = project / "pkg" / "models.py"
    async with running_server(
        *flags(tiny_model_dir, log_file), workspace_folders=[project]
    ) as client:
        await wait_for_state(client, "ready")
        open_document(client, uri, APP)
        assert "# def make_user(name: str) -> User:" in await prompt_at(client, log_file, uri)

        open_document(client, models.as_uri(), MODELS)
        header = MODELS.split("\n").index("def make_user(name: str) -> User:")
        at = len("def make_user(name: str")
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=models.as_uri(), version=2),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(
                            start=types.Position(line=header, character=at),
                            end=types.Position(line=header, character=at),
                        ),
                        text=", admin: bool",
                    )
                ],
            )
        )
        edited = await prompt_at(client, log_file, uri)
        assert "# def make_user(name: str, admin: bool) -> User:" in edited

        util = project / "pkg" / "util.py"
        renamed = project / "pkg" / "text.py"
        util.rename(renamed)
        change_files(
            client, (util, types.FileChangeType.Deleted), (renamed, types.FileChangeType.Created)
        )
        moved = await prompt_at(client, log_file, uri)
        assert "# path: pkg/util.py" not in moved
        assert "# path: pkg/text.py\n# def slugify(text: str) -> str:" in moved

        client.text_document_did_close(
            types.DidCloseTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=models.as_uri())
            )
        )
        models.unlink()
        change_files(client, (models, types.FileChangeType.Deleted))
        deleted = await prompt_at(client, log_file, uri)
        assert "make_user(name" not in deleted
        assert "# def slugify(text: str) -> str:" in deleted


async def test_a_workspace_folder_that_disappears_ends_in_a_log_line(
    tiny_model_dir: Path, project: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "server.log"
    never = tmp_path / "never-there"
    uri = (project / "app.py").as_uri()
    async with running_server(
        *flags(tiny_model_dir, log_file), workspace_folders=[project, never]
    ) as client:
        await wait_for_state(client, "ready")
        open_document(client, uri, APP)
        assert "# def make_user(name: str) -> User:" in await prompt_at(client, log_file, uri)
        shutil.rmtree(project / "pkg")
        change_files(client, (project / "pkg", types.FileChangeType.Deleted))
        after = await prompt_at(client, log_file, uri)
        shutil.rmtree(project)
        change_files(client, (project, types.FileChangeType.Deleted))
        await indexed(client)
        answered = await inline(client, uri, *CURSOR)
        shown_messages = list(client.messages)
        logged = log_lines(client)
    assert "# path:" not in after
    assert isinstance(answered, list)
    assert any("never-there cannot be read (gone?)" in line for line in logged)
    assert any(f"{project.resolve()} is gone" in line for line in logged)
    assert shown_messages == []


async def test_a_large_workspace_is_indexed_while_requests_are_answered(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "large"
    for folder in range(100):
        directory = root / f"m{folder:02d}"
        directory.mkdir(parents=True)
        for number in range(100):
            (directory / f"f{number:02d}.py").write_text(
                f"def fn_{folder}_{number}(x):\n    return x + {number}\n", encoding="utf-8"
            )
    text = "from m42.f17 import fn_42_17\n\n\ndef main():\n    y = fn_42_17(1)\n    "
    uri = (root / "app.py").as_uri()
    log_file = tmp_path / "server.log"
    async with running_server(*flags(tiny_model_dir, log_file), workspace_folders=[root]) as client:
        await wait_for_state(client, "ready")
        open_document(client, uri, text)
        first = await inline(client, uri, 5, 4)
        status = await indexed(client)
        final = await inline(client, uri, 5, 4)
        prompt = last_prompt(log_file, uri)
    assert isinstance(first, list) and isinstance(final, list)
    assert status["context"]["files"] == 10_001
    assert "# path: m42/f17.py\n# def fn_42_17(x):\n" in prompt


async def test_excluded_files_never_reach_the_prompt_open_or_not(
    tiny_model_dir: Path, project: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "server.log"
    uri = (project / "app.py").as_uri()
    util = project / "pkg" / "util.py"
    exclude = ["pkg/models.py"]
    async with running_server(
        *flags(tiny_model_dir, log_file),
        workspace_folders=[project],
        initialization_options={"exclude": exclude},
    ) as client:
        await wait_for_state(client, "ready")
        open_document(client, uri, APP)
        # Open in the editor too: an excluded file is not read from there either.
        open_document(client, (project / "pkg" / "models.py").as_uri(), MODELS)
        prompt = await prompt_at(client, log_file, uri)
        assert "def make_user" not in prompt
        assert "# path: pkg/util.py\n# def slugify(text: str) -> str:\n" in prompt

        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"codegeex2": {"exclude": [*exclude, "pkg/util.py"]}}
            )
        )
        await wait_for_status(
            client,
            lambda current: current["context"]["pending"] == 0 and current["context"]["files"] == 2,
            "util.py dropped from the index",
        )
        prompt = await prompt_at(client, log_file, uri)
        assert "def slugify" not in prompt

    done = prompt_command(project, tiny_model_dir, "--open", str(util), "--exclude", "pkg/util.py")
    assert "def slugify" not in done.stdout
    assert "def make_user" in done.stdout
