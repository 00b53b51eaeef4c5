"""The open documents, kept in sync with the editor's copies by LSP's rules.

This replaces pygls's workspace documents, whose incremental edits split lines with
``str.splitlines`` (breaking at form feeds, U+2028 and more) and cost time in proportion to
the whole document on every keystroke. Positions arrive in the negotiated encoding's code
units and are converted here, in one place.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

from lsprotocol import types

from codegeex2_lsp.lsp.text import LspText, PositionEncoding, units

log = logging.getLogger(__name__)

_WORD_BEFORE = re.compile(r"[\w$]+$")

WORD_LIMIT = 1024
"""Characters looked at for the word before the cursor; longer runs are cut to their end."""


@dataclass
class Document:
    """One open document: its text and what the editor told about it."""

    uri: str
    language_id: str | None
    version: int | None
    text: LspText = field(default_factory=LspText)

    def offset(self, position: types.Position, encoding: PositionEncoding) -> int:
        """Offset of ``position`` in the text (clamped like :meth:`LspText.offset`)."""
        return self.text.offset(position.line, position.character, encoding)

    def word_before(self, offset: int, encoding: PositionEncoding) -> tuple[str, int]:
        """The identifier characters right before ``offset`` on its line, and their length in
        code units."""
        line_start = self.text.line_start(self.text.line_of(offset))
        before = self.text.slice(max(line_start, offset - WORD_LIMIT), offset)
        match = _WORD_BEFORE.search(before)
        word = match.group() if match else ""
        return word, units(word, encoding)


class DocumentStore:
    """Documents by URI. URIs are compared percent-decoded, as clients vary in the quoting."""

    def __init__(self) -> None:
        self._documents: dict[str, Document] = {}
        self.encoding: PositionEncoding = "utf-16"

    def set_encoding(self, encoding: Any) -> None:
        """Take the position encoding negotiated at ``initialize``."""
        value = str(getattr(encoding, "value", encoding) or "utf-16")
        if value not in ("utf-16", "utf-8", "utf-32"):
            log.warning("unknown position encoding %r; using utf-16", value)
            value = "utf-16"
        self.encoding = cast(PositionEncoding, value)

    def get(self, uri: str) -> Document | None:
        return self._documents.get(unquote(uri))

    def uris(self) -> list[str]:
        """The open documents' URIs, as their clients sent them."""
        return [document.uri for document in self._documents.values()]

    def open(self, item: types.TextDocumentItem) -> None:
        self._documents[unquote(item.uri)] = Document(
            item.uri, item.language_id, item.version, LspText(item.text)
        )

    def close(self, uri: str) -> None:
        self._documents.pop(unquote(uri), None)

    def change(self, params: types.DidChangeTextDocumentParams) -> None:
        """Apply the changes in order; each one's positions refer to the text after the last."""
        document = self.get(params.text_document.uri)
        if document is None:
            log.warning("change to a document that is not open: %s", params.text_document.uri)
            return
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                start = document.offset(change.range.start, self.encoding)
                end = document.offset(change.range.end, self.encoding)
                document.text.replace(start, end, change.text)
            else:
                document.text = LspText(change.text)
        document.version = params.text_document.version

    def status(self) -> dict[str, dict[str, Any]]:
        """Per open document: length in characters, lines, version and the text's SHA-256."""
        return {
            document.uri: {
                "length": len(document.text),
                "lines": document.text.line_count,
                "version": document.version,
                "sha256": document.text.sha256(),
            }
            for document in self._documents.values()
        }
