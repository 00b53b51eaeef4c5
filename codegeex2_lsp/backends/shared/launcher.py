"""Finding, starting and listing the per-user shared model servers.

One server runs per distinct load spec (model, device, dtype, quantize, numGpus), on a Unix
socket named after the spec in a directory only the user can enter: ``$XDG_RUNTIME_DIR`` where
the system provides it, else a 0700 directory of the user's own in the temp directory. A lock
file beside the socket makes starting exclusive, so editors starting together start one
server; a socket nobody listens on (its server died) is found stale and replaced.

It imports neither torch nor the server: the editor's process uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from codegeex2_lsp.errors import LoadError

SPEC_FIELDS = ("model", "device", "dtype", "quantize", "num_gpus")
"""What tells two servers apart: a window with another of these gets a server of its own."""

POLL_SECONDS = 0.05
"""How often a starting server is asked how far it got."""

START_TIMEOUT_SECONDS = 60.0
"""How long a new server may take to listen (imports, before the model loads)."""

LOG_TAIL_CHARS = 2000


def runtime_dir() -> Path:
    """The user's private directory for sockets, created when missing and checked."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        directory = Path(base) / "codegeex2-lsp"
    else:
        directory = Path(tempfile.gettempdir()) / f"codegeex2-lsp-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise LoadError(
            f"{directory} is not a private directory of this user",
            "remove it (another user may have made it) or set XDG_RUNTIME_DIR",
        )
    return directory


def spec_values(spec: Any) -> dict[str, Any]:
    """The fields of ``spec`` that name its server; a local model directory by its full path."""
    values = {name: getattr(spec, name) for name in SPEC_FIELDS}
    model = Path(values["model"]).expanduser()
    if model.is_dir():
        values["model"] = str(model.resolve())
    return values


def socket_path(spec: Any, directory: Path | None = None) -> Path:
    """Where the server for ``spec`` listens (short enough for a socket's 107-byte limit)."""
    digest = hashlib.sha256(json.dumps(spec_values(spec), sort_keys=True).encode()).hexdigest()
    return (directory or runtime_dir()) / f"{digest[:16]}.sock"


def listening(path: Path) -> bool:
    """Whether a server accepts connections on ``path`` now."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def server_command(spec: Any, path: Path, idle_minutes: float) -> list[str]:
    """The command line of a shared server for ``spec`` on ``path``."""
    values = spec_values(spec)
    return [
        sys.executable,
        "-m",
        "codegeex2_lsp",
        "serve",
        "--socket",
        str(path),
        "--idle-minutes",
        f"{idle_minutes:g}",
        "--model",
        values["model"],
        "--device",
        values["device"],
        "--dtype",
        values["dtype"],
        "--quantize",
        values["quantize"],
        "--num-gpus",
        str(values["num_gpus"]),
    ]


def ensure_server(spec: Any, idle_minutes: float) -> tuple[Path, bool]:
    """The socket of the running server for ``spec``, started first when none runs.

    Returns whether this call started it. Under the lock, a socket that does not answer is
    stale and removed; the new server is started detached (in its own session, outliving this
    process) and waited for until it listens, or until it exits, with the end of its log.
    """
    path = socket_path(spec)
    if listening(path):
        return path, False
    with _locked(path.with_suffix(".lock")):
        if listening(path):
            return path, False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log_file = path.with_suffix(".log")
        with contextlib.suppress(FileNotFoundError):
            log_file.unlink()
        # A short-lived parent: the server is nobody's child here, so it cannot be left a
        # zombie of this process, and a signal to the editor's process group spares it.
        starter = subprocess.run(
            [
                sys.executable,
                "-c",
                _DETACH,
                str(log_file),
                *server_command(spec, path, idle_minutes),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        try:
            pid = int(starter.stdout)
        except ValueError:
            raise LoadError("cannot start the shared model server", "the log has details") from None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not listening(path):
            if not pid_alive(pid) or time.monotonic() > deadline:
                raise LoadError(
                    "the shared model server did not start: " + log_tail(log_file),
                    "run `codegeex2-lsp serve` with the same settings to see why",
                )
            time.sleep(POLL_SECONDS)
    return path, True


_DETACH = """\
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    process = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               start_new_session=True)
print(process.pid)
"""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def log_tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "it left no log"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-LOG_TAIL_CHARS:] if lines else "it left no log"


def client(path: Path, timeout: float | None = 5.0) -> httpx.Client:
    """A plain HTTP client for the server on ``path`` (status, attach)."""
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(path)),
        base_url="http://codegeex2-lsp",
        timeout=timeout,
    )


def server_status(path: Path) -> dict[str, Any] | None:
    """The server's ``/status``, or None when nobody answers on ``path``."""
    try:
        with client(path) as http:
            response = http.get("/status")
            response.raise_for_status()
            return dict(response.json())
    except (httpx.HTTPError, ValueError):
        return None


def wait_until_loaded(path: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Follow the server's loading, reporting its steps; its status once ready.

    Raises :class:`LoadError` with the server's own message when the load failed, or when
    the server goes away while loading.
    """
    reported = ""
    while True:
        status = server_status(path)
        if status is None:
            raise LoadError(
                "the shared model server stopped while loading: "
                + log_tail(path.with_suffix(".log")),
                "run `codegeex2-lsp serve` with the same settings to see why",
            )
        if status["state"] == "ready":
            return status
        if status["state"] == "failed":
            message, hint = status["failure"]
            raise LoadError(message, hint)
        if status["progress"] != reported:
            reported = status["progress"]
            progress(reported)
        time.sleep(POLL_SECONDS)


def running_servers() -> list[tuple[Path, dict[str, Any]]]:
    """Every shared server of this user that answers, with its status."""
    try:
        directory = runtime_dir()
    except (LoadError, OSError):
        return []
    found = []
    for path in sorted(directory.glob("*.sock")):
        status = server_status(path)
        if status is not None:
            found.append((path, status))
    return found


def describe(path: Path, status: dict[str, Any]) -> str:
    """One line of ``doctor``: which model, its clients and its memory, and how to stop it."""
    spec = status.get("spec", {})
    rss = status.get("memory", {}).get("rss", 0)
    return (
        f"{status.get('model')} ({spec.get('device')}, {spec.get('dtype')}, "
        f"quantize {spec.get('quantize')}): {status.get('state')}, "
        f"{status.get('clients')} client(s), {rss / 2**30:.2f} GiB resident, "
        f"pid {status.get('pid')} on {path}"
    )
