"""The team server and the client that talks to it, tried as an attacker or a broken peer would.

The client side runs against a scripted loopback server (a peer that stops, sends keep-alives
forever, or sends garbage); the server side is the real ``serve`` on the tiny checkpoint, on a
private Unix socket or on loopback TCP. Bounds are checked with injected clocks or with peers
that never finish, so the outcome, never a duration, is what is asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from codegeex2_lsp.backends.generation import SamplingParams
from codegeex2_lsp.backends.remote.connect import connect, load_tokenizer
from codegeex2_lsp.backends.remote.http import (
    MAX_LINE_BYTES,
    Endpoint,
    RemoteError,
    Usage,
    WireClient,
)
from codegeex2_lsp.backends.shared.app import MAX_BODY_BYTES, Policy
from codegeex2_lsp.backends.shared.listen import build_server, tcp_socket
from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.cli import main
from codegeex2_lsp.settings.fields import Settings
from tests.scripted_server import Reply, ScriptedServer, tokens
from tests.test_serve import READY_TIMEOUT, Served, Serving, body, events

KEY = "team-key-7d2e"


class Ticking:
    """A clock that moves one second every time it is read: bounds pass in a few reads."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def __call__(self) -> float:
        return float(next(self.ticks))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> ChatGLM2Tokenizer:
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer().running() as running:
        yield running


@pytest.fixture
def private_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="cgsec"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def read_answer(endpoint: Endpoint, clock: Ticking | None = None) -> list[Any]:
    """Stream one completion with a fresh client; the pieces, or the error raised."""

    async def run() -> list[Any]:
        client = WireClient(endpoint, clock=clock) if clock else WireClient(endpoint)
        try:
            async with client.stream({"prompt": [5, 6]}, Usage()) as pieces:
                return [piece async for piece in pieces]
        finally:
            await client.aclose()

    return asyncio.run(run())


# -- 3. every wait on the server is bounded ----------------------------------------------------


def test_keep_alives_without_a_token_do_not_keep_a_request_alive(
    scripted: ScriptedServer,
) -> None:
    scripted.script(Reply(events=tokens([300], finish=None)[:1], keepalive=True, cut=True))
    with pytest.raises(RemoteError) as raised:
        read_answer(Endpoint(scripted.url, timeout=5.0), Ticking())
    assert raised.value.kind == "timeout"
    assert "sent no token within 5000 ms" in raised.value.message
    assert "requestTimeoutMs" in raised.value.hint


def test_an_answer_that_never_ends_is_bounded_as_a_whole(scripted: ScriptedServer) -> None:
    scripted.script(Reply(events=tokens([300, 301], finish=None)[:2], repeat=True, cut=True))
    with pytest.raises(RemoteError) as raised:
        read_answer(Endpoint(scripted.url, timeout=1000.0, answer_timeout=20.0), Ticking())
    assert raised.value.kind == "timeout"
    assert "did not finish an answer within 20 s" in raised.value.message


def test_a_server_that_accepts_but_never_answers_times_out() -> None:
    with socket.socket() as stopped:
        # Listening, never accepting: the kernel completes the connection, nothing answers,
        # as with a server process that was stopped.
        stopped.bind(("127.0.0.1", 0))
        stopped.listen(8)
        url = f"http://127.0.0.1:{stopped.getsockname()[1]}/v1"
        with pytest.raises(RemoteError) as raised:
            read_answer(Endpoint(url, timeout=0.2))
    assert raised.value.kind == "timeout"


# -- 8. garbage from a server is one clear error, with the backoff -----------------------------


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"data: 5\n\n", "not a JSON object"),
        (b'data: {"choices": [{"index": 0, "token_ids": "abc"}]}\n\n', "token_ids"),
        (b'data: {"choices": [{"index": 0, "token_ids": [true, -1]}]}\n\n', "token_ids"),
        (b'data: {"choices": [{"index": 0, "text": 5}]}\n\n', "not a string"),
        (b'data: {"choices": {"0": 1}}\n\n', "not a list"),
        (b'data: {"choices": [7]}\n\n', "not a list of objects"),
        (b"data: {not json\n\n", "not JSON"),
        (b"data: " + b"[" * 5000 + b"\n\n", "not JSON"),
    ],
)
def test_a_malformed_event_is_one_clear_error_then_the_backoff(
    tokenizer: ChatGLM2Tokenizer, scripted: ScriptedServer, raw: bytes, what: str
) -> None:
    scripted.script(Reply(events=tokens([300], finish="length")))
    # A clock that stands still: the backoff after the failure never runs out.
    model, _ = connect(tokenizer, Endpoint(scripted.url), clock=lambda: 0.0)
    scripted.script(Reply(events=tokens([301], finish=None)[:1], raw=raw, cut=True))
    try:
        with pytest.raises(RemoteError) as raised:
            model.generate(tokenizer.prompt_ids("x"), SamplingParams(max_new_tokens=4))
        asked = len(scripted.completions())
        # Within the backoff the same error comes back without asking the server again.
        with pytest.raises(RemoteError) as again:
            model.generate(tokenizer.prompt_ids("x"), SamplingParams(max_new_tokens=4))
    finally:
        model.close()
    assert raised.value.kind == "garbled"
    assert what in raised.value.message
    assert "OpenAI-compatible" in raised.value.hint
    assert again.value is raised.value
    assert len(scripted.completions()) == asked


def test_a_line_without_end_is_cut_off_at_the_bound(scripted: ScriptedServer) -> None:
    scripted.script(Reply(raw=b"data: " + b"x" * (MAX_LINE_BYTES + 2**20), cut=True))
    with pytest.raises(RemoteError) as raised:
        read_answer(Endpoint(scripted.url, timeout=30.0))
    assert raised.value.kind == "garbled"
    assert "a line of more than 4 MiB" in raised.value.message


def test_a_huge_model_list_is_refused(tokenizer: ChatGLM2Tokenizer) -> None:
    huge = [{"id": "m" * 1000}] * 5000
    with ScriptedServer(models=huge).running() as server, pytest.raises(RemoteError) as raised:
        connect(tokenizer, Endpoint(server.url))
    assert raised.value.kind == "garbled"


# -- the real server ---------------------------------------------------------------------------


@pytest.fixture
def served(tiny_model_dir: Path, private_dir: Path) -> Iterator[Served]:
    with Serving(Settings(model=str(tiny_model_dir), device="cpu"), private_dir) as running:
        yield running


def hold_the_model(served: Served) -> threading.Event:
    """Keep the model thread busy until the returned event is set: later work queues."""
    release = threading.Event()
    engine = served.server.service.engine
    engine.submit("\0hold", lambda model, cancelled: release.wait(READY_TIMEOUT), owner="hold")
    return release


# -- 4. every request gets an answer; only a named document supersedes --------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("named", [False, True])
def test_four_simultaneous_requests_are_all_answered(
    served: Served, stream: bool, named: bool
) -> None:
    identity = {"user": "w1", "vllm_xargs": {"document": "file:///a.py"}} if named else {}
    request = body(served.prompt([5, 6, 7]), max_tokens=4, stream=stream, **identity)

    def ask(_: int) -> list[str | None]:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(served.path)), timeout=60) as http:
            if not stream:
                answer = http.post("http://serve/v1/completions", json=request).json()
                return [choice["finish_reason"] for choice in answer["choices"]]
            with http.stream("POST", "http://serve/v1/completions", json=request) as response:
                return [c["finish_reason"] for e in events(response) for c in e["choices"]]

    release = hold_the_model(served)
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = pool.map(ask, range(4))
            # Queued behind the held model, or answered at once when superseded in the queue.
            served.wait_for(
                lambda s: s["requests"]["in_flight"] + s["requests"]["superseded"] == 4, "queued"
            )
            release.set()
            endings = [reasons[-1] for reasons in answers]
    finally:
        release.set()
    requests = served.status()["requests"]
    if named:
        # The newest stands; the three it superseded in the queue are answered "abort".
        assert endings.count("abort") == 3
        assert requests["superseded"] == 3 and requests["completed"] == 1
    else:
        assert "abort" not in endings
        assert requests["superseded"] == 0 and requests["completed"] == 4
    assert requests["in_flight"] == 0


# -- 5. request size, nesting, and the event loop ----------------------------------------------


def post_raw(served: Served, content: Any, **headers: str) -> httpx.Response:
    return served.http.post(
        "/v1/completions", content=content, headers={"content-type": "application/json", **headers}
    )


def test_a_body_over_the_limit_gets_413_before_it_is_parsed(served: Served) -> None:
    # Not JSON at all: only a check made before parsing can answer 413 rather than 400.
    oversized = b"{" * (MAX_BODY_BYTES + 1)
    response = post_raw(served, oversized)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 413

    def chunked() -> Iterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 2**16 + 2):
            yield b" " * 2**16

    response = post_raw(served, chunked())
    assert response.status_code == 413


def test_the_body_limit_is_the_servers_setting(
    tiny_model_dir: Path, tokenizer: ChatGLM2Tokenizer
) -> None:
    policy = Policy(max_body_bytes=2**12, one_user=False)
    settings = Settings(model=str(tiny_model_dir), device="cpu")
    with TcpServing(settings, policy) as http:
        fits = http.post("/v1/completions", json=body(tokenizer.with_prefix([5, 6]), max_tokens=1))
        over = http.post("/v1/completions", json=body([5] * 4000, max_tokens=1))
    assert fits.status_code == 200
    assert over.status_code == 413


def test_json_nested_deeply_gets_400(served: Served) -> None:
    for nested in (b"[" * 5000 + b"]" * 5000, b'{"prompt": ' + b"[" * 900 + b"]" * 900 + b"}"):
        response = post_raw(served, nested)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == 400


def test_health_answers_while_a_prompt_is_tokenized(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = served.server.service.model
    assert model is not None
    tokenizing, release = threading.Event(), threading.Event()
    prompt_ids = model.tokenizer.prompt_ids

    def held(text: str) -> list[int]:
        tokenizing.set()
        release.wait(READY_TIMEOUT)
        return prompt_ids(text)

    monkeypatch.setattr(model.tokenizer, "prompt_ids", held)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            served.http.post, "/v1/completions", json={"prompt": "x = 1\n", "max_tokens": 1}
        )
        try:
            assert tokenizing.wait(READY_TIMEOUT)
            health = served.http.get("/health", timeout=30)
        finally:
            release.set()
        assert health.status_code == 200
        assert answer.result().status_code == 200


# -- 9. the team server: a key, and prefixes kept per client ------------------------------------


class TcpServing:
    """The server on loopback TCP with ``policy``, guarded by :data:`KEY`; yields a client."""

    def __init__(self, settings: Settings, policy: Policy) -> None:
        self.server = build_server(settings, None, KEY, policy)
        self.sock = tcp_socket("127.0.0.1", 0, KEY)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.http = httpx.Client(
            base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}
        )

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                if self.http.get("/health").status_code == 200:
                    return self.http
            except httpx.TransportError:
                pass
            assert self.thread.is_alive() and time.monotonic() < deadline, "server never ready"
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(READY_TIMEOUT)


def cached(http: httpx.Client, ids: list[int], **identity: Any) -> int:
    answer = http.post("/v1/completions", json=body(ids, max_tokens=2, **identity)).json()
    return int(answer["usage"]["prompt_tokens_details"]["cached_tokens"])


def test_over_tcp_a_prompt_prefix_serves_only_its_own_client(
    tiny_model_dir: Path, tokenizer: ChatGLM2Tokenizer
) -> None:
    secret = tokenizer.prompt_ids("password = 'hunter2-correct-horse'\n")
    document = {"vllm_xargs": {"document": "file:///w/secrets.py"}}
    settings = Settings(model=str(tiny_model_dir), device="cpu")
    with TcpServing(settings, Policy(one_user=False)) as http:
        assert cached(http, secret, user="alice-5f3a", **document) == 0
        # Another client guessing the same prompt, named or not, learns nothing of it.
        assert cached(http, secret, user="mallory", **document) == 0
        assert cached(http, secret) == 0
        assert cached(http, secret) == 0
        # Its owner still gets the reuse that makes the next keystroke fast.
        assert cached(http, secret, user="alice-5f3a", **document) == len(secret) - 1


def test_the_openai_backend_on_the_team_server_needs_the_key_and_reuses_nothing(
    tiny_model_dir: Path, tokenizer: ChatGLM2Tokenizer
) -> None:
    settings = Settings(model=str(tiny_model_dir), device="cpu")
    with TcpServing(settings, Policy(one_user=False)) as http:
        url = str(http.base_url).rstrip("/") + "/v1"
        with pytest.raises(RemoteError) as refused:
            connect(tokenizer, Endpoint(url))
        assert refused.value.kind == "auth"
        model, _ = connect(tokenizer, Endpoint(url, api_key=KEY))
        try:
            prompt = tokenizer.prompt_ids("def add(a, b):\n")
            first = model.generate(prompt, SamplingParams(max_new_tokens=3))
            second = model.generate(prompt, SamplingParams(max_new_tokens=3))
        finally:
            model.close()
    # Its requests name no client: nothing of theirs is kept for anyone, so nothing is reused.
    assert first.ids == second.ids
    assert first.reused_tokens == second.reused_tokens == 0


def test_tcp_without_a_key_is_refused_unless_opted_in(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CODEGEEX2_API_KEY", raising=False)
    model = ["--model", str(tiny_model_dir), "--device", "cpu"]
    with socket.socket() as taken:
        # Were the key not asked for, serving would fail here too, but for the port.
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        assert main(["serve", *model, "--host", "127.0.0.1", "--port", port]) == 1
    assert "set CODEGEEX2_API_KEY" in capsys.readouterr().err

    command = [sys.executable, "-I", "-m", "codegeex2_lsp", "serve", *model]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--insecure-no-key"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "--insecure-no-key" in line or "serving" in line:
                break
        assert any("without an API key" in line for line in lines), lines
    finally:
        process.terminate()
        process.wait(READY_TIMEOUT)


def test_the_private_socket_needs_no_key_and_shares_prefixes(
    served: Served, tokenizer: ChatGLM2Tokenizer
) -> None:
    ids = tokenizer.prompt_ids("import os\n")
    document = {"vllm_xargs": {"document": "file:///same.py"}}
    http = served.http
    assert json.loads(http.get("/v1/models").text)["data"]
    assert cached(http, ids, user="one", **document) == 0
    assert cached(http, ids, user="two", **document) == len(ids) - 1
