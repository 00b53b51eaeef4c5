"""The remote client against a scripted server: what a real engine cannot be made to do on cue.

The main path (prompts, streaming, abort on disconnect, greedy equality with the local model)
is proven against a real vLLM in test_vllm.py.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from codegeex2_lsp.backends.generation import Cancelled, SamplingParams
from codegeex2_lsp.backends.remote.connect import choose_model, connect, load_tokenizer
from codegeex2_lsp.backends.remote.http import Endpoint, RemoteError, ServedModel, redact_url
from codegeex2_lsp.backends.remote.streaming import BACKOFF_FIRST, RemoteModel
from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.errors import LoadError
from tests.scripted_server import Reply, ScriptedServer, error_body, tokens

GREEDY = SamplingParams(max_new_tokens=8)
KEY = "sk-test-secret-1234"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> ChatGLM2Tokenizer:
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer().running() as running:
        yield running


def open_model(
    tokenizer: ChatGLM2Tokenizer,
    server: ScriptedServer,
    *,
    key: str | None = None,
    timeout: float = 10.0,
    clock: Clock | None = None,
) -> RemoteModel:
    """Connect through the real handshake: the model list, then a one-token probe."""
    server.script(Reply(events=tokens([300], finish="length")))
    endpoint = Endpoint(server.url, api_key=key, timeout=timeout)
    model, _ = connect(tokenizer, endpoint, clock=clock or Clock())
    return model


def word_ids(tokenizer: ChatGLM2Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text)


def test_prompts_go_as_token_ids_with_the_sampling_mapped(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    model = open_model(tokenizer, server, key=KEY)
    prompt = tokenizer.prompt_ids("# language: Python\ndef add(a, b):\n")
    server.script(Reply(events=tokens(word_ids(tokenizer, "    return a + b"))))
    sampled = SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.9, top_k=40, seed=7)
    result = model.generate(prompt, sampled)

    assert result.text == "    return a + b"
    body = server.completions()[-1]
    assert body["prompt"] == prompt
    assert body["stream"] is True
    assert body["return_token_ids"] is True
    assert body["model"] == "tiny"
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (12, 0.8, 0.9)
    assert (body["top_k"], body["seed"]) == (40, 7)
    assert body["stop_token_ids"] == [tokenizer.eos_id]
    banned = {
        tokenizer.unk_id,
        tokenizer.bos_id,
        *range(tokenizer.piece_count, tokenizer.piece_count + 5),
    }
    assert {int(i) for i in body["logit_bias"]} == banned
    assert set(body["logit_bias"].values()) == {-100.0}
    assert server.headers[-1]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(model.status()) and KEY not in repr(model.client.endpoint)


def test_documents_are_named_only_to_a_server_of_our_own(tokenizer: ChatGLM2Tokenizer) -> None:
    for identity in (None, "editor-1234"):
        with ScriptedServer().running() as server:
            server.script(Reply(events=tokens([300])), Reply(events=tokens([301])))
            model, _ = connect(tokenizer, Endpoint(server.url), identity=identity, clock=Clock())
            model.generate(tokenizer.prompt_ids("x"), GREEDY, cache_key="file:///a.py")
            body = server.completions()[-1]
            if identity is None:
                assert "user" not in body and "vllm_xargs" not in body
            else:
                assert body["user"] == identity
                assert body["vllm_xargs"] == {"document": "file:///a.py"}
            model.close()


def test_greedy_sends_no_seed_and_no_top_k(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    model = open_model(tokenizer, server)
    server.script(Reply(events=tokens([300, 301])))
    model.generate(tokenizer.prompt_ids("x = "), GREEDY)
    body = server.completions()[-1]
    assert "seed" not in body and "top_k" not in body
    assert body["temperature"] == 0.0
    assert "Authorization" not in server.headers[-1]


def test_eos_ends_the_answer_and_is_not_part_of_it(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    model = open_model(tokenizer, server)
    ids = word_ids(tokenizer, "return x")
    server.script(Reply(events=tokens([*ids, tokenizer.eos_id], finish="stop")))
    result = model.generate(tokenizer.prompt_ids("def f(x):\n    "), GREEDY)
    assert (result.ids, result.text, result.finish_reason) == (ids, "return x", "eos")
    assert model.totals.generated == len(ids)


def test_the_early_stop_closes_the_stream(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    model = open_model(tokenizer, server)
    ids = word_ids(tokenizer, "a = 1\nb = 2\nc = 3\n")
    release = threading.Event()
    server.script(Reply(events=tokens(ids), hold=release, hold_after=len(ids) - 2))
    result = model.generate(
        tokenizer.prompt_ids(""), GREEDY, should_stop=lambda text: text.endswith("\n")
    )
    release.set()
    assert result.text == "a = 1\n"
    assert result.finish_reason == "stop"
    assert server.hung_up.wait(timeout=10)


def test_cancelled_while_the_server_is_silent_stops_at_once_and_hangs_up(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    model = open_model(tokenizer, server)
    release = threading.Event()
    server.script(Reply(events=tokens([300, 301, 302]), hold=release, hold_after=1))
    calls = 0

    def cancelled() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    with pytest.raises(Cancelled):
        model.generate(tokenizer.prompt_ids("x"), GREEDY, cancelled=cancelled)
    release.set()
    assert server.hung_up.wait(timeout=10)


def test_a_server_refusing_token_ids_gets_text_from_then_on(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    server.script(
        Reply(400, body=error_body("prompt must be a string", 400)),
        Reply(events=tokens([300], finish="length")),
    )
    model, probe = connect(tokenizer, Endpoint(server.url), clock=Clock())
    assert probe.prompts == "text"
    server.script(Reply(events=tokens(word_ids(tokenizer, "b = 2"))))
    model.generate(tokenizer.prompt_ids("a = 1\n"), GREEDY)
    sent = [request["prompt"] for request in server.completions()]
    assert sent == [tokenizer.prompt_ids(""), "", "a = 1\n"]
    # Remembered per server: a new connection starts with text.
    again = open_model(tokenizer, server)
    assert again.prompt_form == "text"
    assert server.completions()[-1]["prompt"] == ""


def test_a_refusal_that_text_does_not_cure_is_reported_as_it_was(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    server.script(
        Reply(400, body=error_body("max_tokens is too large", 400)),
        Reply(400, body=error_body("Tokenizer not available", 400)),
    )
    with pytest.raises(RemoteError) as raised:
        connect(tokenizer, Endpoint(server.url), clock=Clock())
    assert raised.value.kind == "refused"
    assert "max_tokens is too large" in raised.value.message


def test_a_server_error_is_reported_then_retried_after_a_backoff(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    clock = Clock()
    model = open_model(tokenizer, server, clock=clock)
    prompt = tokenizer.prompt_ids("x = ")
    server.script(Reply(500, body=error_body("engine died", 500)))
    with pytest.raises(RemoteError) as first:
        model.generate(prompt, GREEDY)
    assert first.value.kind == "server" and first.value.transient
    assert "engine died" in first.value.message
    sent = len(server.completions())
    with pytest.raises(RemoteError) as again:
        model.generate(prompt, GREEDY)
    assert again.value is first.value
    assert len(server.completions()) == sent, "no request while the backoff lasts"
    assert model.status()["reachable"] is False

    clock.now += BACKOFF_FIRST
    server.script(Reply(events=tokens([300, 301])))
    assert model.generate(prompt, GREEDY).ids == [300, 301]
    assert model.status()["reachable"] is True
    assert model.backoff.failures == 0


def test_backoff_doubles_while_failures_go_on(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    clock = Clock()
    model = open_model(tokenizer, server, clock=clock)
    waits = []
    for _ in range(4):
        server.script(Reply(503, body=error_body("overloaded", 503)))
        with pytest.raises(RemoteError):
            model.generate(tokenizer.prompt_ids("y"), GREEDY)
        waits.append(model.backoff.retry_at - clock.now)
        clock.now = model.backoff.retry_at
    assert waits == [BACKOFF_FIRST * 2**n for n in range(4)]


def test_a_stream_cut_in_the_middle(tokenizer: ChatGLM2Tokenizer, server: ScriptedServer) -> None:
    model = open_model(tokenizer, server)
    server.script(Reply(events=tokens([300, 301, 302], finish=None)[:2], cut=True))
    with pytest.raises(RemoteError) as raised:
        model.generate(tokenizer.prompt_ids("z"), GREEDY)
    assert raised.value.kind == "cut"
    assert "broke off" in raised.value.message


def test_an_error_event_after_the_answer_began(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    model = open_model(tokenizer, server)
    events = [*tokens([300], finish=None)[:1], error_body("EngineCore encountered an issue", 500)]
    server.script(Reply(events=events))
    with pytest.raises(RemoteError) as raised:
        model.generate(tokenizer.prompt_ids("z"), GREEDY)
    assert raised.value.kind == "server"
    assert "EngineCore encountered an issue" in raised.value.message


@pytest.mark.parametrize("key", [None, KEY])
def test_a_refused_key_says_what_to_set_and_never_shows_the_key(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer, key: str | None
) -> None:
    server.script(Reply(401, body=error_body("Unauthorized", 401)))
    with pytest.raises(RemoteError) as raised:
        connect(tokenizer, Endpoint(server.url, api_key=key), clock=Clock())
    error = raised.value
    assert error.kind == "auth"
    assert "CODEGEEX2_API_KEY" in error.hint
    assert KEY not in f"{error.message} {error.hint} {error!r}"


def test_an_unknown_model_names_the_setting(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    model = open_model(tokenizer, server)
    body = error_body("The model `tiny` does not exist. Valid aliases: other.", 404)
    server.script(Reply(404, body=body))
    with pytest.raises(RemoteError) as raised:
        model.generate(tokenizer.prompt_ids("z"), GREEDY)
    assert raised.value.kind == "model"
    assert "servedModel" in raised.value.hint


def test_an_unreachable_server(tokenizer: ChatGLM2Tokenizer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RemoteError) as raised:
        connect(tokenizer, Endpoint(f"http://127.0.0.1:{port}/v1"), clock=Clock())
    assert raised.value.kind == "unreachable"
    assert f"127.0.0.1:{port}" in raised.value.message
    assert "serverUrl" in raised.value.hint


def test_a_server_that_stops_answering_times_out(
    tokenizer: ChatGLM2Tokenizer, server: ScriptedServer
) -> None:
    model = open_model(tokenizer, server, timeout=0.2)
    release = threading.Event()
    server.script(Reply(events=tokens([300, 301]), hold=release, hold_after=1))
    try:
        with pytest.raises(RemoteError) as raised:
            model.generate(tokenizer.prompt_ids("z"), GREEDY)
    finally:
        release.set()
    assert raised.value.kind == "timeout"
    assert "requestTimeoutMs" in raised.value.hint


def test_the_same_protocol_over_a_unix_socket(tokenizer: ChatGLM2Tokenizer) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "server.sock")
        with ScriptedServer().running(socket_path=path) as server:
            server.script(Reply(events=tokens([300])))
            model, _ = connect(tokenizer, Endpoint(server.url, socket=path), clock=Clock())
            server.script(Reply(events=tokens(word_ids(tokenizer, "pass"))))
            assert model.generate(tokenizer.prompt_ids("def f():\n    "), GREEDY).text == "pass"
            assert model.status()["server"] == f"unix:{path}"
            model.close()


def test_the_context_length_comes_from_the_model_list(tokenizer: ChatGLM2Tokenizer) -> None:
    with ScriptedServer([{"id": "cg2", "max_model_len": 1024}]).running() as server:
        model = open_model(tokenizer, server)
        assert (model.served.id, model.context_tokens) == ("cg2", 1024)


def test_choosing_the_served_model() -> None:
    one = [ServedModel("cg2", 8192)]
    two = [ServedModel("a"), ServedModel("b")]
    assert choose_model(one, "", "here").id == "cg2"
    assert choose_model(two, "b", "here").id == "b"
    with pytest.raises(LoadError, match="several models: a, b"):
        choose_model(two, "", "here")
    with pytest.raises(LoadError, match="does not serve 'c'"):
        choose_model(two, "c", "here")
    with pytest.raises(LoadError, match="serves no model"):
        choose_model([], "", "here")


def test_urls_in_messages_lose_their_password() -> None:
    assert redact_url("https://user:pw@gpu.example:8443/v1") == "https://gpu.example:8443/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
