"""The language server: LSP in, suggestions out. It knows LSP and nothing of any backend.

Handlers are thin: they snapshot the document, build an immutable request on the event
loop, and hand it to the scheduler (``scheduler.py``), which decides what reaches the model
on the engine's thread. A request the client cancelled is answered with RequestCancelled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, ClassVar

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.uris import to_fs_path

from codegeex2_lsp import __version__
from codegeex2_lsp.backends.worker import Engine, LoadListener
from codegeex2_lsp.completion.acceptance import Acceptance, StatsStore
from codegeex2_lsp.completion.gate import Gate, is_excluded
from codegeex2_lsp.completion.languages import canonical_language_id, tag_line
from codegeex2_lsp.completion.pipeline import (
    CompletionRequest,
    ContextSource,
    PrefillRequest,
    prepare,
    prepare_prefill,
)
from codegeex2_lsp.completion.prompt import Context, LineTokenCache
from codegeex2_lsp.completion.scheduler import Scheduler
from codegeex2_lsp.context.index import Workspace
from codegeex2_lsp.context.select import ContextRequest, ContextSelector, OpenDocument
from codegeex2_lsp.context.watch import WATCHERS
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.lsp.protocol import SafeLanguageServer
from codegeex2_lsp.lsp.text import LspText
from codegeex2_lsp.settings.checks import plain_http_beyond_loopback
from codegeex2_lsp.settings.fields import API_KEY_VARIABLE, SECTION, START_ONLY, LoadSpec, Settings
from codegeex2_lsp.settings.sources import Update, apply_updates, section_from_configuration

log = logging.getLogger(__name__)

STATUS_COMMAND = "codegeex2.status"
"""``workspace/executeCommand`` that reports the model's state and the work done so far."""

TOGGLE_COMMAND = "codegeex2.toggle"
"""Turns suggestions off or on: everywhere, or for ``{"languageId": ...}``."""

ACCEPT_COMMAND = "codegeex2.accept"
"""Run by the editor with a suggestion's id when the user takes the suggestion."""

STATS_WRITE_DELAY_S = 5.0
"""Counts are written at most this often, off the event loop, and at exit."""


class CodeGeeX2Server(SafeLanguageServer):
    """The server object: settings, the engine, and per-document request state."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(
            "codegeex2-lsp",
            __version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.settings = settings or Settings()
        self.engine = Engine()
        self.scheduler = Scheduler(self.engine)
        self.project = Workspace(excluded=self.excluded)
        self.selector = ContextSelector(self.project.index)
        self.workspace_roots: list[Path] = []
        self._line_cache: tuple[object, LineTokenCache] | None = None
        self._progress_token: str | None = None
        self._deferred_messages: list[tuple[types.MessageType, str, str | None]] = []
        self._outage: str | None = None
        self._outages = 0
        self.initialized = False
        self._tasks: set[asyncio.Future[None]] = set()
        self.client_log = ClientLogHandler(self)
        logging.getLogger("codegeex2_lsp").addHandler(self.client_log)
        # After the log handler, so the client hears about unknown languages or a bad file.
        self.gate = Gate()
        self.gate.settings_changed(Settings(), self.settings)
        self.acceptance = Acceptance(StatsStore(), changed=self._stats_changed)
        self._stats_write: asyncio.TimerHandle | None = None

    # -- settings -----------------------------------------------------------------------------

    def apply_settings(self, raw: Any, source: str, fixed: tuple[str, ...] = ()) -> None:
        """Apply one source of settings; report problems; reload the model if needed.

        ``fixed`` names the fields this source may not change (see ``START_ONLY``).
        """
        update: Update = apply_updates(self.settings, raw, fixed=fixed)
        for warning in update.warnings:
            log.warning("%s: %s", source, warning)
        for error in update.errors:
            log.error("%s: %s", source, error)
            message = f"CodeGeeX2 setting ignored: {error}"
            self.notify_user(types.MessageType.Error, message, problem=error.partition(":")[0])
        reload = update.settings.load_spec() != self.settings.load_spec()
        if update.settings != self.settings:
            self.scheduler.forget_shown()
        self.gate.settings_changed(self.settings, update.settings)
        previous, self.settings = self.settings, update.settings
        self.engine.configure_decode(self.settings.compile, self.settings.max_context_tokens)
        if self.initialized:
            self.sync_context(rescan=update.settings.exclude != previous.exclude)
        if reload and self.initialized:
            self.start_loading()

    def notify_user(
        self, kind: types.MessageType, message: str, problem: str | None = None
    ) -> None:
        """``window/showMessage`` once per problem, held back until the client is initialized."""
        if not self.initialized:
            self._deferred_messages.append((kind, message, problem))
            return
        self.show_once(kind, message, problem)

    def on_initialized(self) -> None:
        self.initialized = True
        self.client_log.start(asyncio.get_running_loop())
        for kind, message, problem in self._deferred_messages:
            self.show_once(kind, message, problem)
        self._deferred_messages.clear()
        self.sync_context()
        self.spawn(self._watch_files())
        self.start_loading()

    # -- context from other files ---------------------------------------------------------------

    def set_workspace(self, params: types.InitializeParams) -> None:
        """The workspace folders the client names, or its root for clients from before them."""
        uris = [folder.uri for folder in params.workspace_folders or ()]
        if not uris and params.root_uri:
            uris = [params.root_uri]
        roots = [path for uri in uris if (path := uri_path(uri)) is not None]
        if not roots and params.root_path:
            roots = [Path(params.root_path)]
        self.workspace_roots = roots

    def change_workspace(self, event: types.WorkspaceFoldersChangeEvent) -> None:
        removed = {uri_path(folder.uri) for folder in event.removed}
        roots = [root for root in self.workspace_roots if root not in removed]
        roots += [path for folder in event.added if (path := uri_path(folder.uri)) is not None]
        self.workspace_roots = roots
        self.sync_context()

    def excluded(self, path: Path) -> bool:
        """Whether ``exclude`` keeps this file out of every prompt (the index asks per file)."""
        return is_excluded(str(path), self.settings, [str(root) for root in self.workspace_roots])

    def sync_context(self, rescan: bool = False) -> None:
        """Index the workspace while ``contextTokens`` asks for snippets; the index is built on
        its own thread and starts with the open documents. ``rescan`` walks the folders again
        (the ``exclude`` patterns changed)."""
        if self.settings.context_tokens <= 0:
            return
        self.project.start()
        roots = tuple(_resolved(root) for root in self.workspace_roots)
        if rescan or roots != self.project.roots:
            self.project.set_roots(self.workspace_roots)
        for document in self.documents.all():
            self.document_changed(document.uri, None)

    def document_changed(
        self, uri: str, changes: Sequence[types.TextDocumentContentChangeEvent] | None
    ) -> None:
        """Keep the index's copy of an open document current, and note where it was edited."""
        path = uri_path(uri)
        document = self.documents.get(uri)
        if path is None or document is None or self.settings.context_tokens <= 0:
            return
        if len(document.text) > self.project.limits.max_file_bytes:
            # Too large to index from disk, so not from the editor either (and not copied
            # at every keystroke).
            return
        self.project.opened(path, str(document.text))
        for change in changes or ():
            if isinstance(change, types.TextDocumentContentChangePartial):
                self.selector.edited(path, change.range.start.line)

    def document_closed(self, uri: str) -> None:
        path = uri_path(uri)
        if path is not None:
            self.selector.forget(path)
            if self.settings.context_tokens > 0:
                self.project.closed(path)

    def files_changed(self, changes: Sequence[types.FileEvent]) -> None:
        if self.settings.context_tokens <= 0:
            return
        for change in changes:
            path = uri_path(change.uri)
            if path is not None:
                self.project.changed_on_disk(path)

    async def _watch_files(self) -> None:
        """Ask the client to report file changes in the workspace, where it can be asked."""
        workspace = self.client_capabilities.workspace
        watched = workspace.did_change_watched_files if workspace else None
        if not (watched and watched.dynamic_registration):
            log.info("context: the client cannot watch files; saves and edits keep it current")
            return
        registration = types.Registration(
            id=f"codegeex2-watch-{uuid.uuid4()}",
            method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=types.DidChangeWatchedFilesRegistrationOptions(watchers=WATCHERS),
        )
        try:
            await self.client_register_capability_async(
                types.RegistrationParams(registrations=[registration])
            )
        except Exception as error:
            log.info("context: the client refused to watch files: %s", error)
        else:
            log.info("context: the client reports changes to the workspace's files")

    def context_source(self, uri: str, cache: LineTokenCache) -> ContextSource | None:
        """Where the request for ``uri`` gets its snippets, or None when they are off."""
        path = uri_path(uri)
        if path is None or self.settings.context_tokens <= 0:
            return None

        def source(text: LspText, offset: int, language: str | None, budget: int) -> Context:
            others = [
                OpenDocument(
                    other_path,
                    document.version,
                    partial(str, document.text),
                    canonical_language_id(document.language_id, document.uri),
                )
                for document in self.documents.all()
                if (other_path := uri_path(document.uri)) is not None
                and not self.excluded(other_path)
            ]
            request = ContextRequest(
                path, text, offset, language, tag_line(language), budget, cache.encode_line, others
            )
            block = self.selector.block(request)
            if log.isEnabledFor(logging.DEBUG):
                for snippet in block.snippets:
                    log.debug(
                        "context for %s: %s:%d (%s)",
                        uri,
                        snippet.path,
                        snippet.line + 1,
                        snippet.origin,
                    )
            return block.text, block.ids

        return source

    # -- model loading ------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load the configured model in the background, reporting ``$/progress`` when possible."""
        spec = self.settings.load_spec()
        self.engine.configure_decode(self.settings.compile, self.settings.max_context_tokens)
        if (
            spec.backend == "openai"
            and os.environ.get(API_KEY_VARIABLE)
            and plain_http_beyond_loopback(spec.server_url)
        ):
            self.notify_user(
                types.MessageType.Warning,
                f"CodeGeeX2: the API key and your code go to {spec.server_url} over plain "
                "http, which anyone on the way can read. Use an https:// serverUrl.",
                problem="key over plain http",
            )
        # Another model or server: whatever failed before is not this one's problem.
        self._outage = None
        self.spawn(self._load(spec))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task whose failure is logged, never lost."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _load(self, spec: LoadSpec) -> None:
        loop = asyncio.get_running_loop()
        token = await self._begin_progress(f"Loading {spec.model}")

        def later(callback: Callable[..., None], *args: Any) -> Callable[..., None]:
            def call(*values: Any) -> None:
                loop.call_soon_threadsafe(partial(callback, *args), *values)

            return call

        listener = LoadListener(
            on_progress=later(self._report_progress, token),
            on_ready=later(self._on_ready, token),
            on_failed=later(self._on_failed, token, spec),
        )
        log.info("loading %s (device %s, dtype %s)", spec.model, spec.device, spec.dtype)
        self.engine.load(spec, listener)

    async def _begin_progress(self, title: str) -> str | None:
        window = self.client_capabilities.window
        if not (window and window.work_done_progress):
            return None
        token = f"codegeex2-load-{uuid.uuid4()}"
        try:
            await self.work_done_progress.create_async(token)
        except Exception:
            log.warning("the client refused a progress token; loading without progress")
            return None
        self._end_progress("Superseded by a newer model setting")
        self.work_done_progress.begin(
            token, types.WorkDoneProgressBegin(title="CodeGeeX2", message=title)
        )
        self._progress_token = token
        return token

    def _report_progress(self, token: str | None, message: str) -> None:
        log.info("%s", message)
        if token is not None and token == self._progress_token:
            self.work_done_progress.report(token, types.WorkDoneProgressReport(message=message))

    def _end_progress(self, message: str) -> None:
        token, self._progress_token = self._progress_token, None
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    def _on_ready(self, token: str | None, description: str) -> None:
        if token == self._progress_token:
            self._end_progress(f"Ready: {description}")
        self.outage_over()
        # The editor opened its documents while the model loaded.
        for uri in [document.uri for document in self.documents.all()]:
            self.prefill(uri)

    def _on_failed(self, token: str | None, spec: LoadSpec, message: str, hint: str) -> None:
        if token == self._progress_token:
            self._end_progress("Failed")
        self.report_outage(message, hint)

    def report_outage(self, message: str, hint: str) -> None:
        """Tell the user the model cannot be had: once, until it answers again.

        A server that is down fails every retry and every keystroke the same way; the log
        has each failure, the user one message.
        """
        if self._outage is None:
            self._outage = message
            self._outages += 1
            text = f"CodeGeeX2: {message}. {hint}"
            self.notify_user(types.MessageType.Error, text, problem=f"outage {self._outages}")
        else:
            log.info("still failing: %s", message)

    def outage_over(self) -> None:
        if self._outage is not None:
            log.info("the model answers again (after: %s)", self._outage)
            self._outage = None

    def request_settings(self) -> Settings:
        """The settings a request is built with: the context within the model's own limit."""
        model = self.engine.model
        return self.settings.within_context(model.context_tokens if model is not None else None)

    def line_cache(self) -> LineTokenCache | None:
        """Per-line token ids for the loaded tokenizer; rebuilt when the model changes."""
        model = self.engine.model
        if model is None:
            return None
        if self._line_cache is None or self._line_cache[0] is not model.tokenizer:
            self._line_cache = (model.tokenizer, LineTokenCache(model.tokenizer.encode))
        return self._line_cache[1]

    # -- completion ---------------------------------------------------------------------------

    async def suggestions(
        self,
        uri: str,
        position: types.Position,
        *,
        invoked: bool,
    ) -> list[str]:
        """Distinct texts to insert at ``position``; empty when there is nothing to offer."""
        document = self.documents.get(uri)
        if document is None:
            return []
        refusal = self.gate.refusal(self.settings, uri, document.language_id or "", self.folders())
        if refusal is not None:
            log.debug("no completion for %s: %s", uri, refusal)
            return []
        cache = self.line_cache()
        if cache is None:
            return []
        settings = self.request_settings()
        context = self.context_source(uri, cache)

        def request() -> CompletionRequest | None:
            try:
                prepared = prepare(
                    document.text,
                    position.line,
                    position.character,
                    settings=settings,
                    cache=cache,
                    language_id=document.language_id,
                    uri=uri,
                    encoding=self.documents.encoding,
                    invoked=invoked,
                    context=context,
                )
            except ValueError as error:
                log.info("no completion at %s:%s: %s", uri, position, error)
                return None
            if prepared is not None and log.isEnabledFor(logging.DEBUG):
                log.debug("prompt for %s:\n%s", uri, prepared.prompt.text)
            return prepared

        answered = self.scheduler.served.by_model
        try:
            texts = await self.scheduler.suggest(
                uri, request, invoked=invoked, debounce_ms=settings.debounce_ms
            )
        except LoadError as failure:
            self.report_outage(failure.message, failure.hint)
            return []
        if self.scheduler.served.by_model > answered:
            self.outage_over()
        return texts

    def prefill(self, uri: str) -> None:
        """Prefill a document just opened, while the user reads it, for the first request.

        LSP tells no cursor moves or focus; opening is the one sign of a document about to
        be used. Where the cursor then rests, the editor asks for a suggestion, and that
        request's own prefill is kept for the next one. What the gate refuses is never read.
        """
        document = self.documents.get(uri)
        if document is None:
            return
        if self.gate.refusal(self.settings, uri, document.language_id or "", self.folders()):
            return
        cache = self.line_cache()
        if cache is None:
            return
        settings = self.request_settings()
        context = self.context_source(uri, cache)

        def request() -> PrefillRequest | None:
            return prepare_prefill(
                document.text,
                settings=settings,
                cache=cache,
                language_id=document.language_id,
                uri=uri,
                context=context,
            )

        self.scheduler.prefill(uri, request)

    def folders(self) -> list[str]:
        """The workspace folders' URIs, where ``exclude`` patterns are relative to."""
        folders = [folder.uri for folder in self.workspace.folders.values()]
        root = self.workspace.root_uri
        return folders if folders or root is None else [root]

    def shown(self, uri: str, texts: list[str]) -> list[str]:
        """Count an answer as shown; the ids its items carry for ``codegeex2.accept``."""
        document = self.documents.get(uri)
        raw = (document.language_id if document is not None else None) or ""
        language = canonical_language_id(raw, uri) or raw.lower() or "unknown"
        return self.acceptance.shown(uri, language, self.settings.backend, texts)

    def _stats_changed(self) -> None:
        if self._stats_write is None:
            loop = asyncio.get_running_loop()
            self._stats_write = loop.call_later(STATS_WRITE_DELAY_S, self._write_stats)

    def _write_stats(self) -> None:
        self._stats_write = None
        self.spawn(asyncio.to_thread(self.acceptance.store.flush))

    def toggle(self, argument: Any) -> dict[str, Any]:
        """Flip suggestions everywhere, or for the language an argument names."""
        if argument is not None:
            language_id = argument.get("languageId") if isinstance(argument, dict) else None
            if not isinstance(language_id, str) or not language_id.strip():
                raise JsonRpcInvalidParams(
                    f'{TOGGLE_COMMAND} takes no argument or {{"languageId": string}}, '
                    f"got {argument!r}"
                )
            enabled = self.gate.toggle(self.settings, language_id.strip())
            log.info("suggestions %s for %s", "on" if enabled else "off", language_id)
            return {"languageId": language_id.strip().lower(), "enabled": enabled}
        enabled = self.gate.toggle(self.settings)
        log.info("suggestions %s", "on" if enabled else "off")
        return {"enabled": enabled}

    def word_before(self, uri: str, position: types.Position) -> tuple[str, int]:
        """The identifier characters right before ``position``, and their length in client units."""
        document = self.documents.get(uri)
        if document is None:
            return "", 0
        encoding = self.documents.encoding
        return document.word_before(document.offset(position, encoding), encoding)

    def forget(self, uri: str) -> None:
        """A closed document: stop its work and drop its state."""
        self.document_closed(uri)
        self.scheduler.forget(uri)
        self.acceptance.forget(uri)

    def status(self) -> dict[str, Any]:
        model = self.engine.model
        return {
            "state": self.engine.state,
            "description": self.engine.description,
            "enabled": self.gate.enabled(self.settings),
            "disabledLanguages": self.gate.disabled_languages(self.settings),
            "stats": self.acceptance.summary(),
            "settings": asdict(self.settings),
            "requests": asdict(self.engine.counters),
            "served": asdict(self.scheduler.served),
            "documents": self.documents.status(),
            "context": {**self.project.status(), "rebuilds": self.selector.rebuilds},
            "tokens": asdict(model.totals) if model is not None else None,
            **(model.status() if model is not None else {}),
        }


@lru_cache(maxsize=4096)
def uri_path(uri: str) -> Path | None:
    """The file a ``file:`` URI names, symlinks resolved as the index keys files; None for
    other schemes (unsaved buffers, remote files), which get no context of their own."""
    if not uri.startswith("file:"):
        return None
    path = to_fs_path(uri)
    return _resolved(Path(path)) if path else None


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def accept_command(suggestion_id: str) -> types.Command:
    """What the editor runs when the user takes a suggestion, so it is counted."""
    return types.Command(title="Accept", command=ACCEPT_COMMAND, arguments=[suggestion_id])


def lsp_inline_items(
    texts: list[str], position: types.Position, ids: list[str]
) -> types.InlineCompletionList:
    here = types.Range(start=position, end=position)
    return types.InlineCompletionList(
        items=[
            types.InlineCompletionItem(insert_text=text, range=here, command=accept_command(i))
            for text, i in zip(texts, ids, strict=True)
        ]
    )


def lsp_completion_items(
    texts: list[str], position: types.Position, word: str, word_units: int, ids: list[str]
) -> types.CompletionList:
    """Popup items that replace the word before the cursor with itself plus the suggestion.

    Clients filter items by the word typed before the cursor; an item that starts with that
    word survives the filter, where one inserted at the cursor would be dropped.
    """
    start = types.Position(line=position.line, character=position.character - word_units)
    items = []
    for rank, (text, suggestion_id) in enumerate(zip(texts, ids, strict=True)):
        lines = text.lstrip("\r\n").splitlines()
        first_line = lines[0].strip() if lines else ""
        items.append(
            types.CompletionItem(
                label=word + (first_line or text.strip()),
                kind=types.CompletionItemKind.Text,
                detail="CodeGeeX2",
                documentation=types.MarkupContent(
                    kind=types.MarkupKind.Markdown, value=f"```\n{word}{text}\n```"
                ),
                text_edit=types.TextEdit(
                    range=types.Range(start=start, end=position), new_text=word + text
                ),
                insert_text_format=types.InsertTextFormat.PlainText,
                # The suggestion is already indented for its place; clients must not re-indent.
                insert_text_mode=types.InsertTextMode.AsIs,
                filter_text=word + text,
                sort_text=f"{rank:04d}",
                preselect=rank == 0,
                command=accept_command(suggestion_id),
            )
        )
    # Incomplete, so clients ask again as the user types instead of filtering a stale list.
    return types.CompletionList(is_incomplete=True, items=items)


def create_server(settings: Settings | None = None) -> CodeGeeX2Server:
    """Build the server with its LSP features registered."""
    server = CodeGeeX2Server(settings)

    @server.feature(types.INITIALIZE)
    def initialize(ls: CodeGeeX2Server, params: types.InitializeParams) -> None:
        """Take ``initializationOptions`` as settings."""
        ls.set_workspace(params)
        options = params.initialization_options
        if options is not None:
            ls.apply_settings(
                section_from_configuration(options) or options, "initializationOptions"
            )

    @server.feature(types.INITIALIZED)
    def initialized(ls: CodeGeeX2Server, params: types.InitializedParams) -> None:
        """Start loading the model in the background."""
        ls.on_initialized()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(
        ls: CodeGeeX2Server, params: types.DidChangeConfigurationParams
    ) -> None:
        """Apply the ``codegeex2`` section; a new model, device or dtype reloads.

        The server's URL is not taken from here: nothing says whether the user or the opened
        workspace set it, and a change would send the code and the key to the new host at once.
        """
        section = section_from_configuration(params.settings)
        if section is not None:
            ls.apply_settings(section, f"{SECTION} configuration", fixed=START_ONLY)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_workspace_folders(
        ls: CodeGeeX2Server, params: types.DidChangeWorkspaceFoldersParams
    ) -> None:
        """Index the folders added, forget those removed."""
        ls.change_workspace(params.event)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(
        ls: CodeGeeX2Server, params: types.DidChangeWatchedFilesParams
    ) -> None:
        """Files created, changed or deleted outside the editor: read them again."""
        ls.files_changed(params.changes)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: CodeGeeX2Server, params: types.DidOpenTextDocumentParams) -> None:
        """The index reads an open document from the editor, not from disk; its first window
        is prefilled in the background."""
        ls.document_changed(params.text_document.uri, None)
        ls.prefill(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: CodeGeeX2Server, params: types.DidChangeTextDocumentParams) -> None:
        """Keep the index's copy current; the edit becomes a recent-edit snippet elsewhere."""
        ls.document_changed(params.text_document.uri, params.content_changes)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: CodeGeeX2Server, params: types.DidSaveTextDocumentParams) -> None:
        """A save: the open document's text is what the index has; make sure it is current."""
        ls.document_changed(params.text_document.uri, None)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CodeGeeX2Server, params: types.DidCloseTextDocumentParams) -> None:
        """Stop work for a document that is gone."""
        ls.forget(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: CodeGeeX2Server, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        """Ghost text at the cursor."""
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        uri = params.text_document.uri
        texts = await ls.suggestions(uri, params.position, invoked=invoked)
        return lsp_inline_items(texts, params.position, ls.shown(uri, texts))

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(
        ls: CodeGeeX2Server, params: types.CompletionParams
    ) -> types.CompletionList:
        """The same suggestions as popup items, for clients without inline completion."""
        context = params.context
        invoked = context is None or context.trigger_kind == types.CompletionTriggerKind.Invoked
        uri = params.text_document.uri
        texts = await ls.suggestions(uri, params.position, invoked=invoked)
        word, units = ls.word_before(uri, params.position)
        return lsp_completion_items(texts, params.position, word, units, ls.shown(uri, texts))

    @server.command(STATUS_COMMAND)
    def status(ls: CodeGeeX2Server, *args: Any) -> dict[str, Any]:
        """The model's state and the work done so far."""
        return ls.status()

    @server.command(TOGGLE_COMMAND)
    def toggle(ls: CodeGeeX2Server, *args: Any) -> dict[str, Any]:
        """Suggestions off or on, everywhere or for ``{"languageId": ...}``; the new state."""
        return ls.toggle(args[0] if args else None)

    @server.command(ACCEPT_COMMAND)
    def accept(ls: CodeGeeX2Server, *args: Any) -> bool:
        """Count the suggestion with this id as accepted; False for an id no answer gave."""
        suggestion_id = args[0] if args else None
        if isinstance(suggestion_id, dict):
            suggestion_id = suggestion_id.get("id")
        if not isinstance(suggestion_id, str):
            return False
        return ls.acceptance.accept(suggestion_id)

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: CodeGeeX2Server, params: None) -> None:
        """Stop the model and index threads, and write the counts."""
        ls.project.close()
        ls.engine.close()
        ls.acceptance.store.flush()

    return server


class ClientLogHandler(logging.Handler):
    """Forwards log records to the client as ``window/logMessage``, from any thread.

    Records from before the client is initialized (bad initialization options, say) are
    held and sent once it is.
    """

    LEVELS: ClassVar[dict[int, types.MessageType]] = {
        logging.ERROR: types.MessageType.Error,
        logging.WARNING: types.MessageType.Warning,
        logging.INFO: types.MessageType.Info,
    }

    def __init__(self, server: CodeGeeX2Server) -> None:
        super().__init__(logging.INFO)
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self.held: list[types.LogMessageParams] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The client is ready: send what was held, then forward as records come."""
        self.loop = loop
        for params in self.held:
            self.server.window_log_message(params)
        self.held.clear()

    def emit(self, record: logging.LogRecord) -> None:
        kind = next(
            (v for k, v in self.LEVELS.items() if record.levelno >= k), types.MessageType.Log
        )
        params = types.LogMessageParams(type=kind, message=self.format(record))
        if self.loop is None:
            self.held.append(params)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.server.window_log_message, params)
