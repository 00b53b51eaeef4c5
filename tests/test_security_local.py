"""What a repository, a hung server or a broken environment cannot do to the editor.

Shadow modules in a temporary "repository" write a marker when imported: every process the
project spawns from there must import none of them. The shared server is stopped with SIGSTOP
to prove every wait on it has a bound; a runtime directory of another user, the API key in the
environment and SIGTERM each get the outcome the README promises. Waits are on what the
processes report; their limits are generous and only stop a test that hangs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from codegeex2_lsp.backends.local import int4_cpu
from codegeex2_lsp.backends.shared import launcher
from codegeex2_lsp.backends.shared.launcher import (
    ensure_server,
    pid_alive,
    running_servers,
    server_status,
)
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.checks import plain_http_beyond_loopback
from codegeex2_lsp.settings.fields import Settings
from codegeex2_lsp.settings.sources import apply_updates
from tests.lsp_support import (
    READY_TIMEOUT,
    inline,
    open_document,
    running_server,
    status,
    wait_for_state,
    wait_for_status,
)
from tests.test_shared import CURSOR, SOURCE, URI, only_server, runtime, shared, wait_for_exit

__all__ = ["runtime"]

REPOSITORY = Path(__file__).resolve().parents[1]

SHADOWED = ("subprocess", "json", "ctypes", "socket", "argparse", "typing_extensions")
"""Modules the spawned processes import (stdlib and a dependency), shadowed in the repository."""

OTHER_UID = 65534
"""``nobody``: the owner of a directory that is not this user's, where the test may chown."""

SETTLE_TIMEOUT = 120.0
"""Generous bound on a process's exit or a lock holder's start; only a hang reaches it."""


@pytest.fixture
def hostile_repository(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A working directory whose shadow modules record each import; and the marker folder."""
    repository = tmp_path / "repository"
    markers = tmp_path / "markers"
    repository.mkdir()
    markers.mkdir()
    for name in SHADOWED:
        # Builtins only: the shadow must leave its mark before anything can fail.
        (repository / f"{name}.py").write_text(
            f"open({str(markers / name)!r} + '.' + str(__import__('os').getpid()), 'w').close()\n"
            f"raise ImportError('shadow {name} imported')\n",
            encoding="utf-8",
        )
    yield repository, markers


def imported(markers: Path) -> list[str]:
    return sorted(path.name for path in markers.iterdir())


# -- 1. every spawned process is isolated from the working directory ---------------------------


def extension_python_args() -> list[str]:
    """How the VS Code extension runs ``codegeex2.pythonPath``, read from its source."""
    source = (REPOSITORY / "editors/vscode/src/serverCommand.ts").read_text(encoding="utf-8")
    found = re.search(r"export const PYTHON_ARGS[^=]*=\s*\[([^\]]*)\]", source)
    assert found is not None, "serverCommand.ts no longer names PYTHON_ARGS"
    return re.findall(r"'([^']*)'", found.group(1))


def test_the_extensions_python_start_imports_nothing_from_the_workspace(
    hostile_repository: tuple[Path, Path],
) -> None:
    repository, markers = hostile_repository
    started = subprocess.run(
        [sys.executable, *extension_python_args(), "--version"],
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=SETTLE_TIMEOUT,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("codegeex2-lsp")
    assert imported(markers) == []


async def test_the_shared_server_start_imports_nothing_from_the_workspace(
    tiny_model_dir: Path, runtime: Path, hostile_repository: tuple[Path, Path]
) -> None:
    repository, markers = hostile_repository
    async with running_server(
        *shared(tiny_model_dir), python_flags=("-I",), cwd=repository
    ) as client:
        await wait_for_state(client, "ready", "failed")
        open_document(client, URI, SOURCE)
        assert await inline(client, URI, *CURSOR)
        _, server = only_server()
    assert imported(markers) == []
    assert server["state"] == "ready"


@pytest.mark.skipif(
    not int4_cpu._compiler() or os.uname().machine not in ("x86_64", "amd64"),
    reason="the INT4 CPU kernel is built only on x86-64 with a C compiler",
)
def test_the_kernel_build_check_imports_nothing_from_the_working_directory(
    hostile_repository: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository, markers = hostile_repository
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(repository)
    int4_cpu.load.cache_clear()
    try:
        library = int4_cpu.load()
    finally:
        int4_cpu.load.cache_clear()
    assert library is not None
    assert imported(markers) == []


# -- 2. where code goes is the user's to say --------------------------------------------------


def test_a_url_with_credentials_never_replaces_the_key() -> None:
    update = apply_updates(Settings(), {"serverUrl": "https://me:secret@gpu.example/v1"})
    assert update.settings.server_url == Settings().server_url
    (error,) = update.errors
    assert "serverUrl" in error and "user:password@" in error and "secret" in error


@pytest.mark.parametrize(
    ("url", "exposed"),
    [
        ("http://gpu.example:8000/v1", True),
        ("http://10.0.0.5/v1", True),
        ("https://gpu.example/v1", False),
        ("http://127.0.0.1:8000/v1", False),
        ("http://localhost:8000/v1", False),
        ("http://[::1]:8000/v1", False),
    ],
)
def test_plain_http_is_flagged_only_beyond_loopback(url: str, exposed: bool) -> None:
    assert plain_http_beyond_loopback(url) is exposed


def listener() -> tuple[socket.socket, str]:
    """A loopback socket that accepts connections nobody answers, and its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


async def test_a_configuration_change_cannot_send_code_to_a_new_server(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEGEEX2_API_KEY", "k-local-test")
    chosen, chosen_url = listener()
    elsewhere, elsewhere_url = listener()
    flags = ("--model", str(tiny_model_dir), "--device", "cpu", "--server-url", chosen_url)
    with chosen, elsewhere:
        async with running_server(*flags) as client:
            await wait_for_state(client, "ready")
            client.workspace_did_change_configuration(
                types.DidChangeConfigurationParams(
                    settings={"codegeex2": {"backend": "openai", "serverUrl": elsewhere_url}}
                )
            )
            # The load goes to the URL the server started with, and only there.
            chosen.settimeout(READY_TIMEOUT)
            connection, _ = await asyncio.to_thread(chosen.accept)
            connection.close()
            current = await status(client)
            assert current["settings"]["backend"] == "openai"
            assert current["settings"]["server_url"] == chosen_url
            elsewhere.setblocking(False)
            with pytest.raises(BlockingIOError):
                elsewhere.accept()
            (message,) = [m.message for m in client.messages if "serverUrl" in m.message]
            assert "restart" in message


# -- 3. a stopped shared server or start-lock holder never blocks a window ----------------------


async def test_a_stopped_shared_server_costs_a_new_window_a_message_not_the_window(
    tiny_model_dir: Path, runtime: Path
) -> None:
    flags = shared(tiny_model_dir)
    async with running_server(*flags) as first:
        await wait_for_state(first, "ready")
        open_document(first, URI, SOURCE)
        _, server = only_server()
        os.kill(server["pid"], signal.SIGSTOP)
        try:
            # The window that uses it: the request in flight, then the one that tries to
            # attach again, each end empty instead of waiting for the stopped server.
            for _ in range(2):
                assert await asyncio.wait_for(inline(first, URI, *CURSOR), SETTLE_TIMEOUT) == []
            async with running_server(*flags) as second:
                failed = await wait_for_state(second, "failed")
                assert failed["state"] == "failed"
                await wait_for_status(second, lambda _: bool(second.messages), "a message")
                assert "shared model server" in second.messages[0].message
        finally:
            os.kill(server["pid"], signal.SIGKILL)


def test_a_stopped_start_lock_holder_does_not_block_others(
    tiny_model_dir: Path, runtime: Path
) -> None:
    spec = Settings(model=str(tiny_model_dir), device="cpu", backend="shared").load_spec()
    lock = launcher.socket_path(spec).with_suffix(".lock")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-c",
            "import fcntl, os, signal, sys\n"
            "lock = open(sys.argv[1], 'a+b')\n"
            "fcntl.flock(lock, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGSTOP)\n",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(LoadError, match="another editor window"):
            ensure_server(spec, 0, lock_timeout=1.0)
        assert running_servers() == []
    finally:
        holder.kill()
        holder.wait(SETTLE_TIMEOUT)


# -- 6. an unusable runtime directory falls back, or fails once and lets another backend load ---


@pytest.fixture
def foreign_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory this user may not use: another uid's where the test may chown (as root),
    else one this user cannot write."""
    directory = tmp_path / "foreign"
    directory.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(directory, OTHER_UID, OTHER_UID)
    else:
        directory.chmod(0o500)
    yield directory
    directory.chmod(0o700)


async def test_another_users_runtime_directory_falls_back_to_a_private_one(
    tiny_model_dir: Path, foreign_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short: the socket's path must stay within the 107 bytes a Unix socket may name.
    fallback = Path(tempfile.mkdtemp(prefix="cgtmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(foreign_directory))
    monkeypatch.setenv("TMPDIR", str(fallback))
    server: dict[str, Any] | None = None
    try:
        async with running_server(*shared(tiny_model_dir, "--shared-idle-minutes", "0")) as client:
            await wait_for_state(client, "ready")
            open_document(client, URI, SOURCE)
            assert await inline(client, URI, *CURSOR)
            path = Path((await status(client))["socket"])
            server = server_status(path)
            assert path.parent == fallback / f"codegeex2-lsp-{os.getuid()}"
            assert path.parent.stat().st_mode & 0o777 == 0o700
            assert list(foreign_directory.iterdir()) == []
            said = [m.message for m in client.log_messages if "XDG_RUNTIME_DIR" in m.message]
            assert len(said) == 1 and str(foreign_directory) in said[0]
            assert not client.messages
        assert server is not None
        # No window left and no idle time: it leaves at once.
        wait_for_exit(server["pid"])
    finally:
        if server is not None and pid_alive(server["pid"]):
            os.kill(server["pid"], signal.SIGKILL)
        shutil.rmtree(fallback, ignore_errors=True)


async def test_no_usable_runtime_directory_is_one_message_and_local_still_loads(
    tiny_model_dir: Path, foreign_directory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = tmp_path / "tmp"
    fallback.mkdir()
    taken = fallback / f"codegeex2-lsp-{os.getuid()}"
    taken.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(taken, OTHER_UID, OTHER_UID)
    else:
        taken.chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(foreign_directory))
    monkeypatch.setenv("TMPDIR", str(fallback))
    async with running_server(*shared(tiny_model_dir)) as client:
        await wait_for_state(client, "failed")
        await wait_for_status(client, lambda _: bool(client.messages), "a message")
        (message,) = client.messages
        assert str(taken) in message.message
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"codegeex2": {"backend": "local"}})
        )
        await wait_for_state(client, "ready")
        open_document(client, URI, SOURCE)
        assert await inline(client, URI, *CURSOR)
    assert list(foreign_directory.iterdir()) == []


# -- 7. the API key in the environment does not lock the windows out of their own server -------


async def test_a_key_in_the_environment_does_not_lock_out_the_shared_server(
    tiny_model_dir: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEGEEX2_API_KEY", "k-for-some-other-server")
    async with running_server(*shared(tiny_model_dir)) as client:
        await wait_for_state(client, "ready", "failed")
        open_document(client, URI, SOURCE)
        assert await inline(client, URI, *CURSOR)
        assert not client.messages
        _, server = only_server()
    environment = Path(f"/proc/{server['pid']}/environ").read_bytes().split(b"\0")
    assert not any(entry.startswith(b"CODEGEEX2_API_KEY=") for entry in environment)


# -- 10. SIGTERM removes the server's socket -----------------------------------------------------


def test_sigterm_to_serve_removes_its_socket(tiny_model_dir: Path, runtime: Path) -> None:
    path = runtime / "private" / "served.sock"
    path.parent.mkdir(mode=0o700)
    server = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-m",
            "codegeex2_lsp",
            "serve",
            "--socket",
            str(path),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=runtime,
    )
    try:
        launcher.wait_until_loaded(_wait_for_socket(path, server), lambda message: None)
        server.send_signal(signal.SIGTERM)
        server.wait(SETTLE_TIMEOUT)
    finally:
        server.kill()
        server.wait(SETTLE_TIMEOUT)
    assert not path.exists()


def _wait_for_socket(path: Path, server: subprocess.Popen[bytes]) -> Path:
    """``path`` once the server listens on it; the server must not exit first."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not launcher.listening(path):
        assert server.poll() is None, "the server exited before it listened"
        assert time.monotonic() < deadline, "the server never listened"
        time.sleep(launcher.POLL_SECONDS)
    return path
