"""Where the server listens, and who may talk to it.

On a Unix socket (the shared mode) the socket lives in a directory only its user can enter, is
itself readable and writable only by that user, and every connection's peer is checked with
``SO_PEERCRED``: another user's process is cut off before it can send a byte. Over TCP the
server binds loopback unless told otherwise, and any other address needs an API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from codegeex2_lsp.backends.shared.app import PER_USER, Policy, create_app
from codegeex2_lsp.backends.shared.launcher import listening
from codegeex2_lsp.backends.shared.service import ModelService
from codegeex2_lsp.settings.fields import Settings

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")
"""``struct ucred``: pid, uid, gid."""


class ListenError(Exception):
    """The server cannot listen as asked; the message says why."""


def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a Unix socket, where the system tells it."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(raw)[1])


class SameUserH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that hangs up on Unix-socket peers of another user."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The event loop gives stream protocols a stream transport; uvicorn's signature says so.
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return
        uid = peer_uid(sock)
        if uid is not None and uid != os.getuid():
            log.warning("refused a connection from uid %d", uid)
            transport.abort()


def check_private_directory(directory: Path) -> None:
    """Refuse a socket directory that another user could enter or that is not ours."""
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ListenError(f"{directory} is not a directory of this user")
    if info.st_mode & 0o077:
        raise ListenError(f"{directory} is open to other users (mode {info.st_mode & 0o777:o})")


def unix_socket(path: Path) -> socket.socket:
    """A listening socket at ``path``, mode 0600, in a directory checked to be private."""
    check_private_directory(path.parent)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            if listening(path):
                raise ListenError(f"a server already listens on {path}")
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as error:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {error}") from error
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def tcp_socket(host: str, port: int, api_key: str | None) -> socket.socket:
    """A listening TCP socket; an address beyond this machine needs ``api_key``."""
    if not _loopback(host) and not api_key:
        raise ListenError(
            f"serving on {host} reaches other machines: set CODEGEEX2_API_KEY first "
            "(clients send it too), or bind 127.0.0.1"
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        raise ListenError(f"cannot listen on {host}:{port}: {error}") from error
    sock.listen(64)
    return sock


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ModelServer(uvicorn.Server):
    """uvicorn's server, with the model service, that lets attached clients go when stopped."""

    def __init__(
        self, config: uvicorn.Config, closing: asyncio.Event, service: ModelService
    ) -> None:
        super().__init__(config)
        self.closing = closing
        self.service = service
        self.on_shutdown: Callable[[], None] = lambda: None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, then ``on_shutdown``: after a signal uvicorn raises it again once
        serving ends, which ends the process before any code after ``run`` could clean up."""
        await super().shutdown(sockets)
        self.on_shutdown()

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.closing.set()
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        self.closing.set()
        self.should_exit = True


def build_server(
    settings: Settings,
    idle_seconds: float | None,
    api_key: str | None,
    policy: Policy = PER_USER,
) -> ModelServer:
    """The server of ``settings``' model, to run on a socket from :func:`unix_socket` or
    :func:`tcp_socket`; its model loads once it runs."""
    closing = asyncio.Event()
    holder: list[ModelServer] = []
    service = ModelService(settings, idle_seconds, lambda: holder[0].stop())
    config = uvicorn.Config(
        create_app(service, api_key, closing, policy),
        http=SameUserH11,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    holder.append(ModelServer(config, closing, service))
    return holder[0]


def serve(
    settings: Settings,
    sock: socket.socket,
    idle_seconds: float | None,
    api_key: str | None,
    policy: Policy = PER_USER,
) -> None:
    """Load the model and serve it on ``sock`` until a signal or the idle timer ends it."""
    server = build_server(settings, idle_seconds, api_key, policy)
    where = sock.getsockname()
    identity = os.stat(where).st_ino if sock.family == socket.AF_UNIX else None

    def remove_socket() -> None:
        # Only our own socket file: a newer server may have replaced a stale one.
        if identity is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(where).st_ino == identity:
                    os.unlink(where)

    server.on_shutdown = remove_socket
    log.info("serving %s on %s", settings.model, where)
    try:
        server.run(sockets=[sock])
    finally:
        remove_socket()
