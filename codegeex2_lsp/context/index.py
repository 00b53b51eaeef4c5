"""The workspace's symbol index, built and kept current on a thread of its own.

The event loop only enqueues work (a folder to scan, an open document's new text, a file the
editor says changed) and reads what is ready; reading takes a lock held for a dictionary
lookup, never for a parse. Edits to open documents go ahead of a running scan, so the file the
user is working on is current even while a large workspace is still being read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from codegeex2_lsp.completion.languages import language_id_for_path
from codegeex2_lsp.context.files import (
    DEFAULT_LIMITS,
    Excluded,
    Limits,
    ignored_by_git,
    read_source,
    walk,
)
from codegeex2_lsp.context.parsing import GRAMMARS, Definition, FileSymbols, family, parse

log = logging.getLogger(__name__)

_PACKAGE_FILES = frozenset({"__init__", "index", "mod"})
"""Files that stand for their folder: ``import pkg`` reads ``pkg/__init__.py``."""


def _never(path: Path) -> bool:
    return False


@dataclass(frozen=True)
class IndexedFile:
    path: Path
    root: Path | None
    symbols: FileSymbols

    @cached_property
    def by_name(self) -> dict[str, Definition]:
        """Each name's definition: the top-level one where there is one, else the first
        member."""
        found: dict[str, Definition] = {}
        for definition in self.symbols.definitions:
            known = found.get(definition.name)
            if known is None or (known.member_of is not None and definition.member_of is None):
                found[definition.name] = definition
        return found

    @cached_property
    def interface(self) -> int:
        """Changes with what the file imports and the names it defines, not with its bodies:
        lookups made for the file stay valid while it is edited inside a function."""
        names = sorted({definition.name for definition in self.symbols.definitions})
        return hash((self.symbols.imports, tuple(names)))

    @property
    def display(self) -> str:
        """The path as the prompt shows it: relative to its workspace folder."""
        if self.root is not None:
            try:
                return self.path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return self.path.name


def module_keys(path: Path, root: Path | None) -> Iterator[str]:
    """Every trailing part of ``path`` a module name or include can name it by, without the
    extension and with it (``src/pkg/mod.py``: ``mod``, ``pkg/mod``, ``src/pkg/mod``,
    ``mod.py``...), and its folder's for files that stand for their folder or share a package
    with it (Go, Java)."""
    relative = path.relative_to(root) if root is not None else PurePosixPath(path.name)
    parts = list(PurePosixPath(relative.as_posix()).parts)
    stem = PurePosixPath(parts[-1]).stem
    if stem.endswith(".d"):
        stem = stem[:-2]
    folder = parts[:-1]
    for start in range(len(parts)):
        yield "/".join(parts[start:])
        yield "/".join([*parts[start:-1], stem])
    if stem in _PACKAGE_FILES or path.suffix in (".go", ".java"):
        for start in range(len(folder)):
            yield "/".join(folder[start:]) + "/"


class SymbolIndex:
    """Files, definitions by name and files by module key, safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[Path, IndexedFile] = {}
        self._by_name: dict[str, set[Path]] = {}
        self._by_key: dict[tuple[str, str], set[Path]] = {}
        self.changes = 0
        """Counts every put and removal: selection caches compare it to know nothing moved."""
        self._changes_of: dict[Path, int] = {}

    def __len__(self) -> int:
        return len(self._files)

    def put(self, indexed: IndexedFile) -> None:
        with self._lock:
            self._remove(indexed.path)
            self._files[indexed.path] = indexed
            group = family(indexed.symbols.language)
            for definition in indexed.symbols.definitions:
                if definition.member_of is None:
                    self._by_name.setdefault(definition.name, set()).add(indexed.path)
            for key in set(module_keys(indexed.path, indexed.root)):
                self._by_key.setdefault((group, key), set()).add(indexed.path)
            self.changes += 1
            self._changes_of[indexed.path] = self._changes_of.get(indexed.path, 0) + 1

    def remove(self, path: Path) -> bool:
        with self._lock:
            removed = self._remove(path)
            self.changes += removed
            return removed

    def _remove(self, path: Path) -> bool:
        old = self._files.pop(path, None)
        if old is None:
            return False
        group = family(old.symbols.language)
        for definition in old.symbols.definitions:
            holders = self._by_name.get(definition.name)
            if holders is not None:
                holders.discard(path)
                if not holders:
                    del self._by_name[definition.name]
        for key in set(module_keys(old.path, old.root)):
            holders = self._by_key.get((group, key))
            if holders is not None:
                holders.discard(path)
                if not holders:
                    del self._by_key[(group, key)]
        return True

    def changes_elsewhere(self, path: Path) -> int:
        """Puts and removals of files other than ``path``: what the lookups made for
        ``path`` depend on besides the file itself."""
        with self._lock:
            return self.changes - self._changes_of.get(path, 0)

    def file(self, path: Path) -> IndexedFile | None:
        with self._lock:
            return self._files.get(path)

    def paths(self) -> list[Path]:
        with self._lock:
            return list(self._files)

    def defining(self, name: str) -> list[IndexedFile]:
        """The files with a top-level definition named ``name``."""
        with self._lock:
            return [self._files[path] for path in sorted(self._by_name.get(name, ()))]

    def modules(self, language: str, key: str) -> list[IndexedFile]:
        """The files of ``language``'s family that ``key`` (a path without its extension, a
        folder ending in ``/``, or a path with one) names."""
        with self._lock:
            found = self._by_key.get((family(language), key), ())
            return [self._files[path] for path in sorted(found)]

    def definitions(self) -> int:
        with self._lock:
            return sum(len(f.symbols.definitions) for f in self._files.values())


class Workspace:
    """The index of the workspace folders and open documents, and the thread that builds it."""

    def __init__(
        self,
        *,
        limits: Limits = DEFAULT_LIMITS,
        excluded: Excluded = _never,
        read: Callable[[Path, Limits], str | None] = read_source,
    ) -> None:
        """``excluded`` is asked once per file before it is read; ``read`` reads one file
        (or says it cannot be), on the index thread."""
        self.limits = limits
        self.excluded = excluded
        self._read_source = read
        self.index = SymbolIndex()
        self.roots: tuple[Path, ...] = ()
        self._condition = threading.Condition()
        self._texts: OrderedDict[Path, str] = OrderedDict()
        self._disk: OrderedDict[Path, None] = OrderedDict()
        self._scans: list[Path] = []
        self._open: set[Path] = set()
        self._busy = False
        self._closed = False
        self.scans_done = 0
        self._thread: threading.Thread | None = None

    # -- the event loop's side ----------------------------------------------------------------

    def start(self) -> None:
        with self._condition:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="codegeex2-context-index", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def set_roots(self, roots: list[Path]) -> None:
        """Index these folders (and forget those no longer among them)."""
        resolved = tuple(dict.fromkeys(_resolve(root) for root in roots))
        with self._condition:
            gone = [root for root in self.roots if root not in resolved]
            self.roots = resolved
            self._scans.extend(gone)
            self._scans.extend(resolved)
            self._condition.notify_all()

    def opened(self, path: Path, text: str) -> None:
        """An open document's text: it replaces the file's text on disk until closed."""
        with self._condition:
            self._open.add(path)
            self._texts[path] = text
            self._texts.move_to_end(path)
            self._condition.notify_all()

    def closed(self, path: Path) -> None:
        with self._condition:
            self._open.discard(path)
            self._texts.pop(path, None)
            self._disk[path] = None
            self._condition.notify_all()

    def changed_on_disk(self, path: Path) -> None:
        """A file created, changed or deleted, as the editor's file watcher reports it."""
        with self._condition:
            self._disk[path] = None
            self._condition.notify_all()

    def root_of(self, path: Path) -> Path | None:
        found = [root for root in self.roots if path == root or root in path.parents]
        return max(found, key=lambda root: len(root.parts)) if found else None

    def settled(self) -> bool:
        """Whether everything enqueued so far has been indexed."""
        with self._condition:
            return not (self._busy or self._texts or self._disk or self._scans)

    def wait_settled(self, timeout: float) -> bool:
        """Wait until everything enqueued so far is indexed, at most ``timeout`` seconds."""
        with self._condition:
            return self._condition.wait_for(
                lambda: (
                    self._closed or not (self._busy or self._texts or self._disk or self._scans)
                ),
                timeout,
            )

    def status(self) -> dict[str, Any]:
        with self._condition:
            pending = len(self._texts) + len(self._disk) + len(self._scans)
        return {
            "roots": [str(root) for root in self.roots],
            "files": len(self.index),
            "scans": self.scans_done,
            "pending": pending + (1 if self._busy else 0),
        }

    # -- the index thread ---------------------------------------------------------------------

    def _run(self) -> None:
        scan: Iterator[Path] | None = None
        scanning: Path | None = None
        seen: set[Path] = set()
        started = 0.0
        while True:
            with self._condition:
                self._busy = False
                self._condition.notify_all()
                while not (self._closed or self._texts or self._disk or self._scans or scan):
                    self._condition.wait()
                if self._closed:
                    return
                self._busy = True
                text_task = self._texts.popitem(last=False) if self._texts else None
                disk_task = None
                if text_task is None and self._disk:
                    disk_task = self._disk.popitem(last=False)[0]
                if text_task is None and disk_task is None and scan is None:
                    scanning = self._scans.pop(0)
                    scan, seen, started = self._walk(scanning), set(), time.perf_counter()
            try:
                if text_task is not None:
                    self._index_text(*text_task)
                elif disk_task is not None:
                    self._index_disk(disk_task)
                elif scan is not None and scanning is not None:
                    path = next(scan, None)
                    if path is None:
                        self._finish_scan(scanning, seen, started)
                        scan = scanning = None
                    else:
                        seen.add(path)
                        if path not in self._open:
                            self._read(path, self.root_of(path))
            except Exception:
                log.exception("context: indexing failed")
                scan = scanning = None

    def _walk(self, root: Path) -> Iterator[Path]:
        if root not in self.roots:
            return iter(())
        if not root.is_dir():
            log.info(
                "context: workspace folder %s cannot be read (gone?); it adds no context", root
            )
            return iter(())
        return walk(root, limits=self.limits, excluded=self.excluded)

    def _finish_scan(self, root: Path, seen: set[Path], started: float) -> None:
        """Forget the files of ``root`` the scan did not find (deleted, now ignored, or a
        folder no longer in the workspace)."""
        kept = root in self.roots
        for path in self.index.paths():
            inside = root == path or root in path.parents
            mine = not kept or self.root_of(path) == root
            if inside and mine and path not in seen and path not in self._open:
                self.index.remove(path)
        self.scans_done += 1
        if kept:
            log.info(
                "context: indexed %d files of %s in %.1f s",
                sum(1 for p in self.index.paths() if self.root_of(p) == root),
                root,
                time.perf_counter() - started,
            )

    def _language(self, path: Path) -> str | None:
        language = language_id_for_path(path)
        return language if language in GRAMMARS else None

    def _index_text(self, path: Path, text: str) -> None:
        language = self._language(path)
        if language is None:
            return
        root = self.root_of(path)
        if self.excluded(path) or (root is not None and ignored_by_git(path, root)):
            # Open in the editor, but what may never be read is not read from there either.
            self.index.remove(path)
            return
        symbols = parse(text, language)
        if symbols is not None:
            self.index.put(IndexedFile(path, self.root_of(path), symbols))

    def _index_disk(self, path: Path) -> None:
        if path in self._open:
            return
        root = self.root_of(path)
        if not path.exists():
            # A folder deleted is one event: everything indexed under it goes.
            for known in self.index.paths():
                if (known == path or path in known.parents) and known not in self._open:
                    self.index.remove(known)
            if path in self.roots:
                log.info("context: workspace folder %s is gone; it adds no context", path)
            return
        if path.is_dir():
            if root is not None:
                with self._condition:
                    self._scans.append(root)
            return
        language = self._language(path)
        allowed = (
            language is not None
            and root is not None
            and not ignored_by_git(path, root)
            and not self.excluded(path)
        )
        if allowed:
            self._read(path, root)
        else:
            self.index.remove(path)

    def _read(self, path: Path, root: Path | None) -> None:
        """Index ``path`` from disk, a file already found allowed; drop it if it cannot be."""
        language = self._language(path)
        text = self._read_source(path, self.limits) if language is not None else None
        symbols = parse(text, language) if text is not None and language is not None else None
        if symbols is None:
            self.index.remove(path)
        else:
            self.index.put(IndexedFile(path, root, symbols))


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def definition_in(indexed: IndexedFile, name: str) -> Definition | None:
    """The top-level definition named ``name`` in ``indexed``, or a member when none is."""
    return indexed.by_name.get(name)
