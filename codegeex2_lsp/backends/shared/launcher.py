"""Finding, starting and listing the per-user shared model servers.

One server runs per distinct load spec (model, device, dtype, quantize, kernels, numGpus), on a
Unix socket named after the spec in a directory only the user can enter: ``$XDG_RUNTIME_DIR`` where
the system provides one this user owns and can write, else a 0700 directory of the user's own
in the temp directory. A lock file beside the socket makes starting exclusive, so editors
starting together start one server; a socket nobody listens on (its server died) is found
stale and replaced.

The server runs isolated from the editor's working directory, which is often a repository
nobody vetted: ``python -I`` (no working directory or ``PYTHON*`` variables on its path), in
the socket's directory, without the API key (its socket is private; it needs none). Every
wait on it is bounded, so a server that hangs (stopped, say) costs a window a message, never
the window.

It imports neither torch nor the server: the editor's process uses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import site
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
from codegeex2_lsp.settings.fields import API_KEY_VARIABLE, LoadSpec
from codegeex2_lsp.settings.sources import to_arguments

log = logging.getLogger(__name__)

SPEC_FIELDS = ("model", "device", "dtype", "quantize", "kernels", "num_gpus")
"""What tells two servers apart: a window with another of these gets a server of its own."""

POLL_SECONDS = 0.05
"""How often a starting server is asked how far it got."""

START_TIMEOUT_SECONDS = 60.0
"""How long a new server may take to listen (imports, before the model loads)."""

LOCK_TIMEOUT_SECONDS = START_TIMEOUT_SECONDS + 30.0
"""How long to wait for another window that is starting the server: longer than any start
may take, so only a holder that is stuck (stopped, say) makes a window give up."""

STATUS_TIMEOUT_SECONDS = 5.0
"""How long a server may take to answer ``/status``: it answers from its event loop at once."""

LOAD_TIMEOUT_SECONDS = 3600.0
"""How long a server's model may take to load while its status still answers (a download)."""

LOG_TAIL_CHARS = 2000

ENVIRONMENT_DROPPED = (API_KEY_VARIABLE,)
"""Variables the server is started without: its socket admits only this user, so a key
inherited from the editor would only make it refuse the windows, which send none."""

_warned_runtime: set[str] = set()


def runtime_dir() -> Path:
    """The user's private directory for sockets, created when missing and checked.

    ``$XDG_RUNTIME_DIR`` is taken only when it is a directory of this user that it can write:
    one inherited through ``su`` or ``sudo`` belongs to another user, and a socket there would
    either fail or sit in someone else's directory. Then the temp directory serves, and the log
    says why once.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        problem = _unusable(Path(base))
        if problem is None:
            try:
                return _private_directory(Path(base) / "codegeex2-lsp")
            except (LoadError, OSError) as error:
                problem = str(error)
        if base not in _warned_runtime:
            _warned_runtime.add(base)
            log.warning(
                "XDG_RUNTIME_DIR (%s) cannot hold the shared server's socket: %s; using %s",
                base,
                problem,
                _fallback_directory(),
            )
    return _private_directory(_fallback_directory())


def _fallback_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"codegeex2-lsp-{os.getuid()}"


def _unusable(base: Path) -> str | None:
    """Why ``base`` cannot be this user's runtime directory, or None when it can."""
    try:
        info = base.stat()
    except OSError as error:
        return error.strerror or str(error)
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if info.st_uid != os.getuid():
        return f"it belongs to uid {info.st_uid}, not to this user (uid {os.getuid()})"
    if not os.access(base, os.W_OK | os.X_OK):
        return "this user cannot write it"
    return None


def _private_directory(directory: Path) -> Path:
    """``directory``, created 0700 when missing; refused unless it is this user's alone."""
    try:
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        info = directory.lstat()
    except OSError as error:
        raise LoadError(
            f"cannot make the shared server's directory {directory}: {error.strerror or error}",
            "set XDG_RUNTIME_DIR or TMPDIR to a directory you can write",
        ) from error
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
    """Whether a server accepts connections on ``path`` now.

    A stopped server's backlog takes connections until it is full; after that a connect would
    wait for it forever, so the probe's wait is bounded.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(STATUS_TIMEOUT_SECONDS)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@contextlib.contextmanager
def _locked(path: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the start lock at ``path``; a holder that keeps it past ``timeout`` is stuck.

    The lock is polled, not waited on, so the wait has a bound; a stuck holder (a stopped
    window) costs the others a clear error, and dies with the lock when it is killed.
    """
    with open(path, "a+b") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LoadError(
                        "another editor window has been starting the shared model server "
                        f"for over {timeout:.0f} s and does not finish",
                        f"a stopped or hung process holds {path}; end it, or set "
                        'backend to "local"',
                    ) from None
                time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def python_flags() -> list[str]:
    """How a spawned Python of this package runs isolated from the working directory.

    ``-I`` leaves the working directory, ``PYTHON*`` variables and the user's site-packages
    off ``sys.path``. Where this package itself lives in the user's site-packages (``pip
    install --user``), ``-I`` would hide it, so only the environment and the working directory
    are left off: the user's own directory is no repository's.
    """
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else ""
    here = Path(__file__).resolve()
    if user_site and here.is_relative_to(Path(user_site).resolve()):
        return ["-E", "-P"] if sys.version_info >= (3, 11) else ["-E"]
    return ["-I"]


def child_environment() -> dict[str, str]:
    """The server's environment: the editor's, without what :data:`ENVIRONMENT_DROPPED` names."""
    return {name: value for name, value in os.environ.items() if name not in ENVIRONMENT_DROPPED}


def server_command(spec: LoadSpec, path: Path, idle_minutes: float) -> list[str]:
    """The command line of a shared server for ``spec`` on ``path``."""
    named = dataclasses.replace(spec, model=spec_values(spec)["model"])
    return [
        sys.executable,
        *python_flags(),
        "-m",
        "codegeex2_lsp",
        "serve",
        "--socket",
        str(path),
        "--idle-minutes",
        f"{idle_minutes:g}",
        *to_arguments(named, SPEC_FIELDS),
    ]


def ensure_server(
    spec: Any, idle_minutes: float, lock_timeout: float = LOCK_TIMEOUT_SECONDS
) -> tuple[Path, bool]:
    """The socket of the running server for ``spec``, started first when none runs.

    Returns whether this call started it. Under the lock, a socket that does not answer is
    stale and removed; the new server is started detached (in its own session, outliving this
    process) and waited for until it listens, or until it exits, with the end of its log. A
    lock held longer than ``lock_timeout`` by another window is a :class:`LoadError`.
    """
    path = socket_path(spec)
    if listening(path):
        return path, False
    with _locked(path.with_suffix(".lock"), lock_timeout):
        if listening(path):
            return path, False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log_file = path.with_suffix(".log")
        with contextlib.suppress(FileNotFoundError):
            log_file.unlink()
        # A short-lived parent: the server is nobody's child here, so it cannot be left a
        # zombie of this process, and a signal to the editor's process group spares it.
        # The server's working directory is the socket's: the editor's may be any repository.
        # One deadline covers the starter and the wait to listen, so the lock is held for at
        # most START_TIMEOUT_SECONDS (plus the probes' bounds), well within LOCK_TIMEOUT_SECONDS.
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            starter = subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    _DETACH,
                    str(log_file),
                    *server_command(spec, path, idle_minutes),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=path.parent,
                env=child_environment(),
                check=False,
                timeout=START_TIMEOUT_SECONDS,
            )
            pid = int(starter.stdout)
        except (ValueError, OSError, subprocess.SubprocessError):
            raise LoadError("cannot start the shared model server", "the log has details") from None
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


def client(path: Path, timeout: float | httpx.Timeout = STATUS_TIMEOUT_SECONDS) -> httpx.Client:
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


def wait_until_loaded(
    path: Path, progress: Callable[[str], None], timeout: float = LOAD_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """Follow the server's loading, reporting its steps; its status once ready.

    Raises :class:`LoadError` with the server's own message when the load failed, when the
    server goes away or stops answering while loading, or when it is not ready in ``timeout``.
    """
    reported = ""
    deadline = time.monotonic() + timeout
    while True:
        status = server_status(path)
        if status is None:
            raise LoadError(
                "the shared model server stopped answering while loading: "
                + log_tail(path.with_suffix(".log")),
                "run `codegeex2-lsp serve` with the same settings to see why",
            )
        if time.monotonic() > deadline:
            raise LoadError(
                f"the shared model server was not ready after {timeout:.0f} s",
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
