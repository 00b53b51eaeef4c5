"""``codegeex2-lsp serve``: the real server on the tiny checkpoint, spoken to over HTTP.

The server runs in a thread of the test process (the same code the command runs, on a Unix
socket of a private temp directory), so each test costs a model load of a second, not a
process start. Answers are checked against the local model run directly, token for token.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest

from codegeex2_lsp.backends.generation import SamplingParams
from codegeex2_lsp.backends.local.inference import LocalModel
from codegeex2_lsp.backends.local.loader import load_local
from codegeex2_lsp.backends.shared.listen import (
    ListenError,
    ModelServer,
    build_server,
    tcp_socket,
    unix_socket,
)
from codegeex2_lsp.backends.worker import Engine, LoadListener
from codegeex2_lsp.settings.fields import Settings
from tests.scripted_server import Reply, ScriptedServer, tokens

READY_TIMEOUT = 60.0
PROMPT = "# language: Python\ndef fibonacci(n):\n"


class Served:
    """A running server and an HTTP client on its socket."""

    def __init__(self, server: ModelServer, path: Path) -> None:
        self.server = server
        self.path = path
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(path)), base_url="http://serve", timeout=60
        )

    def status(self) -> dict[str, Any]:
        return dict(self.http.get("/status").json())

    def prompt(self, ids: list[int]) -> list[int]:
        """``ids`` as a prompt of token ids: after ``[gMASK] sop``, as the API takes them."""
        model = self.server.service.model
        assert model is not None
        return model.tokenizer.with_prefix(ids)

    def wait_for(self, predicate: Any, what: str) -> dict[str, Any]:
        """Poll the status until ``predicate`` holds: the server's own account, not a timer."""
        deadline = time.monotonic() + READY_TIMEOUT
        while not predicate(status := self.status()):
            assert time.monotonic() < deadline, f"never {what}: {status}"
            time.sleep(0.01)
        return status


@pytest.fixture
def private_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="cgserve"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def served(tiny_model_dir: Path, private_dir: Path) -> Iterator[Served]:
    with Serving(Settings(model=str(tiny_model_dir), device="cpu"), private_dir) as running:
        yield running


class Serving:
    """A server on a socket of ``directory``, run in a thread while the block lasts."""

    def __init__(
        self,
        settings: Settings,
        directory: Path,
        idle: float | None = None,
        *,
        socket_name: str = "model.sock",
    ) -> None:
        self.path = directory / socket_name
        self.sock = unix_socket(self.path)
        self.server = build_server(settings, idle, None)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> Served:
        self.thread.start()
        served = Served(self.server, self.path)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                if served.http.get("/health").status_code == 200:
                    return served
            except httpx.TransportError:
                pass
            assert self.thread.is_alive() and time.monotonic() < deadline, "server never ready"
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(READY_TIMEOUT)


@pytest.fixture(scope="module")
def local(tiny_model_dir: Path) -> LocalModel:
    model, _ = load_local(Settings(model=str(tiny_model_dir), device="cpu").load_spec())
    return model


def body(ids: list[int], **extra: Any) -> dict[str, Any]:
    return {"prompt": ids, "max_tokens": 12, "temperature": 0, "return_token_ids": True, **extra}


def events(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_models_names_the_model_and_its_context(served: Served, tiny_model_dir: Path) -> None:
    (card,) = served.http.get("/v1/models").json()["data"]
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert card["id"] == str(tiny_model_dir)
    assert card["max_model_len"] == config["seq_length"]


def test_greedy_answer_equals_the_local_model(served: Served, local: LocalModel) -> None:
    ids = local.tokenizer.prompt_ids(PROMPT)
    expected = local.generate(ids, SamplingParams(max_new_tokens=12), cache_bytes=0)
    answer = served.http.post("/v1/completions", json=body(ids)).json()
    (choice,) = answer["choices"]
    assert choice["token_ids"] == expected.ids
    assert choice["text"] == expected.text
    assert choice["finish_reason"] == ("stop" if expected.finish_reason == "eos" else "length")
    assert answer["usage"]["prompt_tokens"] == len(ids)
    assert answer["usage"]["completion_tokens"] == len(expected.ids)


def test_stream_carries_every_token_id_then_usage(served: Served, local: LocalModel) -> None:
    ids = local.tokenizer.prompt_ids(PROMPT)
    expected = local.generate(ids, SamplingParams(max_new_tokens=12), cache_bytes=0)
    request = body(ids, stream=True, stream_options={"include_usage": True}, user="a")
    with served.http.stream("POST", "/v1/completions", json=request) as response:
        chunks = events(response)
    *tokens, usage = chunks
    assert [t for c in tokens for t in c["choices"][0]["token_ids"]] == expected.ids
    assert "".join(c["choices"][0]["text"] for c in tokens) == expected.text
    assert tokens[0]["choices"][0]["prompt_token_ids"] == ids
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(expected.ids)


def test_a_document_reuses_another_clients_prefix(served: Served, local: LocalModel) -> None:
    ids = local.tokenizer.prompt_ids(PROMPT)
    extras = {"vllm_xargs": {"document": "file:///same.py"}}
    first = served.http.post("/v1/completions", json=body(ids, user="one", **extras)).json()
    second = served.http.post("/v1/completions", json=body(ids, user="two", **extras)).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    # Everything but the last prompt token, which is run again for its logits.
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == len(ids) - 1
    assert second["choices"][0]["token_ids"] == first["choices"][0]["token_ids"]


def test_closing_the_stream_stops_the_work(served: Served, local: LocalModel) -> None:
    ids = local.tokenizer.prompt_ids(PROMPT)
    request = body(ids, stream=True, max_tokens=3000, user="a")
    with served.http.stream("POST", "/v1/completions", json=request) as response:
        next(response.iter_lines())
    status = served.wait_for(
        lambda s: s["work"]["cancelled"] + s["work"]["completed"] == 1, "stopped"
    )
    assert status["requests"]["disconnected"] == 1
    assert status["work"]["cancelled"] == 1
    assert status["tokens"]["generated"] < 3000


def test_a_newer_request_for_the_document_supersedes_the_older(
    served: Served, local: LocalModel
) -> None:
    ids = local.tokenizer.prompt_ids(PROMPT)
    same = {"user": "a", "vllm_xargs": {"document": "file:///a.py"}}
    older = body(ids, stream=True, max_tokens=3000, **same)
    with served.http.stream("POST", "/v1/completions", json=older) as response:
        lines = response.iter_lines()
        next(lines)
        newer = served.http.post("/v1/completions", json=body(ids, **same)).json()
        rest = [json.loads(line[5:]) for line in lines if line.startswith("data: {")]
    assert newer["choices"][0]["finish_reason"] in ("stop", "length")
    assert rest[-1]["choices"][0]["finish_reason"] == "abort"
    assert served.status()["requests"]["superseded"] == 1


def test_another_clients_document_is_not_superseded(served: Served, local: LocalModel) -> None:
    ids = local.tokenizer.prompt_ids(PROMPT)
    document = {"vllm_xargs": {"document": "file:///a.py"}}
    first = Future[dict[str, Any]]()

    def other() -> None:
        request = body(ids, max_tokens=200, user="one", **document)
        first.set_result(served.http.post("/v1/completions", json=request).json())

    thread = threading.Thread(target=other)
    thread.start()
    served.wait_for(lambda s: s["tokens"].get("generated", 0) > 0, "started")
    second = served.http.post("/v1/completions", json=body(ids, user="two", **document)).json()
    thread.join()
    assert first.result()["choices"][0]["finish_reason"] != "abort"
    assert second["choices"][0]["finish_reason"] != "abort"
    assert served.status()["requests"]["superseded"] == 0


@pytest.mark.parametrize(
    ("request_body", "status", "param"),
    [
        ({"prompt": []}, 400, "prompt"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": [1] * 5000, "max_tokens": 8}, 400, "max_tokens"),
        ({"prompt": [10**6]}, 400, "prompt"),
        ({"prompt": [5], "temperature": float("nan")}, 400, None),
        ({"prompt": [5], "logit_bias": {"5": 3}}, 400, "logit_bias"),
        ({"prompt": [5], "model": "other"}, 404, "model"),
        ({"prompt": [5], "stop": ["\n"]}, 400, "stop"),
    ],
)
def test_bad_requests_get_vllms_error_object(
    served: Served, request_body: dict[str, Any], status: int, param: str | None
) -> None:
    if isinstance(request_body["prompt"], list) and request_body["prompt"]:
        request_body = {**request_body, "prompt": served.prompt(request_body["prompt"])}
    response = served.http.post(
        "/v1/completions",
        content=json.dumps(request_body, allow_nan=True),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["message"]
    if param is not None:
        assert error["param"] == param


def test_token_ids_without_the_prefix_are_refused(served: Served) -> None:
    """Ids are the model's input as they are: the server adds nothing a client left out."""
    text_ids = [5, 6, 7]
    missing = served.http.post("/v1/completions", json=body(text_ids, max_tokens=1))
    assert missing.status_code == 400
    error = missing.json()["error"]
    assert error["param"] == "prompt" and "[gMASK] sop" in error["message"]
    carried = served.http.post("/v1/completions", json=body(served.prompt(text_ids), max_tokens=1))
    assert carried.status_code == 200
    assert carried.json()["choices"][0]["prompt_token_ids"] == served.prompt(text_ids)


def test_a_model_that_cannot_be_served_fails_its_load(
    tiny_model_dir: Path, private_dir: Path
) -> None:
    """A backend's model without the served contract (a server's client) is a failed load,
    told on the status, never a server that says it is ready."""
    with ScriptedServer().running() as upstream:
        upstream.script(Reply(events=tokens([300])))
        settings = Settings(model=str(tiny_model_dir), backend="openai", server_url=upstream.url)
        serving = Serving(settings, private_dir)
        serving.thread.start()
        try:
            served = Served(serving.server, serving.path)
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                try:
                    status = served.wait_for(lambda s: s["state"] != "loading", "loaded")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server never listened"
                    time.sleep(0.02)
            assert status["state"] == "failed"
            assert "RemoteModel cannot be served" in status["failure"][0]
            assert served.http.get("/health").status_code == 503
        finally:
            serving.__exit__()


def test_the_socket_is_private(private_dir: Path) -> None:
    path = private_dir / "s.sock"
    sock = unix_socket(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        private_dir.chmod(0o755)
        with pytest.raises(ListenError, match="open to other users"):
            unix_socket(private_dir / "t.sock")
    finally:
        sock.close()


def test_a_second_server_on_a_live_socket_is_refused(served: Served) -> None:
    with pytest.raises(ListenError, match="already listens"):
        unix_socket(served.path)


def test_a_peer_of_another_user_is_refused(served: Served, private_dir: Path) -> None:
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to connect as another user")
    # Open the outer doors (directory and socket mode) to prove the inner one holds alone.
    private_dir.chmod(0o711)
    served.path.chmod(0o666)
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(sys.argv[1])\n"
        "try:\n"
        "    s.sendall(b'GET /health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "    print(repr(s.recv(100)))\n"
        "except OSError:\n"
        "    print('cut off')\n"
    )
    python = shutil.which("python3", path="/usr/bin:/bin") or "python3"

    def run_as(*user: str) -> str:
        command = [*user, python, "-c", probe, str(served.path)]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    assert "200 OK" in run_as()
    uid = _throwaway_uid()
    refused = run_as("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups")
    assert refused in ("b''", "cut off")


def _throwaway_uid(name: str = "codegeex2-peer") -> int:
    """A user that is not this one, created when missing."""
    found = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
        )
        found = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True)
    return int(found.stdout)


def test_tcp_beyond_loopback_needs_a_key() -> None:
    with pytest.raises(ListenError, match="CODEGEEX2_API_KEY"):
        tcp_socket("0.0.0.0", 0, None)
    tcp_socket("127.0.0.1", 0, None).close()


def test_a_key_guards_every_route_but_health(tiny_model_dir: Path) -> None:
    server = build_server(Settings(model=str(tiny_model_dir), device="cpu"), None, "k-123")
    sock = tcp_socket("127.0.0.1", 0, "k-123")
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            deadline = time.monotonic() + READY_TIMEOUT
            while http.get("/health").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert http.get("/v1/models").status_code == 401
            wrong = {"Authorization": "Bearer k-124"}
            assert http.get("/v1/models", headers=wrong).status_code == 401
            right = {"Authorization": "Bearer k-123"}
            assert http.get("/v1/models", headers=right).status_code == 200
    finally:
        server.should_exit = True
        thread.join(READY_TIMEOUT)


def test_the_server_exits_when_its_last_client_leaves(
    tiny_model_dir: Path, private_dir: Path
) -> None:
    settings = Settings(model=str(tiny_model_dir), device="cpu")
    with Serving(settings, private_dir, idle=0.0) as running:
        with running.http.stream("GET", "/attach", params={"client": "one"}) as attached:
            lines = attached.iter_lines()
            assert next(lines) == ": attached"
            assert running.status()["clients"] == 1
            assert not running.server.should_exit
        deadline = time.monotonic() + READY_TIMEOUT
        while not running.server.should_exit:
            assert time.monotonic() < deadline, "the server stayed"
            time.sleep(0.01)


def test_work_is_taken_in_turn_between_clients(local: LocalModel, tiny_model_dir: Path) -> None:
    engine = Engine()
    loaded = threading.Event()
    engine.load(
        Settings(model=str(tiny_model_dir), device="cpu").load_spec(),
        LoadListener(on_ready=lambda description: loaded.set()),
    )
    assert loaded.wait(READY_TIMEOUT)
    gate = threading.Event()
    order: list[str] = []
    blocker = engine.submit("busy", lambda model, cancelled: gate.wait(READY_TIMEOUT), owner="c")
    tickets = [
        engine.submit(name, lambda model, cancelled, name=name: order.append(name), owner=name[0])
        for name in ("a1", "a2", "a3", "b1")
    ]
    gate.set()
    for ticket in [blocker, *tickets]:
        ticket.future.result(READY_TIMEOUT)
    engine.close()
    assert order == ["a1", "b1", "a2", "a3"]
