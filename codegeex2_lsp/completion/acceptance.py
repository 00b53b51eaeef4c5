"""Whether suggestions help: shown, accepted and dismissed, per language and backend.

Counted on this machine only and never sent anywhere. Each answer with suggestions counts as
shown once; the editor runs ``codegeex2.accept`` with an item's id when the user takes it; an
answer replaced by the next one for its document (or closed with it) without an accept counts
as dismissed. The counts live in ``$XDG_STATE_HOME/codegeex2-lsp/stats.json``, shared by every
server process of the user: each adds what it counted since its last write to what the file
holds, under a lock, and replaces the file atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: one process at a time is all it gets.
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

STATS_VERSION = 1

RECENT_ANSWERS = 64
"""Answers an accept may still name: an editor may run the command after the next answer."""

LOCK_WAIT_S = 2.0
"""The longest a write waits for another process's; past it, the counts wait for the next."""


@dataclass
class Counts:
    """One row of the figures."""

    shown: int = 0
    accepted: int = 0
    dismissed: int = 0
    accepted_chars: int = 0

    def add(self, other: Counts) -> None:
        for name in ("shown", "accepted", "dismissed", "accepted_chars"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, int]:
        return {
            "shown": self.shown,
            "accepted": self.accepted,
            "dismissed": self.dismissed,
            "acceptedChars": self.accepted_chars,
        }

    @classmethod
    def from_json(cls, raw: Any) -> Counts:
        if not isinstance(raw, dict):
            raise ValueError("a row is not an object")
        values = [raw.get(key, 0) for key in ("shown", "accepted", "dismissed", "acceptedChars")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError("a count is not a non-negative integer")
        return cls(*values)


Table = dict[str, dict[str, Counts]]
"""Counts by language, then by backend."""


def _merge(into: Table, table: Table) -> None:
    for language, backends in table.items():
        for backend, counts in backends.items():
            into.setdefault(language, {}).setdefault(backend, Counts()).add(counts)


def table_to_json(table: Table) -> dict[str, Any]:
    """The totals, then the same per language, each with its backends."""
    total = Counts()
    languages: dict[str, Any] = {}
    for language in sorted(table):
        per_language = Counts()
        backends = {}
        for backend in sorted(table[language]):
            counts = table[language][backend]
            per_language.add(counts)
            backends[backend] = counts.to_json()
        total.add(per_language)
        languages[language] = {**per_language.to_json(), "backends": backends}
    return {**total.to_json(), "languages": languages}


def _table_from_file(raw: Any) -> Table:
    if not isinstance(raw, dict) or raw.get("version") != STATS_VERSION:
        raise ValueError(f"not a version {STATS_VERSION} stats file")
    languages = raw.get("languages")
    if not isinstance(languages, dict):
        raise ValueError("no languages")
    table: Table = {}
    for language, per_language in languages.items():
        backends = per_language.get("backends") if isinstance(per_language, dict) else None
        if not isinstance(backends, dict):
            raise ValueError(f"no backends for {language!r}")
        table[language] = {b: Counts.from_json(c) for b, c in backends.items()}
    return table


def default_stats_path() -> Path:
    """``$XDG_STATE_HOME/codegeex2-lsp/stats.json``, by default under ``~/.local/state``."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "codegeex2-lsp" / "stats.json"


def read_stats(path: Path) -> Table:
    """The counts in the file; empty when there is none. Raises ValueError if it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(str(error)) from error
    try:
        return _table_from_file(json.loads(text))
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from error


class StatsStore:
    """The counts in the file plus those not written yet; writes merge with other processes'."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_stats_path()
        self._lock = threading.Lock()
        self._unsaved: Table = {}
        self._failed = False
        self._saved = self._read()

    def _read(self) -> Table:
        """The file's counts; one that cannot be read is set aside, once, and counting restarts."""
        try:
            return read_stats(self.path)
        except ValueError as problem:
            aside = self.path.with_name(self.path.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.warning(
                "the acceptance counts in %s cannot be read (%s); counting starts afresh, the old "
                "file is kept as %s",
                self.path,
                problem,
                aside,
            )
            return {}

    def add(self, language: str, backend: str, counts: Counts) -> None:
        with self._lock:
            _merge(self._unsaved, {language: {backend: counts}})

    def table(self) -> Table:
        """Every count: what was read from the file, and what this process counted since."""
        with self._lock:
            table: Table = {}
            _merge(table, self._saved)
            _merge(table, self._unsaved)
            return table

    def flush(self) -> None:
        """Add what was counted since the last write to the file; blocking, so never on the
        event loop but on exit."""
        with self._lock:
            unsaved, self._unsaved = self._unsaved, {}
        if not unsaved:
            return
        try:
            with self._file_lock():
                merged = self._read()
                _merge(merged, unsaved)
                for backends in merged.values():
                    for counts in backends.values():
                        # An accept can take back a dismissal the file no longer holds.
                        counts.dismissed = max(counts.dismissed, 0)
                self._write(merged)
        except OSError as error:
            with self._lock:
                _merge(self._unsaved, unsaved)
            if not self._failed:
                self._failed = True
                log.warning("cannot write the acceptance counts to %s: %s", self.path, error)
            return
        with self._lock:
            self._saved = merged

    def _write(self, table: Table) -> None:
        payload = {"version": STATS_VERSION, **table_to_json(table)}
        descriptor, temporary = tempfile.mkstemp(prefix=".stats-", dir=self.path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                json.dump(payload, out, indent=1, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Exclusive among this user's servers while one reads, adds and writes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            if fcntl is not None:
                deadline = time.monotonic() + LOCK_WAIT_S
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise OSError("another server holds the lock") from None
                        time.sleep(0.01)
            yield


@dataclass
class _Answer:
    """One answer's suggestions by id, and what became of them."""

    uri: str
    language: str
    backend: str
    texts: dict[str, str]
    outcome: str = "shown"


@dataclass
class Acceptance:
    """Counts answers as they are shown, accepted and superseded.

    ``changed`` is called after each change, so the owner can schedule a write.
    """

    store: StatsStore
    changed: Callable[[], None] = lambda: None
    _newest: dict[str, _Answer] = field(default_factory=dict)
    _recent: OrderedDict[str, _Answer] = field(default_factory=OrderedDict)
    _prefix: str = field(default_factory=lambda: secrets.token_hex(4))
    _serial: int = 0

    def shown(self, uri: str, language: str, backend: str, texts: list[str]) -> list[str]:
        """Count an answer for ``uri``; the ids its items carry, in order."""
        self._supersede(uri)
        if not texts:
            return []
        ids = []
        for _ in texts:
            self._serial += 1
            ids.append(f"{self._prefix}-{self._serial}")
        answer = _Answer(uri, language, backend, dict(zip(ids, texts, strict=True)))
        self._newest[uri] = answer
        for suggestion_id in ids:
            self._recent[suggestion_id] = answer
        while len(self._recent) > RECENT_ANSWERS:
            self._recent.popitem(last=False)
        self._count(answer, Counts(shown=1))
        return ids

    def accept(self, suggestion_id: str) -> bool:
        """Count the suggestion as taken; False when the id names no recent suggestion."""
        answer = self._recent.get(suggestion_id)
        if answer is None:
            return False
        if answer.outcome != "accepted":
            # Superseded before the accept arrived: it was taken after all.
            dismissed = 1 if answer.outcome == "dismissed" else 0
            answer.outcome = "accepted"
            chars = len(answer.texts[suggestion_id])
            self._count(answer, Counts(accepted=1, dismissed=-dismissed, accepted_chars=chars))
        return True

    def forget(self, uri: str) -> None:
        """The document closed: what it showed and nobody took was dismissed."""
        self._supersede(uri)

    def _supersede(self, uri: str) -> None:
        answer = self._newest.pop(uri, None)
        if answer is not None and answer.outcome == "shown":
            answer.outcome = "dismissed"
            self._count(answer, Counts(dismissed=1))

    def _count(self, answer: _Answer, counts: Counts) -> None:
        self.store.add(answer.language, answer.backend, counts)
        self.changed()

    def summary(self) -> dict[str, Any]:
        """Every count, in the shape ``codegeex2-lsp stats --json`` prints."""
        return table_to_json(self.store.table())
