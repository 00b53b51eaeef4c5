"""The openai backend in the engine and the editor's server, against a scripted server.

What only a scripted server can do on cue: fail with a 500, cut a stream, be absent at start
and appear later. The real engine's version of these is in test_vllm.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

from lsprotocol import types
from pytest_lsp import LanguageClient

from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.backends.worker import Engine, LoadListener
from codegeex2_lsp.settings.fields import Settings
from tests.lsp_support import (
    READY_TIMEOUT,
    inline,
    open_document,
    remote_flags,
    running_server,
    status,
    wait_for_state,
)
from tests.scripted_server import Reply, ScriptedServer, error_body, tokens
from tests.support import free_port

URI = "file:///w/add.py"
TEXT = "def add(a, b):\n"
ANSWER = "    return a + b"


def answering(server: ScriptedServer, tokenizer: ChatGLM2Tokenizer) -> None:
    """Every request from now on gets ``ANSWER``."""
    server.default = Reply(events=tokens(tokenizer.encode(ANSWER), finish="stop"))


def errors_shown(client: LanguageClient) -> list[str]:
    return [m.message for m in client.messages if m.type == types.MessageType.Error]


_documents = iter(range(10**6))


async def ask(client: LanguageClient) -> list[str]:
    """Suggestions in a document of its own, so no earlier answer can be reused."""
    uri = f"file:///w/add_{next(_documents)}.py"
    open_document(client, uri, TEXT)
    return await inline(client, uri, 1, 0, invoked=False)


async def answer_eventually(client: LanguageClient) -> list[str]:
    """Ask until an answer comes: the backend tries the server again only once its backoff has
    passed, which test_remote_client.py times on a clock it drives. The deadline here only
    stops a backend that never tries again; nothing waits for it to pass."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    while not (answer := await ask(client)):
        assert asyncio.get_running_loop().time() < deadline, "the backend never tried again"
        await asyncio.sleep(0.05)
    return answer


def test_a_server_down_at_start_is_loaded_when_it_comes_up(tiny_model_dir: Path) -> None:
    port = free_port()
    spec = Settings(
        model=str(tiny_model_dir), backend="openai", server_url=f"http://127.0.0.1:{port}/v1"
    ).load_spec()
    failures: list[str] = []
    ready = threading.Event()
    engine = Engine()
    try:
        engine.load(
            spec,
            LoadListener(
                on_failed=lambda message, hint: failures.append(message),
                on_ready=lambda description: ready.set(),
            ),
        )
        while not failures:
            assert not ready.wait(0.05)
        assert "cannot reach the completion server" in failures[0]
        tokenizer = ChatGLM2Tokenizer(tiny_model_dir / "tokenizer.model")
        with ScriptedServer().running(port=port) as server:
            answering(server, tokenizer)
            assert ready.wait(60), "the engine did not retry the load"
            assert engine.state == "ready"
    finally:
        engine.close()


async def test_failures_are_one_message_and_empty_answers_then_recovery(
    tiny_model_dir: Path,
) -> None:
    tokenizer = ChatGLM2Tokenizer(tiny_model_dir / "tokenizer.model")
    with ScriptedServer().running() as server:
        answering(server, tokenizer)
        async with running_server(*remote_flags(tiny_model_dir, server.url)) as client:
            ready = await wait_for_state(client, "ready")
            assert ready["backend"] == "openai"
            assert await ask(client) == [ANSWER]

            server.default = Reply(500, body=error_body("engine died", 500))
            server.script(Reply(events=tokens(tokenizer.encode("    ret"), finish=None), cut=True))
            for _ in range(6):
                assert await ask(client) == []
            (message,) = errors_shown(client)
            assert "broke off an answer" in message
            assert (await status(client))["reachable"] is False

            answering(server, tokenizer)
            assert await answer_eventually(client) == [ANSWER]
            assert (await status(client))["reachable"] is True
            assert len(errors_shown(client)) == 1


async def test_the_context_is_capped_by_the_server(tiny_model_dir: Path) -> None:
    tokenizer = ChatGLM2Tokenizer(tiny_model_dir / "tokenizer.model")
    with ScriptedServer([{"id": "cg2", "max_model_len": 128}]).running() as server:
        answering(server, tokenizer)
        long_file = "".join(f"value_{n} = {n} * {n}\n" for n in range(200))
        async with running_server(*remote_flags(tiny_model_dir, server.url)) as client:
            await wait_for_state(client, "ready")
            open_document(client, URI, long_file)
            await inline(client, URI, 200, 0, invoked=False)
            prompt = server.completions()[-1]["prompt"]
            assert 100 < len(prompt) + MAX_NEW_TOKENS <= 128


MAX_NEW_TOKENS = Settings().max_new_tokens


def test_the_openai_backend_loads_without_torch(tiny_model_dir: Path) -> None:
    tokenizer = ChatGLM2Tokenizer(tiny_model_dir / "tokenizer.model")
    with ScriptedServer().running() as server:
        answering(server, tokenizer)
        code = (
            "import json, sys\n"
            "from codegeex2_lsp.settings.fields import Settings\n"
            "from codegeex2_lsp.backends.loading import load_backend\n"
            f"spec = Settings(model={str(tiny_model_dir)!r}, backend='openai', "
            f"server_url={server.url!r}).load_spec()\n"
            "model, description = load_backend(spec)\n"
            "print(json.dumps([description, [m for m in ('torch', 'transformers') "
            "if m in sys.modules]]))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
    description, heavy = json.loads(done.stdout.splitlines()[-1])
    assert description.startswith("tiny at http://127.0.0.1:")
    assert heavy == []
