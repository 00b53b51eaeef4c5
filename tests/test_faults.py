"""Model-directory faults through the real server: one message each, no code from the directory
ever runs, and a settings change back to a good model recovers without a restart."""

from __future__ import annotations

import asyncio
import builtins
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.rpc_client import RawClient, stderr_file
from tests.support import SOURCE

pytestmark = pytest.mark.slow

URI = "file:///faults/a.py"
FIRST_SHARD = "pytorch_model-00001-of-00002.bin"
SECOND_SHARD = "pytorch_model-00002-of-00002.bin"
INDEX = "pytorch_model.bin.index.json"


class Planted:
    """Unpickling this creates the marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (str(self.marker), "w"))


def code_pickle(directory: Path, marker: Path) -> None:
    torch.save(
        {"transformer.embedding.word_embeddings.weight": Planted(marker)}, directory / FIRST_SHARD
    )


def remote_code(directory: Path, marker: Path) -> None:
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_chatglm.ChatGLMConfig",
        "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
    }
    (directory / "config.json").write_text(json.dumps(config))
    planted = f"open({str(marker)!r}, 'w').close()\n"
    (directory / "configuration_chatglm.py").write_text(planted)
    (directory / "modeling_chatglm.py").write_text(planted)


def truncated_shard(directory: Path, marker: Path) -> None:
    shard = directory / SECOND_SHARD
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def missing_tokenizer(directory: Path, marker: Path) -> None:
    (directory / "tokenizer.model").unlink()


def index_outside(directory: Path, marker: Path) -> None:
    """The index names shards one directory up, where a good copy lies: only the check stops it."""
    index = json.loads((directory / INDEX).read_text())
    for name in (FIRST_SHARD, SECOND_SHARD):
        shutil.copy(directory / name, directory.parent / name)
    index["weight_map"] = {key: f"../{name}" for key, name in index["weight_map"].items()}
    (directory / INDEX).write_text(json.dumps(index))


FAULTS: dict[str, tuple[Callable[[Path, Path], None], bool]] = {
    # name: (how to break a copy of the tiny model, whether loading must fail)
    "a pickle that would run code": (code_pickle, True),
    "python files named by auto_map": (remote_code, False),
    "a truncated shard": (truncated_shard, True),
    "no tokenizer": (missing_tokenizer, True),
    "an index naming shards outside the directory": (index_outside, True),
}


async def status(client: RawClient) -> dict[str, Any]:
    return await client.request("workspace/executeCommand", {"command": "codegeex2.status"})


async def settle(client: RawClient, model: Path, shown_before: int, fails: bool) -> None:
    """Switch to ``model`` and wait for the end its load must have: failed with one new message,
    or ready without one. Each fault follows a state it does not share (a failure follows a
    success, a success a failure) or brings a message, so an old state is never taken for it."""
    client.notify(
        "workspace/didChangeConfiguration", {"settings": {"codegeex2": {"model": str(model)}}}
    )
    for _ in range(2400):
        state = (await status(client))["state"]
        if (
            state == ("failed" if fails else "ready")
            and (len(client.shown()) > shown_before) == fails
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{model}: the load did not end as expected (state {state})")


async def completion(client: RawClient) -> list[str]:
    result = await client.request(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": URI},
            "position": {"line": 5, "character": 8},
            "context": {"triggerKind": 1},
        },
    )
    return [item["insertText"] for item in result["items"]]


async def test_model_directory_faults(tiny_model_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    with stderr_file(tmp_path) as stderr:
        client = await RawClient.start(
            "--model", str(tiny_model_dir), "--device", "cpu", "--debounce-ms", "0",
            stderr=stderr,
        )  # fmt: skip
        try:
            await client.initialize()
            await settle(client, tiny_model_dir, 0, False)
            client.notify(
                "textDocument/didOpen",
                {
                    "textDocument": {
                        "uri": URI,
                        "languageId": "python",
                        "version": 1,
                        "text": SOURCE,
                    }
                },
            )
            good = await completion(client)
            assert good
            messages: dict[str, list[str]] = {}
            for name, (damage, fails) in FAULTS.items():
                directory = tmp_path / name.replace(" ", "-") / "model"
                shutil.copytree(tiny_model_dir, directory)
                damage(directory, marker)
                before = len(client.shown())
                await settle(client, directory, before, fails)
                messages[name] = client.shown()[before:]
                assert len(messages[name]) == (1 if fails else 0), (name, messages[name])
                assert not marker.exists(), name
                if not fails:
                    assert await completion(client) == good
            before = len(client.shown())
            await settle(client, tiny_model_dir, before, False)
            assert await completion(client) == good
            assert len(client.shown()) == before
            print(json.dumps(messages, indent=1))
        finally:
            await client.stop()
