"""The ``shared`` backend: every editor window of a user on one model server, started on demand.

The window's process finds the server for its load settings (or starts it, detached), holds an
attachment to it for as long as it runs, so the server knows it has a client, and then talks
to it as the ``openai`` backend talks to any completion server: the same client, over the
server's Unix socket. Requests name their document (this process and the URI), so the server
keeps newest-wins per document and its prefix cache across windows.

A server that dies is started again by the next request after the failure, which is all the
user sees of it: one failed request and one message. Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from codegeex2_lsp.backends.generation import Generation, SamplingParams, StopCheck
from codegeex2_lsp.backends.remote.connect import choose_model, load_tokenizer
from codegeex2_lsp.backends.remote.http import Endpoint, RemoteError, WireClient
from codegeex2_lsp.backends.remote.streaming import RemoteModel
from codegeex2_lsp.backends.shared.launcher import (
    client,
    ensure_server,
    listening,
    wait_until_loaded,
)
from codegeex2_lsp.backends.tokenizer import ChatGLM2Tokenizer
from codegeex2_lsp.settings.fields import LoadSpec

log = logging.getLogger(__name__)

BASE_URL = "http://codegeex2-lsp/v1"
"""The URL over the socket: only its path matters."""

REQUEST_TIMEOUT_SECONDS = 30.0
"""A local server answers at once; a wait this long means it is stuck behind a long request."""


class Attachment:
    """This process's open ``/attach`` request: while it lasts, the server counts us a client."""

    def __init__(self, path: Path, client_id: str) -> None:
        # Bounded: a stopped server takes the connection and never answers. Only the first
        # line is ever read, so the bound does not limit how long the attachment lasts.
        self._http = client(path)
        request = self._http.build_request("GET", "/attach", params={"client": client_id})
        try:
            self._response = self._http.send(request, stream=True)
            # The server's first line says it counted us; reading it makes that certain. The
            # line iterator is kept: dropping it would close the response.
            self._lines = self._response.iter_lines()
            next(self._lines)
        except (httpx.HTTPError, StopIteration) as error:
            self._http.close()
            raise RemoteError(
                "unreachable",
                f"cannot attach to the shared model server at {path}",
                "the server's log beside the socket says why",
            ) from error

    def close(self) -> None:
        self._response.close()
        self._http.close()


class SharedModel(RemoteModel):
    """The remote model on this user's shared server, which it restarts when it died."""

    def __init__(
        self,
        tokenizer: ChatGLM2Tokenizer,
        wire: WireClient,
        path: Path,
        spec: LoadSpec,
        attachment: Attachment,
        *,
        loop: asyncio.AbstractEventLoop,
        client_id: str,
    ) -> None:
        served = choose_model(loop.run_until_complete(wire.models()), "", wire.endpoint.display)
        super().__init__(tokenizer, wire, served, loop=loop, label="shared", identity=client_id)
        self.path = path
        self.spec = spec
        self.client_id = client_id
        self.restarts = 0
        self._attachment: Attachment | None = attachment
        self._suspect = False
        self._restart_failed = False

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        should_stop: StopCheck | None = None,
        cache_key: str = "",
        cache_bytes: int = 0,
    ) -> Generation:
        """As the remote model's, with the server started again when it is gone.

        A server that refuses the connection is gone and nothing was lost: it is started and
        asked again at once. One that broke off an answer (killed, say) fails this request,
        and the next one finds it or starts it again; a failed start waits out the backoff.
        """
        if self._suspect:
            if self._restart_failed:
                self.backoff.check()
            self._reconnect()

        def once() -> Generation:
            return super(SharedModel, self).generate(
                prompt_ids,
                params,
                cancelled=cancelled,
                should_stop=should_stop,
                cache_key=cache_key,
                cache_bytes=cache_bytes,
            )

        try:
            return once()
        except RemoteError as error:
            if error.kind == "unreachable" and not listening(self.path):
                self._reconnect()
                return once()
            if error.kind in ("unreachable", "cut", "timeout"):
                self._suspect = True
                raise RemoteError(
                    error.kind,
                    f"the shared model server stopped answering: {error.message}",
                    "the next request starts it again if it stopped; its log is "
                    f"{self.path.with_suffix('.log')}",
                    error.status,
                ) from error
            raise

    def _reconnect(self) -> None:
        """Attach to the server again, starting it when none runs, and wait until it is ready."""
        self._detach()
        try:
            _, started = ensure_server(self.spec, self.spec.shared_idle_minutes)
            if started:
                log.info("the shared model server had stopped: started it again")
            self._attachment = Attachment(self.path, self.client_id)
            wait_until_loaded(self.path, lambda message: log.info("%s", message))
        except Exception as error:
            self._restart_failed = True
            failure = (
                error
                if isinstance(error, RemoteError)
                else RemoteError(
                    "unreachable",
                    f"the shared model server could not be started again: {error}",
                    "run `codegeex2-lsp serve` with the same settings to see why",
                )
            )
            self.backoff.failed(failure)
            raise failure from error
        self._suspect = self._restart_failed = False
        self.restarts += int(started)
        self.backoff.succeeded()

    def _detach(self) -> None:
        if self._attachment is not None:
            self._attachment.close()
            self._attachment = None

    def close(self) -> None:
        self._detach()
        super().close()

    def status(self) -> dict[str, Any]:
        return {**super().status(), "socket": str(self.path), "restarts": self.restarts}


def load_shared(
    spec: LoadSpec, progress: Callable[[str], None] | None = None
) -> tuple[SharedModel, str]:
    """Attach to the user's server for ``spec``, starting it when none runs, and wait for it.

    Raises :class:`~codegeex2_lsp.errors.LoadError` with the server's own message when its
    model cannot be loaded.
    """
    report = progress or (lambda message: None)
    tokenizer = load_tokenizer(spec.model, progress)
    report("Finding the shared model server")
    path, started = ensure_server(spec, spec.shared_idle_minutes)
    client_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    attachment = Attachment(path, client_id)
    loop = asyncio.new_event_loop()
    wire = WireClient(Endpoint(BASE_URL, socket=str(path), timeout=REQUEST_TIMEOUT_SECONDS))
    try:
        status = wait_until_loaded(path, report)
        model = SharedModel(tokenizer, wire, path, spec, attachment, loop=loop, client_id=client_id)
    except BaseException:
        attachment.close()
        loop.run_until_complete(wire.aclose())
        loop.close()
        raise
    how = "started" if started else "already running"
    return model, f"{status['progress']} (shared server, pid {status['pid']}, {how})"
