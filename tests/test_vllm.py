"""The remote backend against a real vLLM (CPU build from PyPI), started once for the module.

Two independent implementations of ChatGLM2 (transformers' GLM here, vLLM's own there) must
agree token for token under greedy decoding; closing a stream must stop the work inside vLLM
(its own metrics say so); a wrong key gets one clear message.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from lsprotocol import types
from pytest_lsp import LanguageClient

from codegeex2_lsp.backends.generation import Cancelled, Generation, SamplingParams
from codegeex2_lsp.backends.local.inference import LocalModel
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.remote.checkup import diagnose_remote
from codegeex2_lsp.backends.remote.connect import connect
from codegeex2_lsp.backends.remote.http import Endpoint, RemoteError
from codegeex2_lsp.backends.remote.streaming import RemoteModel
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.settings.fields import Settings
from tests.lsp_support import inline, open_document, running_server, wait_for_state
from tests.vllm_support import SERVED_NAME, VllmServer, vllm_python, write_vllm_checkpoint

pytestmark = pytest.mark.slow

KEY = "test-key-4f1c"

PROMPTS = {
    "python": "# language: Python\nimport os\n\n\ndef read_config(path):\n",
    "javascript": "// language: JavaScript\nfunction debounce(fn, wait) {\n",
    "java": "// language: Java\npublic class Main {\n    public static void main(",
    "c": "// language: C\n#include <stdio.h>\n\nint main(int argc, char **argv) {\n",
    "go": '// language: Go\npackage main\n\nimport "fmt"\n\nfunc main() {\n',
}

LONG = SamplingParams(max_new_tokens=1500)

STAGING_ATTEMPTS = 5
"""Times a scene that the machine's load can spoil is set up before the test gives up."""

BLOCK_TOKENS = 128


@pytest.fixture(scope="module")
def vllm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vllm_checkpoint(tmp_path_factory.mktemp("vllm-model"))


@pytest.fixture(scope="module")
def vllm(vllm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    server = VllmServer(
        vllm_python(), vllm_checkpoint, tmp_path_factory.mktemp("vllm"), api_key=KEY, dev_mode=True
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def local(vllm_checkpoint: Path) -> LocalModel:
    model = load_model(vllm_checkpoint, device=torch.device("cpu"), dtype=torch.float32)
    return LocalModel(model, read_tokenizer(vllm_checkpoint))


@pytest.fixture
def remote(vllm: VllmServer, local: LocalModel) -> Iterator[RemoteModel]:
    model, _ = connect(local.tokenizer, Endpoint(vllm.url, api_key=KEY, timeout=60))
    yield model
    model.close()


def settle(vllm: VllmServer) -> dict[str, float]:
    """vLLM's metrics once no request runs or waits: an abort has then taken effect."""
    deadline = time.monotonic() + 60
    while True:
        metrics = vllm.metrics()
        idle = metrics["vllm:num_requests_running"] + metrics["vllm:num_requests_waiting"] == 0
        if idle or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


@pytest.mark.parametrize("language", sorted(PROMPTS))
def test_greedy_output_equals_the_local_model_token_for_token(
    local: LocalModel, remote: RemoteModel, language: str
) -> None:
    prompt = local.tokenizer.prompt_ids(PROMPTS[language])
    params = SamplingParams(max_new_tokens=48)
    expected = local.generate(prompt, params, cache_bytes=0)
    got = remote.generate(prompt, params)
    assert got.ids == expected.ids
    assert got.text == expected.text
    assert len(got.ids) >= 8, "the tiny model should say something"


def test_the_next_keystroke_reuses_the_server_prefix_cache(
    local: LocalModel, remote: RemoteModel
) -> None:
    text = PROMPTS["python"] * 20
    first = remote.generate(local.tokenizer.prompt_ids(text), SamplingParams(max_new_tokens=4))
    second = remote.generate(
        local.tokenizer.prompt_ids(text + "    "), SamplingParams(max_new_tokens=4)
    )
    # vLLM caches whole blocks (128 tokens on the CPU): all but the last partial one hit.
    assert first.prompt_tokens > 256
    assert second.reused_tokens >= first.prompt_tokens - BLOCK_TOKENS
    assert second.prefilled_tokens == second.prompt_tokens - second.reused_tokens


def test_doctor_reports_the_server(vllm: VllmServer, vllm_checkpoint: Path) -> None:
    settings = Settings(backend="openai", server_url=vllm.url, model=str(vllm_checkpoint))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CODEGEEX2_API_KEY", KEY)
        diagnosis = diagnose_remote(settings)
    assert diagnosis.ok, diagnosis.problems
    text = "\n".join(diagnosis.lines)
    assert f"serves {SERVED_NAME}: context {vllm.max_model_len}" in text
    assert "prompts: token ids; answers: token ids" in text
    assert "round trip (one token): median" in text
    assert KEY not in text


def test_the_early_stop_aborts_the_request_inside_vllm(
    vllm: VllmServer, local: LocalModel, remote: RemoteModel
) -> None:
    """The stop rule fires at the first text and holds vLLM's scheduler there, so the request
    is still inside vLLM when the client closes the stream: vLLM must log the abort of that
    very request and generate nothing more for it once resumed.

    A client starved of the CPU can read its first text only after vLLM has run the whole
    request; then nothing is left inside vLLM to abort, and the scene is set again (vLLM's
    metrics, read while it is held, say which happened)."""
    held: list[bool] = []

    def stop_and_hold(text: str) -> bool:
        if not text:
            return False
        vllm.pause()
        metrics = vllm.metrics()
        inside = metrics["vllm:num_requests_running"] + metrics["vllm:num_requests_waiting"]
        held.append(inside > 0)
        return True

    for _ in range(STAGING_ATTEMPTS):
        before = settle(vllm)
        since = vllm.log_size()
        held.clear()

        try:
            result = remote.generate(
                local.tokenizer.prompt_ids(PROMPTS["c"]), LONG, should_stop=stop_and_hold
            )
            if held[:1] == [True]:
                request_id = vllm.wait_for_log(r"Added request (\S+)\.", since).group(1)
                vllm.wait_for_log(rf"Aborted request\(s\) [^\n]*{re.escape(request_id)}", since)
        finally:
            vllm.resume()
        after = settle(vllm)
        if held[:1] == [True]:
            break
    else:
        pytest.fail(f"vLLM ran the whole request before the first text {STAGING_ATTEMPTS} times")
    assert result.finish_reason == "stop"
    assert after["vllm:num_requests_running"] + after["vllm:num_requests_waiting"] == 0
    produced = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert result.generated_tokens <= produced < LONG.max_new_tokens


def test_cancellation_aborts_the_request_inside_vllm(
    vllm: VllmServer, local: LocalModel, remote: RemoteModel
) -> None:
    """The request is inside vLLM but held there (its scheduler paused), so it cannot finish
    before the client cancels, however fast vLLM is: vLLM must log the abort of that very
    request, and generate nothing for it once resumed, where a request left alive would run to
    its 1,500 tokens."""
    before = settle(vllm)
    cancel = threading.Event()
    outcome = Future[Generation]()

    def ask() -> None:
        try:
            prompt = local.tokenizer.prompt_ids(PROMPTS["java"])
            outcome.set_result(remote.generate(prompt, LONG, cancelled=cancel.is_set))
        except BaseException as error:
            outcome.set_exception(error)

    vllm.pause()
    since = vllm.log_size()
    asking = threading.Thread(target=ask)
    try:
        asking.start()
        request_id = vllm.wait_for_log(r"Added request (\S+)\.", since).group(1)
        cancel.set()
        vllm.wait_for_log(rf"Aborted request\(s\) [^\n]*{re.escape(request_id)}", since)
        asking.join(60)
    finally:
        cancel.set()
        vllm.resume()
    with pytest.raises(Cancelled):
        outcome.result(timeout=0)
    after = settle(vllm)
    assert after["vllm:num_requests_running"] + after["vllm:num_requests_waiting"] == 0
    produced = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert produced < LONG.max_new_tokens


def test_a_wrong_key_gets_one_clear_message(vllm: VllmServer, local: LocalModel) -> None:
    for key in ("not-the-key", None):
        with pytest.raises(RemoteError) as raised:
            connect(local.tokenizer, Endpoint(vllm.url, api_key=key))
        error = raised.value
        assert error.kind == "auth"
        assert error.status == 401
        assert "refused access" in error.message
        assert "CODEGEEX2_API_KEY" in error.hint
        assert KEY not in f"{error.message} {error.hint}"


# -- through the editor's server ---------------------------------------------------------------

DOCUMENTS = {
    "python": ("file:///w/config.py", "python", "import os\n\n\ndef read_config(path):\n"),
    "javascript": ("file:///w/util.js", "javascript", "function debounce(fn, wait) {\n"),
    "go": ("file:///w/main.go", "go", 'package main\n\nimport "fmt"\n\nfunc main() {\n'),
}


def lsp_flags(model_dir: Path, *extra: str) -> list[str]:
    # Each document is opened anew under another name: with snippets from the copies already
    # open, the same request would get a different prompt each time.
    flags = ["--model", str(model_dir), "--debounce-ms", "0", "--max-new-tokens", "16"]
    return [*flags, "--context-tokens", "0", *extra]


_opened = iter(range(10**6))


async def suggestions_for(client: LanguageClient, language: str) -> list[str]:
    """The suggestion at the end of the language's document, opened anew under a new name, so
    no answer shown before can be reused."""
    uri, language_id, text = DOCUMENTS[language]
    uri = uri.replace("/w/", f"/w{next(_opened)}/")
    open_document(client, uri, text, language_id)
    lines = text.split("\n")
    # An automatic request: one greedy suggestion (invoked ones add sampled candidates, and
    # two samplers need not agree).
    return await inline(client, uri, len(lines) - 1, len(lines[-1]), invoked=False)


def errors_shown(client: LanguageClient) -> list[str]:
    return [m.message for m in client.messages if m.type == types.MessageType.Error]


async def test_suggestions_through_vllm_equal_the_local_backends(
    vllm: VllmServer, vllm_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEGEEX2_API_KEY", KEY)
    remote_flags = lsp_flags(vllm_checkpoint, "--backend", "openai", "--server-url", vllm.url)
    local_flags = lsp_flags(vllm_checkpoint, "--device", "cpu", "--dtype", "float32")
    answers: dict[str, dict[str, list[str]]] = {}
    for name, flags in (("openai", remote_flags), ("local", local_flags)):
        async with running_server(*flags) as client:
            ready = await wait_for_state(client, "ready", "failed")
            assert ready["state"] == "ready", errors_shown(client)
            answers[name] = {lang: await suggestions_for(client, lang) for lang in DOCUMENTS}
            assert errors_shown(client) == []
    assert answers["openai"] == answers["local"]
    assert all(answers["local"][lang] for lang in DOCUMENTS), answers["local"]


async def test_a_wrong_key_is_one_message_in_the_editor(
    vllm: VllmServer, vllm_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEGEEX2_API_KEY", "not-the-key")
    flags = lsp_flags(vllm_checkpoint, "--backend", "openai", "--server-url", vllm.url)
    async with running_server(*flags) as client:
        await wait_for_state(client, "failed")
        assert await suggestions_for(client, "python") == []
        assert await suggestions_for(client, "go") == []
        (message,) = errors_shown(client)
        assert "refused access (401)" in message
        assert "CODEGEEX2_API_KEY" in message
        assert "not-the-key" not in message


async def answer_eventually(client: LanguageClient, language: str) -> list[str]:
    """Ask until an answer comes: the client retries the server after its backoff."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = await suggestions_for(client, language)
        if answer:
            return answer
        await asyncio.sleep(0.5)
    return []


async def test_server_down_at_start_killed_and_restarted(
    vllm: VllmServer, vllm_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last in the module: it takes the shared vLLM down and brings it back."""
    monkeypatch.setenv("CODEGEEX2_API_KEY", KEY)
    flags = lsp_flags(vllm_checkpoint, "--backend", "openai", "--server-url", vllm.url)
    async with running_server(*flags) as working:
        await wait_for_state(working, "ready")
        before = await suggestions_for(working, "python")
        assert before

        vllm.kill()
        for _ in range(5):
            assert await suggestions_for(working, "python") == []
        async with running_server(*flags) as late:
            await wait_for_state(late, "failed")
            for _ in range(3):
                assert await suggestions_for(late, "go") == []

            vllm.start()
            assert await answer_eventually(working, "python") == before
            assert await answer_eventually(late, "go")
            for client in (working, late):
                (message,) = errors_shown(client)
                assert "completion server" in message, message
                assert "codegeex2.serverUrl" in message or "server's log" in message
