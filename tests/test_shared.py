"""The ``shared`` backend end to end: real LSP processes without torch, and the real server
they start, or one the test runs on their socket where it must hold the model.

Every test gets its own runtime directory, so its servers are its own. Waits are on what the
processes report (the LSP status, the server's status, a process's exit), never on a timer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from codegeex2_lsp.backends.generation import Cancelled, Generation
from codegeex2_lsp.backends.shared.launcher import (
    pid_alive,
    running_servers,
    server_status,
    socket_path,
)
from codegeex2_lsp.postprocess import make_context, postprocess
from codegeex2_lsp.settings.fields import Settings
from codegeex2_lsp.testing import write_tiny_model
from tests.lsp_support import (
    READY_TIMEOUT,
    Reference,
    ask_inline,
    inline,
    open_document,
    running_server,
    status,
    wait_for_state,
)
from tests.support import CURSOR, SOURCE
from tests.test_serve import Serving

pytestmark = pytest.mark.slow

URI = "file:///project/app.py"
TAG = "# language: Python\n"
LONG_RUN = ("--max-new-tokens", "400", "--multiline", "always", "--candidates", "1")
LONG_SOURCE = "import os\n\n\ndef f(path):\n    x = "
LONG_CURSOR = (4, 8)


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime directory for this test's servers, and none of them left behind."""
    directory = Path(tempfile.mkdtemp(prefix="cgrt"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    yield directory
    for _, left in running_servers():
        os.kill(left["pid"], signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wide enough that a token takes milliseconds to decode, so work is caught running."""
    return write_tiny_model(
        tmp_path_factory.mktemp("slow-model"),
        num_layers=6,
        hidden_size=512,
        ffn_hidden_size=1376,
        num_attention_heads=8,
        kv_channels=64,
    )


def shared(model_dir: Path, *extra: str) -> tuple[str, ...]:
    return (
        "--model",
        str(model_dir),
        "--device",
        "cpu",
        "--debounce-ms",
        "0",
        "--backend",
        "shared",
        *extra,
    )


def only_server() -> tuple[Path, dict[str, Any]]:
    servers = running_servers()
    assert len(servers) == 1, servers
    return servers[0]


def wait_for_server(path: Path, predicate: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        current = server_status(path)
        if current is not None and predicate(current):
            return current
        assert time.monotonic() < deadline, f"the server never {what}: {current}"
        time.sleep(0.005)


def wait_for_exit(pid: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"server {pid} is still running"
        time.sleep(0.02)


async def test_two_windows_share_one_load_and_answer_as_the_local_model(
    tiny_model_dir: Path, runtime: Path
) -> None:
    reference = Reference(tiny_model_dir)
    expected = postprocess(reference.greedy(TAG + SOURCE, 64), make_context(SOURCE, "", "python"))
    flags = shared(tiny_model_dir, "--shared-idle-minutes", "0")
    # Both start at once and race to start the server: the lock lets one win.
    async with running_server(*flags) as one, running_server(*flags) as two:
        await asyncio.gather(wait_for_state(one, "ready"), wait_for_state(two, "ready"))
        path, server = only_server()
        assert server["loads"] == 1
        assert server["clients"] == 2
        for client in (one, two):
            open_document(client, URI, SOURCE)
            assert await inline(client, URI, *CURSOR, invoked=False) == [expected]
        # The windows' processes, named by the ids they attached with, hold no torch.
        for client_id in server["attached"]:
            maps = Path(f"/proc/{client_id.split('-')[0]}/maps").read_text()
            assert "libtorch" not in maps and "libc10" not in maps
        assert not one.messages and not two.messages
    # Both windows closed: with no idle time allowed, the server leaves at once.
    wait_for_exit(server["pid"])
    assert not path.exists()


async def test_a_killed_server_costs_one_message_and_the_next_request_restarts_it(
    slow_model_dir: Path, runtime: Path
) -> None:
    async with running_server(*shared(slow_model_dir, *LONG_RUN)) as client:
        await wait_for_state(client, "ready")
        open_document(client, URI, LONG_SOURCE)
        path, before = only_server()
        pending = asyncio.ensure_future(inline(client, URI, *LONG_CURSOR))
        await asyncio.to_thread(
            wait_for_server, path, lambda s: s["tokens"].get("generated", 0) > 0, "generated"
        )
        os.kill(before["pid"], signal.SIGKILL)
        assert await pending == []
        again = await inline(client, URI, *LONG_CURSOR)
        path, after = only_server()
        assert after["pid"] != before["pid"]
        assert after["tokens"]["generations"] == 1
        assert again
        assert len(client.messages) == 1, client.messages
        assert (await status(client))["restarts"] == 1


class HeldFirst:
    """The served model's first generation waits, before any work, until its request is
    cancelled; later ones run as they come. The model's own check then stops it."""

    def __init__(self, generate: Callable[..., Generation]) -> None:
        self._generate = generate
        self.started = threading.Event()
        self.endings: list[str] = []

    def generate(self, *args: Any, cancelled: Callable[[], bool], **rest: Any) -> Generation:
        first = not self.started.is_set()
        self.started.set()
        if not first:
            return self._generate(*args, cancelled=cancelled, **rest)

        def held() -> bool:
            deadline = time.monotonic() + READY_TIMEOUT
            while not cancelled():
                assert time.monotonic() < deadline, "the held generation was never cancelled"
                time.sleep(0.005)
            return True

        try:
            return self._generate(*args, cancelled=held, **rest)
        except Cancelled:
            self.endings.append("cancelled")
            raise


async def test_cancelling_in_one_window_stops_only_that_windows_work(
    tiny_model_dir: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server runs in this process, where the socket the windows look for is, so the test
    # holds the first generation until its cancellation arrives: nothing races the model.
    flags = shared(tiny_model_dir, "--candidates", "1")
    spec = Settings(model=str(tiny_model_dir), device="cpu", backend="shared").load_spec()
    path = socket_path(spec)
    served_settings = Settings(model=str(tiny_model_dir), device="cpu")
    with Serving(served_settings, path.parent, socket_name=path.name) as served:
        model = served.server.service.model
        assert model is not None
        held = HeldFirst(model.generate)
        monkeypatch.setattr(model, "generate", held.generate)
        async with running_server(*flags) as one, running_server(*flags) as two:
            await asyncio.gather(wait_for_state(one, "ready"), wait_for_state(two, "ready"))
            assert served.status()["clients"] == 2
            for client in (one, two):
                open_document(client, URI, SOURCE)
            cancelled = ask_inline(one, URI, *CURSOR, msg_id="to-cancel")
            assert await asyncio.to_thread(held.started.wait, READY_TIMEOUT)
            # The other window's request for the same URI waits its turn on the model thread.
            kept = asyncio.ensure_future(inline(two, URI, *CURSOR))
            await asyncio.to_thread(
                served.wait_for, lambda s: s["requests"]["in_flight"] == 2, "took both"
            )
            one.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="to-cancel"))
            with pytest.raises(JsonRpcRequestCancelled):
                await cancelled
            assert await kept
            server = await asyncio.to_thread(
                served.wait_for, lambda s: s["requests"]["in_flight"] == 0, "finished"
            )
    # The held work was stopped by the model itself, once the window's stream closed. Neither
    # request superseded the other, though both name the same URI.
    assert held.endings == ["cancelled"]
    requests = server["requests"]
    assert requests["superseded"] == requests["failed"] == 0
    assert requests["disconnected"] >= 1
    assert requests["completed"] + requests["disconnected"] == 2
