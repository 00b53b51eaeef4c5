"""A loopback HTTP server that answers completion requests from a script, for the client's tests.

The real engine (vLLM, in test_vllm.py) proves the main path; this server produces what a real
engine cannot be made to do on cue: a stream cut in the middle, a 500, a refused token-id
prompt, an answer that never comes. It records every request it received, and whether the
client hung up on a stream before it was finished.
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_ENDLESS = 6000
"""How often an endless reply repeats before it gives up: far past any client's bound."""


@dataclass
class Reply:
    """One scripted answer to ``POST /completions``.

    ``events`` are sent as SSE ``data:`` lines, then ``[DONE]`` unless ``cut``. With ``hold``
    the server stops after ``hold_after`` events until ``hold`` is set, then checks whether
    the client is still there. ``raw`` is sent as it is, after the events: what no JSON
    encoder makes. ``repeat`` sends the events again and again, and ``keepalive`` only
    comment lines after them, until the client hangs up (or a bound far past any test's).
    """

    status: int = 200
    events: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] | None = None
    cut: bool = False
    hold: threading.Event | None = None
    hold_after: int = 0
    raw: bytes = b""
    repeat: bool = False
    keepalive: bool = False


def tokens(ids: list[int], finish: str | None = "length") -> list[dict[str, Any]]:
    """Events streaming ``ids`` one per event, as vLLM does with ``return_token_ids``."""
    events = [{"choices": [{"index": 0, "text": "", "token_ids": [i]}]} for i in ids]
    if events and finish is not None:
        events[-1]["choices"][0]["finish_reason"] = finish
    events.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(ids)}})
    return events


def error_body(message: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": "Error", "param": None, "code": code}}


class ScriptedServer:
    """Serves ``GET /v1/models`` from ``models`` and each completion from the next reply."""

    def __init__(self, models: list[dict[str, Any]] | None = None) -> None:
        self.models = models if models is not None else [{"id": "tiny", "max_model_len": 2048}]
        self.replies: deque[Reply] = deque()
        self.default = Reply(500)
        """The answer once the scripted replies are used up."""
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.hung_up = threading.Event()
        self.url = ""

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def completions(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("_path", "").endswith("/completions")]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def address_string(self) -> str:
                return "local"

            def do_GET(self) -> None:
                server.headers.append(dict(self.headers))
                server.requests.append({"_path": self.path})
                if self.path.endswith("/models"):
                    self._json(200, {"object": "list", "data": server.models})
                else:
                    self._json(404, error_body("no route", 404))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                server.headers.append(dict(self.headers))
                server.requests.append({**body, "_path": self.path})
                reply = server.replies.popleft() if server.replies else server.default
                if reply.status != 200 or reply.body is not None:
                    self._json(reply.status, reply.body or error_body("scripted failure", 500))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for index, event in enumerate(reply.events):
                        if reply.hold is not None and index == reply.hold_after:
                            self._hold(reply.hold)
                        self._send(f"data: {json.dumps(event)}\n\n")
                    if reply.hold is not None and reply.hold_after >= len(reply.events):
                        self._hold(reply.hold)
                    if reply.raw:
                        self.wfile.write(reply.raw)
                        self.wfile.flush()
                    for _ in range(_ENDLESS if reply.repeat else 0):
                        for event in reply.events:
                            self._send(f"data: {json.dumps(event)}\n\n")
                    for _ in range(_ENDLESS if reply.keepalive else 0):
                        self._send(": ping\n\n")
                        time.sleep(0.005)
                    if not reply.cut:
                        self._send("data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    server.hung_up.set()

            def _hold(self, release: threading.Event) -> None:
                release.wait(timeout=30)
                # A comment line: harmless to a client still reading, an error if it left.
                for _ in range(50):
                    self._send(": ping\n\n")

            def _send(self, text: str) -> None:
                self.wfile.write(text.encode())
                self.wfile.flush()

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    @contextmanager
    def running(self, socket_path: str | None = None, port: int = 0) -> Iterator[ScriptedServer]:
        """Serve on loopback (on ``port``, or a free one), or on the Unix socket ``socket_path``."""
        httpd: socketserver.BaseServer
        if socket_path is not None:

            class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
                daemon_threads = True

            httpd = UnixServer(socket_path, self._handler())
            self.url = "http://local/v1"
        else:
            httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler())
            httpd.daemon_threads = True
            self.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()
            if socket_path is not None and os.path.exists(socket_path):
                os.unlink(socket_path)
