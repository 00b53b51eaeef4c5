"""Which files of a workspace may be read, and reading them safely.

A file is read only when ``.gitignore`` allows it, it is a regular file within the size limit,
and it looks like text: a NUL byte or invalid UTF-8 means it is skipped, not decoded with
replacement characters the model would then learn from. Every problem (a folder that vanished,
a symlink loop, a file the user may not read) ends in a log line and the walk goes on.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pathspec

log = logging.getLogger(__name__)

Excluded = Callable[[Path], bool]
"""Says whether the user's settings exclude a file; called once per file found."""

SKIPPED_DIRECTORIES = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv"})
"""Folders never walked: version control internals and installed dependencies, which a
``.gitignore`` usually names but not always, and which would fill the file limit on their own."""

SNIFF_BYTES = 8192
"""A NUL byte within the first this many bytes marks a file as binary (as git decides)."""


@dataclass(frozen=True)
class Limits:
    """How much of a workspace is looked at: large files and huge trees cost memory and time
    for snippets that would rarely be chosen."""

    max_files: int = 20000
    max_file_bytes: int = 1 << 20


DEFAULT_LIMITS = Limits()


def _never(path: Path) -> bool:
    return False


def _ignore_spec(directory: Path) -> pathspec.PathSpec | None:
    """The patterns of ``directory``'s own ``.gitignore``, or None when it has none."""
    try:
        text = (directory / ".gitignore").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as error:
        log.info("context: cannot read %s/.gitignore: %s", directory, error)
        return None
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())


def _ignored(path: Path, is_dir: bool, specs: list[tuple[Path, pathspec.PathSpec]]) -> bool:
    """Whether the ``.gitignore`` files above ``path`` exclude it; deeper files decide last, as
    git's do, so a nested ``!pattern`` can take back a parent's exclusion."""
    ignored = False
    for base, spec in specs:
        relative = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        result = spec.check_file(relative)
        if result.include is not None:
            ignored = bool(result.include)
    return ignored


def walk(
    root: Path, *, limits: Limits = DEFAULT_LIMITS, excluded: Excluded = _never
) -> Iterator[Path]:
    """The files under ``root`` that may be read, at most ``limits.max_files`` of them.

    Symlinked folders are followed once: a folder whose real path was seen already (a loop, or
    a second link to the same tree) is skipped with a log line.
    """
    seen_dirs: set[tuple[int, int]] = set()
    count = 0
    stack: list[tuple[Path, list[tuple[Path, pathspec.PathSpec]]]] = [(root, [])]
    while stack:
        directory, specs = stack.pop()
        try:
            info = directory.stat()
        except OSError as error:
            log.info("context: cannot read folder %s: %s", directory, error)
            continue
        identity = (info.st_dev, info.st_ino)
        if identity in seen_dirs:
            log.info("context: skipping %s, a link to a folder already read (a loop?)", directory)
            continue
        seen_dirs.add(identity)
        own = _ignore_spec(directory)
        if own is not None:
            specs = [*specs, (directory, own)]
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            log.info("context: cannot list folder %s: %s", directory, error)
            continue
        subdirectories: list[Path] = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError as error:
                log.info("context: cannot read %s: %s", path, error)
                continue
            if is_dir:
                if entry.name not in SKIPPED_DIRECTORIES and not _ignored(path, True, specs):
                    subdirectories.append(path)
                continue
            if not is_file or _ignored(path, False, specs) or excluded(path):
                continue
            if count >= limits.max_files:
                log.info("context: stopped at %d files in %s", limits.max_files, root)
                return
            count += 1
            yield path
        stack.extend((subdirectory, specs) for subdirectory in reversed(subdirectories))


def ignored_by_git(path: Path, root: Path) -> bool:
    """Whether the ``.gitignore`` files between ``root`` and ``path`` exclude ``path``, for a
    single file reported by the editor rather than found by :func:`walk`."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return True
    if any(part in SKIPPED_DIRECTORIES for part in parts[:-1]):
        return True
    specs: list[tuple[Path, pathspec.PathSpec]] = []
    directory = root
    for part in ("", *parts[:-1]):
        directory = directory / part if part else directory
        own = _ignore_spec(directory)
        if own is not None:
            specs.append((directory, own))
        if directory != root and _ignored(directory, True, specs):
            return True
    return _ignored(path, False, specs)


def read_source(path: Path, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """The text of ``path``, or None when it is not a regular file, too large, binary or not
    UTF-8; the size is checked before anything is read."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > limits.max_file_bytes:
            return None
        with path.open("rb") as file:
            data = file.read(limits.max_file_bytes + 1)
    except OSError as error:
        log.info("context: cannot read %s: %s", path, error)
        return None
    if len(data) > limits.max_file_bytes or b"\0" in data[:SNIFF_BYTES]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
