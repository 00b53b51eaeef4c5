"""Fuzz the real server over stdio with one long session of valid, broken and hostile messages.

Afterwards the server must still be up, have answered every request that had a valid id exactly
once, hold every document exactly as the client's independent model of it, have shown each
distinct problem at most once, and complete normally.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.rpc_client import RawClient, stderr_file
from tests.support import SOURCE
from tests.test_text import PIECES, Model

pytestmark = pytest.mark.slow

MESSAGES = 10_000
BATCH = 250
SEED = 20261130
URIS = [f"file:///fuzz/doc{i}.py" for i in range(3)]
SETTINGS = {
    "maxNewTokens": 2,
    "maxContextTokens": 64,
    "debounceMs": 0,
    "candidates": 1,
    "temperature": 0,
    "multiline": "auto",
    "topP": 0.95,
    "topK": 0,
    "prefixCacheMb": 16,
}
WEIRD_VALUES: list[Any] = [
    None, True, -1, 0, 2**31, 2**31 - 1, 2**63, -(2**70), 1.5, float("nan"), float("inf"),
    "", "x", "\ud800", "😀", [], [1], {}, {"a": {"b": []}}, "\u2028", "9" * 400,
]  # fmt: skip


class Fuzzer:
    def __init__(self, client: RawClient, rng: random.Random) -> None:
        self.client = client
        self.rng = rng
        self.models = {uri: Model("") for uri in URIS}
        self.versions = dict.fromkeys(URIS, 1)
        self.request_ids: list[Any] = []
        self.counts: dict[str, int] = {}

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def text(self, pieces: int) -> str:
        return "".join(self.rng.choice(PIECES) for _ in range(pieces))

    def position(self, uri: str) -> dict[str, int]:
        model = self.models[uri]
        lines = len(model.line_starts())
        line = self.rng.choice([self.rng.randrange(lines + 1), lines - 1, 2**31 - 1])
        character = self.rng.choice([self.rng.randrange(40), 0, 2**31 - 1])
        return {"line": max(0, line), "character": character}

    def open(self, uri: str) -> None:
        text = SOURCE + self.text(self.rng.randrange(60))
        self.models[uri] = Model(text)
        self.client.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}},
        )

    def edit(self) -> None:
        uri = self.rng.choice(URIS)
        model = self.models[uri]
        changes = []
        for _ in range(self.rng.randrange(1, 4)):
            if self.rng.random() < 0.03:
                text = SOURCE + self.text(self.rng.randrange(40))
                changes.append({"text": text})
                model.text = text
                continue
            start = self.position(uri)
            end = self.position(uri) if self.rng.random() < 0.4 else start
            text = self.text(self.rng.randrange(4))
            a = model.offset(start["line"], start["character"], "utf-16")
            b = model.offset(end["line"], end["character"], "utf-16")
            a, b = min(a, b), max(a, b)
            model.text = model.text[:a] + text + model.text[b:]
            changes.append({"range": {"start": start, "end": end}, "text": text})
        self.versions[uri] += 1
        self.client.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": self.versions[uri]},
                "contentChanges": changes,
            },
        )

    def completion_params(self) -> dict[str, Any]:
        uri = self.rng.choice(URIS)
        return {"textDocument": {"uri": uri}, "position": self.position(uri)}

    def request(self, method: str, params: Any) -> None:
        self.request_ids.append(self.client.request_later(method, params))

    def complete(self) -> None:
        params = self.completion_params()
        if self.rng.random() < 0.5:
            params["context"] = {"triggerKind": self.rng.choice([1, 2])}
            self.request("textDocument/inlineCompletion", params)
        else:
            params["context"] = {"triggerKind": self.rng.choice([1, 2, 3])}
            self.request("textDocument/completion", params)

    def mutate(self, value: Any, depth: int = 0) -> Any:
        """``value`` with one member dropped, retyped or pushed out of range."""
        if isinstance(value, dict) and value and depth < 4:
            key = self.rng.choice(list(value))
            copy = dict(value)
            roll = self.rng.random()
            if roll < 0.25:
                del copy[key]
            elif roll < 0.5:
                copy[key] = self.rng.choice(WEIRD_VALUES)
            else:
                copy[key] = self.mutate(copy[key], depth + 1)
            return copy
        return self.rng.choice(WEIRD_VALUES)

    def broken_request(self) -> None:
        params = self.completion_params()
        params["context"] = {"triggerKind": 1}
        method = self.rng.choice(
            ["textDocument/inlineCompletion", "textDocument/completion", "workspace/executeCommand"]
        )
        if method == "workspace/executeCommand":
            params = {"command": "codegeex2.status", "arguments": []}
        self.request(method, self.mutate({"params": params}).get("params"))

    def broken_notification(self) -> None:
        uri = self.rng.choice(URIS)
        method, params = self.rng.choice(
            [
                (
                    "textDocument/didChange",
                    {
                        "textDocument": {"uri": uri, "version": 1},
                        "contentChanges": [{"range": {"start": {}, "end": {}}, "text": "z"}],
                    },
                ),
                ("textDocument/didOpen", {"textDocument": {"uri": uri}}),
                ("$/cancelRequest", {"id": None}),
                ("workspace/didChangeConfiguration", None),
                ("textDocument/didClose", {"textDocument": {}}),
            ]
        )
        self.client.notify(method, self.mutate({"p": params}).get("p"))

    def settings(self) -> None:
        section = {key: value for key, value in SETTINGS.items() if self.rng.random() < 0.3}
        if self.rng.random() < 0.5:
            key = self.rng.choice([*SETTINGS, "unknownKey"])
            section[key] = self.rng.choice(WEIRD_VALUES)
        self.client.notify("workspace/didChangeConfiguration", {"settings": {"codegeex2": section}})

    def garbage(self) -> None:
        valid = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "shutdown", "params": self.text(3)}
        ).encode()
        self.client.send_bytes(
            self.rng.choice(
                [
                    valid[: self.rng.randrange(1, len(valid))],
                    b"\xff\xfe" + valid,
                    valid.replace(b"shutdown", b"shut\xc3(down"),
                    bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 30))),
                    b"null",
                    b"[]",
                    b'"jsonrpc"',
                    b'{"jsonrpc": "1.0", "method": "initialized"}',
                    b'{"jsonrpc": 2, "method": 7}',
                    b'{"jsonrpc": "2.0", "result": 1, "id": "nobody-asked"}',
                    b'{"jsonrpc": "2.0", "id": [1], "method": "shutdown"}',
                    b'{"jsonrpc": "2.0", "id": 1.5, "method": "shutdown"}',
                    b'{"jsonrpc": "2.0", "params": {"jsonrpc": "2.0", "method": "exit"}}',
                ]
            )
        )

    def unknown(self) -> None:
        method = self.rng.choice(["textDocument/hover", "foo/bar", "$/x", "", "initialize"])
        if self.rng.random() < 0.5:
            self.request(method, self.rng.choice(WEIRD_VALUES))
        else:
            self.client.notify(method, self.rng.choice(WEIRD_VALUES))

    def cancel(self) -> None:
        if self.request_ids:
            target = self.rng.choice(self.request_ids[-20:])
            self.client.notify("$/cancelRequest", {"id": target})

    def step(self) -> None:
        actions = [
            (self.edit, 30, "edit"),
            (self.complete, 15, "completion"),
            (self.broken_request, 12, "broken request"),
            (self.broken_notification, 8, "broken notification"),
            (self.garbage, 10, "broken JSON, UTF-8 or framing content"),
            (self.unknown, 6, "unknown method"),
            (self.settings, 6, "settings"),
            (self.cancel, 8, "cancel"),
            (lambda: self.request("workspace/executeCommand", {"command": "codegeex2.status"}), 5,
             "status"),
        ]  # fmt: skip
        action, _, kind = self.rng.choices(actions, weights=[a[1] for a in actions])[0]
        action()
        self.count(kind)


async def test_fuzzed_session(tiny_model_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    with stderr_file(tmp_path) as stderr:
        client = await RawClient.start(
            "--model", str(tiny_model_dir), "--device", "cpu", stderr=stderr
        )
        try:
            await client.initialize(initializationOptions={"codegeex2": SETTINGS})
            fuzzer = Fuzzer(client, rng)
            for uri in URIS:
                fuzzer.open(uri)
            baseline = await normal_completion(client, "file:///fuzz/before.py")
            for sent in range(MESSAGES):
                fuzzer.step()
                if sent % BATCH == BATCH - 1:
                    await client.drain()
                    await asyncio.gather(*(client.answer(i) for i in fuzzer.request_ids))
            await asyncio.gather(*(client.answer(i) for i in fuzzer.request_ids))
            client.notify("workspace/didChangeConfiguration", {"settings": {"codegeex2": SETTINGS}})

            status = await client.request(
                "workspace/executeCommand", {"command": "codegeex2.status"}
            )
            for uri, model in fuzzer.models.items():
                expected = hashlib.sha256(model.text.encode("utf-8", "surrogatepass")).hexdigest()
                assert status["documents"][uri]["sha256"] == expected, uri
            assert await normal_completion(client, "file:///fuzz/after.py") == baseline
            assert client.process.returncode is None
            assert client.unexpected == []
            assert all(future.done() for future in client.pending.values())
            shown = client.shown()
            assert len(shown) == len(set(shown)), shown
            # A bad value for a setting is one problem, whatever the value.
            assert len(shown) <= len(SETTINGS) + 5, shown
            print(json.dumps({"messages": MESSAGES, **fuzzer.counts, "shown": len(shown)}))
        finally:
            await client.stop()


async def normal_completion(client: RawClient, uri: str) -> list[str]:
    """Suggestions at the end of a fresh document, once the model is ready."""
    for _ in range(600):
        status = await client.request("workspace/executeCommand", {"command": "codegeex2.status"})
        if status["state"] == "ready":
            break
        await asyncio.sleep(0.05)
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": SOURCE}},
    )
    result = await client.request(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": uri},
            "position": {"line": 5, "character": 8},
            "context": {"triggerKind": 1},
        },
    )
    items = [item["insertText"] for item in result["items"]]
    assert items, "the tiny model suggests something here"
    return items
