"""A raw JSON-RPC client for the server over stdio or TCP: it can send what no well-behaved client
would (broken JSON, invalid UTF-8, wrong types), which pytest-lsp's typed client refuses to, and
several messages in one write."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

TIMEOUT = 300.0


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = str(error.get("message"))


class RawClient:
    """Frames and sends messages, matches responses to requests, answers the server's requests."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None,
    ) -> None:
        """Talk to ``process`` over its stdio, or over ``stream`` (a connection to it)."""
        self.process = process
        if stream is None:
            assert process.stdout is not None and process.stdin is not None
            self._incoming, self._outgoing = process.stdout, process.stdin
        else:
            self._incoming, self._outgoing = stream
        self.pending: dict[int | str, asyncio.Future[Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.responses: dict[int | str, dict[str, Any]] = {}
        self.unexpected: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, *args: str, stderr: IO[bytes] | None = None) -> RawClient:
        """Start the server; its torch uses one thread.

        On a machine busier than its cores, torch's worker threads spin waiting for each other:
        a tiny model's answer then takes hundreds of milliseconds instead of a few.
        """
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "codegeex2_lsp",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr if stderr is not None else asyncio.subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        return cls(process)

    @classmethod
    async def connect(cls, process: asyncio.subprocess.Process, port: int) -> RawClient:
        """Connect to ``process`` serving TCP on ``port``, once it listens."""
        for _ in range(600):
            try:
                stream = await asyncio.open_connection("127.0.0.1", port)
                return cls(process, stream)
            except OSError:
                assert process.returncode is None, "the server exited"
                await asyncio.sleep(0.1)
        raise AssertionError(f"nothing listens on port {port}")

    @staticmethod
    def frame(message: Any) -> bytes:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return b"Content-Length: %d\r\n\r\n" % len(body) + body

    def send_bytes(self, body: bytes) -> None:
        self._outgoing.write(self.frame(body))

    def send(self, message: Any) -> None:
        self.send_bytes(json.dumps(message).encode())

    def send_together(self, *messages: Any) -> None:
        """Several messages in one write, so they reach the server in one piece."""
        self._outgoing.write(b"".join(self.frame(message) for message in messages))

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def expect(self, msg_id: int | str) -> None:
        """Wait for an answer to ``msg_id``, a request sent some other way."""
        self.pending[msg_id] = asyncio.get_running_loop().create_future()

    def request_later(self, method: str, params: Any = None, msg_id: Any = None) -> Any:
        """Send a request; its answer (result or error) lands in ``responses``."""
        msg_id = next(self._ids) if msg_id is None else msg_id
        self.expect(msg_id)
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    async def answer(self, msg_id: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The whole response message to request ``msg_id``."""
        return await asyncio.wait_for(asyncio.shield(self.pending[msg_id]), timeout)

    async def request(self, method: str, params: Any = None) -> Any:
        response = await self.answer(self.request_later(method, params))
        if "error" in response:
            raise RpcError(response["error"])
        return response.get("result")

    async def initialize(self, capabilities: dict[str, Any] | None = None, **params: Any) -> Any:
        result = await self.request(
            "initialize", {"processId": None, "capabilities": capabilities or {}, **params}
        )
        self.notify("initialized", {})
        return result

    async def drain(self) -> None:
        await self._outgoing.drain()

    def close_stdin(self) -> None:
        self._outgoing.close()

    async def wait(self, timeout: float = TIMEOUT) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()

    def shown(self) -> list[str]:
        """Messages shown to the user (``window/showMessage``), in order."""
        return [
            n["params"]["message"]
            for n in self.notifications
            if n["method"] == "window/showMessage"
        ]

    async def _read(self) -> None:
        stdout = self._incoming
        while True:
            length = None
            while True:
                header = await stdout.readline()
                if not header:
                    return
                if header == b"\r\n":
                    break
                name, _, value = header.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert length is not None, "a message without Content-Length"
            message = json.loads(await stdout.readexactly(length))
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" in message:
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
        elif "method" in message:
            self.notifications.append(message)
        else:
            future = self.pending.get(message.get("id"))
            if future is None or future.done():
                self.unexpected.append(message)
            else:
                self.responses[message["id"]] = message
                future.set_result(message)


def stderr_file(directory: Path) -> IO[bytes]:
    """A file for the server's stderr: a pipe nobody reads would fill and stall the server."""
    return (directory / "stderr.log").open("wb")
