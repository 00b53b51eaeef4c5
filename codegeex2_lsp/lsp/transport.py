"""The two pieces of JSON-RPC transport the server owns instead of reaching into pygls.

pygls 2.x has no public way to answer a request from its raw message (its ``_send_response``
is private), and its ``start_tcp`` cannot be given a reader of our own, which serving requests
in turn needs (:class:`InTurn`); overriding it meant setting its private ``_stop_event`` and
``_server``. Both are written here on pygls's public surface only: a protocol's ``writer`` (set
by ``set_writer``), ``pygls.io_.run_async`` for the message loop and
``LanguageServer.shutdown`` to stop. ``tests/test_transport.py`` pins that surface, so a pygls
release that changes it fails there, by name, instead of breaking the server silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from pygls.io_ import run_async
from pygls.protocol import JsonRPCProtocol

log = logging.getLogger(__name__)

ErrorHandler = Callable[[Exception, Any], Any]
"""What pygls's message loop calls with an error it met outside any handler."""


def frame(message: dict[str, Any]) -> bytes:
    """``message`` as one LSP base-protocol message: a Content-Length header, then JSON.

    The length counts bytes; JSON escapes every non-ASCII character, so there is one per char.
    """
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def send_error(protocol: JsonRPCProtocol, msg_id: int | str, code: int, message: str) -> None:
    """Answer request ``msg_id`` with a JSON-RPC error, through the protocol's writer.

    The writers this server uses (stdout, a TCP stream) write at once; none is awaitable.
    """
    writer = protocol.writer
    if writer is None:
        log.error("cannot answer request %r: no transport", msg_id)
        return
    error = {"code": code, "message": message}
    writer.write(frame({"jsonrpc": "2.0", "id": msg_id, "error": error}))


class InTurn:
    """A TCP stream that lets the event loop turn once before each line it returns.

    From a socket, a burst of messages sits in one buffer and pygls would handle them all in
    one go: a request's handler is only scheduled, so a ``didChange`` read right behind it
    would be applied before the request looked at the document, and it would be answered
    for text at a position the editor never asked about.
    """

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream

    async def readline(self) -> bytes:
        line = await self._stream.readline()
        await asyncio.sleep(0)
        return line

    async def readexactly(self, n: int) -> bytes:
        return await self._stream.readexactly(n)


class TcpListener:
    """Serves ``protocol`` over TCP, one client at a time, reading its messages in turn.

    ``on_disconnect`` runs when a client's stream ends (the server shuts down then, as
    pygls's own TCP server does); :meth:`stop` ends :meth:`serve` from any thread.
    """

    def __init__(
        self,
        protocol: JsonRPCProtocol,
        error_handler: ErrorHandler,
        on_disconnect: Callable[[], None],
    ) -> None:
        self._protocol = protocol
        self._error_handler = error_handler
        self._on_disconnect = on_disconnect
        self._stopping = threading.Event()
        self._listener: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def serve(self, host: str, port: int, ready: Callable[[int], None] | None = None) -> None:
        """Listen on ``host:port`` until stopped; ``ready`` hears the port once bound."""
        try:
            asyncio.run(self._listen(host, port, ready))
        except asyncio.CancelledError:
            log.debug("the TCP server was cancelled")

    def stop(self) -> None:
        self._stopping.set()
        loop, server = self._loop, self._listener
        if loop is not None and server is not None and not loop.is_closed():
            loop.call_soon_threadsafe(server.close)

    async def _listen(self, host: str, port: int, ready: Callable[[int], None] | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = await asyncio.start_server(self._connection, host, port)
        if ready is not None:
            ready(int(self._listener.sockets[0].getsockname()[1]))
        if self._stopping.is_set():
            return
        async with self._listener:
            try:
                await self._listener.serve_forever()
            except asyncio.CancelledError:
                log.debug("the TCP listener closed")

    async def _connection(self, stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._protocol.set_writer(writer)
        await run_async(
            stop_event=self._stopping,
            reader=InTurn(stream),
            protocol=self._protocol,
            logger=log,
            error_handler=self._error_handler,
        )
        self._on_disconnect()
