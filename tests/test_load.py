"""Load: a thousand requests over twenty documents, about a third of them cancelled.

Every request is answered, with a result or RequestCancelled and nothing else; no answer is
stale (answers replayed one at a time on a quiet server agree); the server's memory does not
grow with the requests served.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.rpc_client import RawClient, stderr_file

pytestmark = pytest.mark.slow

REQUESTS = 1000
DOCUMENTS = 20
CANCELLED = 0.33
IN_FLIGHT = 40
REPLAYED = 40
REQUEST_CANCELLED = -32800
SETTINGS = {
    "maxNewTokens": 2,
    "maxContextTokens": 128,
    "candidates": 1,
    "debounceMs": 0,
    "prefixCacheMb": 16,
    # A replay opens the text as a new document among the others; without snippets of the
    # other open documents its prompt is the original request's.
    "contextTokens": 0,
}
BODY = "\n\ndef {name}(path):\n    with open(path) as f:\n        "


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def params(uri: str, text: str, trigger: int) -> dict[str, Any]:
    lines = text.split("\n")
    return {
        "textDocument": {"uri": uri},
        "position": {"line": len(lines) - 1, "character": len(lines[-1])},
        "context": {"triggerKind": trigger},
    }


def open_document(client: RawClient, uri: str, text: str) -> None:
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}},
    )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
async def test_a_thousand_requests_with_cancellations(tiny_model_dir: Path, tmp_path: Path):
    rng = random.Random(1000)
    with stderr_file(tmp_path) as stderr:
        client = await RawClient.start(
            "--model", str(tiny_model_dir), "--device", "cpu", stderr=stderr
        )
        try:
            await client.initialize(initializationOptions={"codegeex2": SETTINGS})
            while (await status(client))["state"] != "ready":
                await asyncio.sleep(0.05)
            names = [f"load_{i}" for i in range(DOCUMENTS)]
            texts = {name: f"# rev 0\nimport os{BODY.format(name=name)}" for name in names}
            for name in names:
                open_document(client, f"file:///load/{name}.py", texts[name])
            sent: dict[Any, tuple[str, str, int]] = {}
            cancelled: set[Any] = set()
            rss_before = 0
            for n in range(REQUESTS):
                name = rng.choice(names)
                uri = f"file:///load/{name}.py"
                # An edit above the cursor: the prompt changes, and typed-ahead cannot answer.
                revision = f"# rev {n + 1}"
                old = texts[name].split("\n", 1)[0]
                texts[name] = revision + texts[name][len(old) :]
                change = {
                    "range": {
                        "start": {"line": 0, "character": 0},
                        "end": {"line": 0, "character": len(old)},
                    },
                    "text": revision,
                }
                client.notify(
                    "textDocument/didChange",
                    {
                        "textDocument": {"uri": uri, "version": n + 2},
                        "contentChanges": [change],
                    },
                )
                trigger = rng.choice([1, 2])
                msg_id = client.request_later(
                    "textDocument/inlineCompletion", params(uri, texts[name], trigger)
                )
                sent[msg_id] = (name, texts[name], trigger)
                if rng.random() < CANCELLED:
                    target = rng.choice(list(sent)[-5:])
                    cancelled.add(target)
                    client.notify("$/cancelRequest", {"id": target})
                if len(sent) % IN_FLIGHT == 0:
                    await asyncio.gather(*(client.answer(i) for i in list(sent)[-IN_FLIGHT:]))
                if n == REQUESTS // 10:
                    rss_before = rss_kib(client.process.pid)
            await asyncio.gather(*(client.answer(i) for i in sent))
            rss_after = rss_kib(client.process.pid)

            errors = [client.responses[i]["error"] for i in sent if "error" in client.responses[i]]
            assert all(error["code"] == REQUEST_CANCELLED for error in errors), errors[:3]
            answered = [i for i in sent if "result" in client.responses[i]]
            with_text = [i for i in answered if client.responses[i]["result"]["items"]]
            assert client.unexpected == []

            # Replayed on a quiet server, one at a time, the answers must be the same.
            mismatches = []
            for msg_id in rng.sample(with_text, min(REPLAYED, len(with_text))):
                name, text, trigger = sent[msg_id]
                uri = f"file:///replay/{msg_id}/{name}.py"
                open_document(client, uri, text)
                again = await client.request(
                    "textDocument/inlineCompletion", params(uri, text, trigger)
                )
                first = client.responses[msg_id]["result"]
                # Each answer's items carry ids of their own (for counting accepts).
                if texts_of(again) != texts_of(first):
                    mismatches.append((msg_id, texts_of(again), texts_of(first)))
            assert mismatches == []
            growth_mb = (rss_after - rss_before) / 1024
            print(
                json.dumps(
                    {
                        "requests": len(sent),
                        "cancel_sent": len(cancelled),
                        "request_cancelled": len(errors),
                        "answered": len(answered),
                        "answered_with_text": len(with_text),
                        "replayed": min(REPLAYED, len(with_text)),
                        "rss_growth_mb": round(growth_mb, 1),
                    }
                )
            )
            assert growth_mb <= 50
        finally:
            await client.stop()


def texts_of(result: dict[str, Any]) -> list[str]:
    return [item["insertText"] for item in result["items"]]


async def status(client: RawClient) -> dict[str, Any]:
    return await client.request("workspace/executeCommand", {"command": "codegeex2.status"})
