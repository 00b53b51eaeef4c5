"""Which snippets of other files go into a prompt, and when the choice may change.

Sources, in rank order: definitions of the names the code near the cursor uses that come from
other files (through the file's imports, its package, then the index by name); the windows of
the other open documents most like the code near the cursor (Jaccard similarity of their
identifiers); the lines around recent edits in other files.

The block is the prefix of every prompt after the tag line, so a new block throws the KV
cache away. It is therefore kept while typing and rebuilt only when it must be: the cursor
moved to another region of the file, the code near the cursor uses a name from another file
that the last choice did not consider, or a definition in the block was edited. The word being
typed is never looked up: it is unfinished.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from codegeex2_lsp.context.index import IndexedFile, SymbolIndex, definition_in
from codegeex2_lsp.context.parsing import Definition, Import, family
from codegeex2_lsp.context.render import EMPTY, Block, EncodeLine, Snippet, comment_prefix, cost
from codegeex2_lsp.context.render import render as render_block
from codegeex2_lsp.context.resolve import distance, neighbours, resolve
from codegeex2_lsp.lsp.text import LspText

NEAR_LINES = 30
"""Lines above the cursor whose names are looked up."""

ANCHOR_LINES = 32
"""The block is rebuilt when the cursor moves to another band of this many lines."""

WINDOW_LINES = 20
"""Lines of an open document compared with the code near the cursor, in steps of half."""

EDIT_LINES = 3
"""Lines kept around a recent edit, each side."""

RECENT_EDITS = 8

IMPORTED_CHARS = 16384
"""Text above the cursor searched for the last use of each imported name, on a rebuild."""

MAX_LOOKUPS = 3
"""A name defined in more files than this, and not imported, is too common to guess from."""

MIN_SNIPPET_TOKENS = 8

SHARE_OF_ONE = 6
"""A definition whose whole text would take more than this share of the block (a sixth) shows
only its header: the signatures of several names used here are worth more than one body."""

_IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*")
_QUALIFIED = re.compile(r"([A-Za-z_$][\w$]*)\s*(?:\.|::|->)\s*([A-Za-z_$][\w$]*)")


@dataclass(frozen=True)
class OpenDocument:
    """Another document the editor holds, as selection reads it: its version keys caches."""

    path: Path
    version: int | None
    text: Callable[[], str]
    language: str | None


@dataclass(frozen=True)
class Use:
    """A name the code near the cursor uses, with the qualifier before it (``mod`` in
    ``mod.name``) if any."""

    name: str
    qualifier: str | None = None


def uses_near(before: str) -> list[Use]:
    """Names used in ``before`` (the text above the cursor), nearest first, each once; the
    word touching the end is left out, being typed."""
    matches = list(_IDENTIFIER.finditer(before))
    if matches and matches[-1].end() == len(before):
        matches.pop()
    qualifiers = {m.end(2): m.group(1) for m in _QUALIFIED.finditer(before)}
    seen: set[tuple[str, str | None]] = set()
    found: list[Use] = []
    for match in reversed(matches):
        use = Use(match.group(), qualifiers.get(match.end()))
        key = (use.name, use.qualifier)
        if key not in seen:
            seen.add(key)
            found.append(use)
    return found


def identifiers(text: str) -> frozenset[str]:
    return frozenset(_IDENTIFIER.findall(text))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def windows(lines: list[str]) -> list[tuple[int, frozenset[str]]]:
    """(first line, identifiers) of each window of ``WINDOW_LINES`` lines, every half window."""
    step = WINDOW_LINES // 2
    starts = range(0, max(1, len(lines) - step), step)
    return [
        (start, identifiers("\n".join(lines[start : start + WINDOW_LINES]))) for start in starts
    ]


@dataclass(frozen=True)
class Wanted:
    """A definition the code near the cursor needs, and the name it was found by."""

    file: IndexedFile
    definition: Definition
    name: str

    @property
    def key(self) -> tuple[Path, int, str]:
        return (self.file.path, self.definition.line, self.definition.name)


@dataclass
class _Choice:
    """The last block chosen for a document and what it was chosen from."""

    anchor: tuple[int, int, str]
    considered: frozenset[tuple[Path, int, str]]
    shown: tuple[tuple[Path, str, str], ...]
    block: Block


@dataclass
class ContextRequest:
    path: Path
    text: LspText
    offset: int
    language: str | None
    tag_line: str | None
    budget: int
    encode_line: EncodeLine
    open_documents: Sequence[OpenDocument] = ()


@dataclass
class _Windows:
    version: int | None
    lines: list[str]
    windows: list[tuple[int, frozenset[str]]] = field(default_factory=list)


class ContextSelector:
    """Chooses and keeps the snippet block per document. Used from one thread (the event loop);
    the index it reads is filled by another."""

    def __init__(self, index: SymbolIndex, max_documents: int = 64) -> None:
        self.index = index
        self._choices: OrderedDict[Path, _Choice] = OrderedDict()
        self._max_documents = max_documents
        self._edits: deque[tuple[Path, int]] = deque(maxlen=RECENT_EDITS)
        self._windows: dict[Path, _Windows] = {}
        self._resolved: dict[Path, tuple[int, list[tuple[Import, list[IndexedFile]]]]] = {}
        self._open_paths: set[Path] = set()
        self._above: tuple[str, list[Use]] = ("", [])
        self._lookups: tuple[tuple[Path, int], dict[Use, list[tuple[IndexedFile, Definition]]]]
        self._lookups = ((Path(), 0), {})
        self.rebuilds = 0

    def edited(self, path: Path, line: int) -> None:
        """An edit at ``line`` of ``path``: its surroundings become a recent-edit snippet."""
        for index, (seen_path, seen_line) in enumerate(self._edits):
            if seen_path == path and abs(seen_line - line) <= EDIT_LINES:
                del self._edits[index]
                break
        self._edits.append((path, line))

    def forget(self, path: Path) -> None:
        self._choices.pop(path, None)
        self._windows.pop(path, None)
        self._resolved.pop(path, None)

    def block(self, request: ContextRequest) -> Block:
        prefix = comment_prefix(request.tag_line)
        if prefix is None or request.budget < MIN_SNIPPET_TOKENS:
            return EMPTY
        text, offset = request.text, request.offset
        line = text.line_of(offset)
        line_start = text.line_start(line)
        above = text.slice(text.line_start(max(0, line - NEAR_LINES)), line_start)
        before = above + text.slice(line_start, offset)
        current = self.index.file(request.path)
        uses = self._uses(above, before)
        wanted = list(self._wanted(request.path, request.language, current, uses))
        anchor = (line // ANCHOR_LINES, request.budget, prefix)
        keys = frozenset(item.key for item in wanted)
        previous = self._choices.get(request.path)
        if (
            previous is not None
            and previous.anchor == anchor
            and keys <= previous.considered
            and self._unchanged(previous.shown)
        ):
            self._choices.move_to_end(request.path)
            return previous.block
        self.rebuilds += 1
        self._open_paths = {document.path for document in request.open_documents}
        if current is not None:
            above = text.slice(max(0, offset - IMPORTED_CHARS), offset)
            wanted += [item for item in self._imported(current, above) if item.key not in keys]
        # What the user has open is what they are working with: its definitions go first.
        wanted.sort(key=lambda item: item.file.path not in self._open_paths)
        block, shown = self._build(request, prefix, wanted, before)
        considered = keys | (
            previous.considered if previous and previous.anchor == anchor else frozenset()
        )
        self._choices[request.path] = _Choice(anchor, considered, shown, block)
        self._choices.move_to_end(request.path)
        while len(self._choices) > self._max_documents:
            self._choices.popitem(last=False)
        return block

    def _uses(self, above: str, before: str) -> list[Use]:
        """:func:`uses_near` of ``before``, where the lines ``above`` the cursor's own (the same
        while the user types on one line) are looked at once."""
        if self._above[0] != above:
            self._above = (above, uses_near(above))
        near = uses_near(before[len(above) :])
        return list(dict.fromkeys([*near, *self._above[1]]))

    def _unchanged(self, shown: tuple[tuple[Path, str, str], ...]) -> bool:
        """Whether every definition in the block still reads as it did."""
        for path, name, snippet in shown:
            indexed = self.index.file(path)
            definition = definition_in(indexed, name) if indexed is not None else None
            if definition is None or definition.snippet != snippet:
                return False
        return True

    # -- definitions ---------------------------------------------------------------------------

    def _imports(self, current: IndexedFile) -> list[tuple[Import, list[IndexedFile]]]:
        version = self._version(current)
        cached = self._resolved.get(current.path)
        if cached is not None and cached[0] == version:
            return cached[1]
        resolved = [
            (imported, resolve(current, imported, self.index))
            for imported in current.symbols.imports
        ]
        self._resolved[current.path] = (version, resolved)
        return resolved

    def _version(self, current: IndexedFile) -> int:
        """What lookups and resolutions for ``current`` depend on: the other files, and the
        imports and names of ``current`` (not its bodies, which change with every edit)."""
        return hash((self.index.changes_elsewhere(current.path), current.interface))

    def _imported(self, current: IndexedFile, above: str) -> list[Wanted]:
        """The definitions of every name the file imports, the last used first: what a line
        about to be written most likely calls. Looked at only when the block is rebuilt."""
        found: list[tuple[int, Wanted]] = []
        for imported, files in self._imports(current):
            for local_name, original in imported.names:
                for indexed in files:
                    definition = definition_in(indexed, original or local_name)
                    if definition is not None and definition.member_of is None:
                        found.append(
                            (above.rfind(local_name), Wanted(indexed, definition, local_name))
                        )
                        break
        found.sort(key=lambda entry: -entry[0])
        return [wanted for _, wanted in found]

    def _wanted(
        self, path: Path, language: str | None, current: IndexedFile | None, uses: list[Use]
    ) -> Iterator[Wanted]:
        """The definitions the uses lead to, nearest use first. A file the index has not read
        yet (just opened while a large workspace is read) still gets lookups by name."""
        local: set[str] = set()
        bindings: dict[str, tuple[str, list[IndexedFile]]] = {}
        imported_files: list[IndexedFile] = []
        if current is not None:
            local = {d.name for d in current.symbols.definitions}
            for imported, files in self._imports(current):
                imported_files.extend(files)
                for local_name, original in imported.names:
                    bindings.setdefault(local_name, (original, files))
            imported_files.extend(neighbours(current, self.index))
            language = current.symbols.language
        if language is None:
            return
        group = family(language)
        seen: set[tuple[Path, int, str]] = set()
        key = (path, self._version(current) if current is not None else self.index.changes)
        if self._lookups[0] != key:
            self._lookups = (key, {})
        memo = self._lookups[1]
        for use in uses:
            if use not in memo:
                memo[use] = list(self._lookup(use, path, local, bindings, imported_files, group))
            for found in memo[use]:
                wanted = Wanted(found[0], found[1], use.name)
                if wanted.key not in seen:
                    seen.add(wanted.key)
                    yield wanted

    def _lookup(
        self,
        use: Use,
        path: Path,
        local: set[str],
        bindings: dict[str, tuple[str, list[IndexedFile]]],
        imported_files: list[IndexedFile],
        group: str,
    ) -> Iterator[tuple[IndexedFile, Definition]]:
        if use.qualifier is not None and use.qualifier in bindings:
            for indexed in bindings[use.qualifier][1]:
                definition = definition_in(indexed, use.name)
                if definition is not None:
                    yield indexed, definition
                    return
        if use.name in local:
            return
        if use.name in bindings:
            original, files = bindings[use.name]
            for indexed in files:
                definition = definition_in(indexed, original or use.name)
                if definition is not None:
                    yield indexed, definition
                    return
        for indexed in imported_files:
            definition = definition_in(indexed, use.name)
            if definition is not None and definition.member_of is None:
                yield indexed, definition
                return
        holders = [
            indexed
            for indexed in self.index.defining(use.name)
            if indexed.path != path and family(indexed.symbols.language) == group
        ]
        if 0 < len(holders) <= MAX_LOOKUPS:
            nearest = min(holders, key=lambda indexed: distance(path, indexed.path))
            definition = definition_in(nearest, use.name)
            if definition is not None:
                yield nearest, definition

    # -- building ------------------------------------------------------------------------------

    def _build(
        self, request: ContextRequest, prefix: str, wanted: list[Wanted], before: str
    ) -> tuple[Block, tuple[tuple[Path, str, str], ...]]:
        chosen: list[Snippet] = []
        shown: list[tuple[Path, str, str]] = []
        taken: dict[Path, list[tuple[int, int]]] = {}
        left = request.budget

        def take(snippet: Snippet, source: Path, lines: tuple[int, int]) -> bool:
            nonlocal left
            spent = cost(snippet, prefix, request.encode_line)
            if spent > left:
                return False
            left -= spent
            chosen.append(snippet)
            taken.setdefault(source, []).append(lines)
            return True

        for item in wanted:
            if left < MIN_SNIPPET_TOKENS:
                break
            definition = item.definition
            display = item.file.display
            origin = f"definition of {item.name}"
            full = Snippet(display, definition.snippet, origin, definition.line)
            span = (definition.line, definition.end_line)
            # One long class must not crowd out the signatures of everything else used here.
            whole = cost(full, prefix, request.encode_line) <= request.budget // SHARE_OF_ONE
            if (whole and take(full, item.file.path, span)) or take(
                Snippet(display, definition.header, origin, definition.line), item.file.path, span
            ):
                shown.append((item.file.path, definition.name, definition.snippet))
        for snippet, source, span in self._similar(request, before):
            if left < MIN_SNIPPET_TOKENS:
                break
            if not _overlaps(taken.get(source, []), span):
                take(snippet, source, span)
        for snippet, source, span in self._recent(request):
            if left < MIN_SNIPPET_TOKENS:
                break
            if not _overlaps(taken.get(source, []), span):
                take(snippet, source, span)
        chosen.reverse()
        return render_block(chosen, prefix, request.encode_line), tuple(shown)

    def _similar(
        self, request: ContextRequest, before: str
    ) -> list[tuple[Snippet, Path, tuple[int, int]]]:
        """The best window of each other open document of the language family, best first."""
        query = identifiers("\n".join(before.split("\n")[-WINDOW_LINES:]))
        if not query:
            return []
        group = family(request.language) if request.language else None
        scored: list[tuple[float, Snippet, Path, tuple[int, int]]] = []
        for document in request.open_documents:
            if document.path == request.path or group is None:
                continue
            if document.language is None or family(document.language) != group:
                continue
            cached = self._windows.get(document.path)
            if cached is None or cached.version != document.version:
                lines = document.text().split("\n")
                cached = self._windows[document.path] = _Windows(
                    document.version, lines, windows(lines)
                )
            best = max(
                ((jaccard(query, ids), start) for start, ids in cached.windows), default=(0.0, 0)
            )
            score, start = best
            if score > 0:
                end = min(len(cached.lines), start + WINDOW_LINES) - 1
                text = "\n".join(cached.lines[start : end + 1]).strip("\n")
                snippet = Snippet(
                    self._display(document.path), text, f"similar (Jaccard {score:.2f})", start
                )
                scored.append((score, snippet, document.path, (start, end)))
        scored.sort(key=lambda entry: -entry[0])
        return [(snippet, path, span) for _, snippet, path, span in scored]

    def _recent(self, request: ContextRequest) -> list[tuple[Snippet, Path, tuple[int, int]]]:
        documents = {document.path: document for document in request.open_documents}
        found = []
        for path, line in reversed(self._edits):
            document = documents.get(path)
            if path == request.path or document is None:
                continue
            lines = document.text().split("\n")
            start, end = max(0, line - EDIT_LINES), min(len(lines) - 1, line + EDIT_LINES)
            text = "\n".join(lines[start : end + 1]).strip("\n")
            if text.strip():
                found.append(
                    (
                        Snippet(self._display(path), text, "edited recently", start),
                        path,
                        (start, end),
                    )
                )
        return found

    def _display(self, path: Path) -> str:
        indexed = self.index.file(path)
        return indexed.display if indexed is not None else path.name


def _overlaps(spans: list[tuple[int, int]], span: tuple[int, int]) -> bool:
    return any(start <= span[1] and span[0] <= end for start, end in spans)
