"""Whether a document may get suggestions at all: the user's switch, languages and exclusions.

The server asks before anything of the document is read into a prompt, so a file the user
excluded never reaches a model or a server, and a language or a server switched off costs
no model work. :func:`is_excluded` is the one rule for files: anything else that reads files
for a prompt asks it too.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import unquote, urlsplit

import pathspec

from codegeex2_lsp.completion.languages import canonical_language_id
from codegeex2_lsp.settings.fields import DEFAULT_DISABLED_LANGUAGES, Settings

log = logging.getLogger(__name__)


def file_path(uri_or_path: str) -> str | None:
    """The normalized POSIX path of a ``file:`` URI or a path; None for other URI schemes."""
    parts = urlsplit(uri_or_path)
    if len(parts.scheme) > 1:
        if parts.scheme != "file":
            return None
        path = unquote(parts.path)
    else:
        path = uri_or_path
    return posixpath.normpath(path) if path else None


@lru_cache(maxsize=8)
def _specs(patterns: tuple[str, ...]) -> tuple[pathspec.GitIgnoreSpec, pathspec.GitIgnoreSpec]:
    """The patterns split into those relative to a workspace folder and the absolute ones.

    A pattern is absolute when it starts with ``/`` or ``~/``; a ``!`` in front re-includes
    what the patterns of the same kind excluded.
    """
    relative: list[str] = []
    absolute: list[str] = []
    home = os.path.expanduser("~")
    for pattern in patterns:
        negation = "!" if pattern.startswith("!") else ""
        body = pattern.removeprefix("!")
        if body.startswith("~/"):
            body = home.rstrip("/") + body[1:]
        if body.startswith("/"):
            absolute.append(negation + body)
        else:
            relative.append(pattern)
    return (
        pathspec.GitIgnoreSpec.from_lines(relative),
        pathspec.GitIgnoreSpec.from_lines(absolute),
    )


def is_excluded(uri_or_path: str, settings: Settings, workspace_folders: Iterable[str]) -> bool:
    """Whether the ``exclude`` setting keeps this file from every prompt and every request.

    ``uri_or_path`` is a ``file:`` URI, an absolute path, or a path relative to the workspace
    folder; ``workspace_folders`` are the folders' URIs or paths. Relative patterns apply within
    the innermost folder that holds the file; outside every folder, to the path from ``/``, so
    patterns without a slash (``.env``, ``*.pem``) and ``**/`` patterns apply everywhere.
    Documents that are not files (``untitled:``) are never excluded: they have no name to match.
    """
    path = file_path(uri_or_path)
    if path is None:
        return False
    relative_spec, absolute_spec = _specs(settings.exclude)
    if not posixpath.isabs(path):
        return relative_spec.match_file(path)
    folders = [f for f in (file_path(folder) for folder in workspace_folders) if f]
    holders = [f for f in folders if path.startswith(f.rstrip("/") + "/")]
    base = max(holders, key=len) if holders else "/"
    if relative_spec.match_file(posixpath.relpath(path, base)):
        return True
    return absolute_spec.match_file(path.lstrip("/"))


@lru_cache(maxsize=8)
def _canonical(language_ids: tuple[str, ...]) -> frozenset[str]:
    """The ids as given (lower case) and their canonical forms, so "py" also turns off Python."""
    canonical = {canonical_language_id(language_id) for language_id in language_ids}
    return frozenset(language_ids) | {c for c in canonical if c is not None}


def _document_ids(language_id: str, uri: str) -> set[str]:
    """The ids a document goes by: the editor's own, and the canonical one."""
    ids = {language_id.lower()}
    canonical = canonical_language_id(language_id, uri)
    if canonical is not None:
        ids.add(canonical)
    return ids


class Gate:
    """The settings with the toggles on top, deciding which requests may reach the model.

    A toggle holds until the setting it overrides changes: editors send their whole section
    whenever any setting changes, and that must not undo a toggle the user just made.
    """

    def __init__(self) -> None:
        self._enabled: bool | None = None
        self._languages: dict[str, bool] = {}
        self._unknown_logged: set[str] = set()

    def settings_changed(self, old: Settings, new: Settings) -> None:
        """Drop the toggles the new settings decide again; log unknown language ids once."""
        if old.enable != new.enable:
            self._enabled = None
        for language_id in list(self._languages):
            was = language_id in old.disabled_languages
            if was != (language_id in new.disabled_languages):
                del self._languages[language_id]
        for language_id in new.disabled_languages:
            known = language_id in DEFAULT_DISABLED_LANGUAGES or canonical_language_id(language_id)
            if not known and language_id not in self._unknown_logged:
                self._unknown_logged.add(language_id)
                log.warning(
                    "disabledLanguages: %r is not a language id this server knows; it is kept "
                    "for editors that use it",
                    language_id,
                )

    def enabled(self, settings: Settings) -> bool:
        """Whether suggestions are on at all."""
        return settings.enable if self._enabled is None else self._enabled

    def language_enabled(self, settings: Settings, language_id: str, uri: str = "") -> bool:
        """Whether a document of this language gets suggestions (the switch aside)."""
        ids = _document_ids(language_id, uri)
        toggled = [self._languages[i] for i in ids if i in self._languages]
        if toggled:
            return all(toggled)
        return not ids & _canonical(settings.disabled_languages)

    def disabled_languages(self, settings: Settings) -> list[str]:
        """The language ids switched off now, toggles included."""
        off = {i for i in settings.disabled_languages if self._languages.get(i, False) is False}
        off |= {i for i, on in self._languages.items() if not on}
        return sorted(off)

    def toggle(self, settings: Settings, language_id: str | None = None) -> bool:
        """Flip suggestions everywhere, or for one language; the new state."""
        if language_id is None:
            self._enabled = not self.enabled(settings)
            return self._enabled
        key = language_id.lower()
        on = not self.language_enabled(settings, key)
        self._languages[key] = on
        return on

    def refusal(
        self, settings: Settings, uri: str, language_id: str, workspace_folders: Iterable[str]
    ) -> str | None:
        """Why this document gets no suggestion now, or None when it may have one."""
        if not self.enabled(settings):
            return "suggestions are off"
        if not self.language_enabled(settings, language_id, uri):
            return f"suggestions are off for {language_id}"
        if is_excluded(uri, settings, workspace_folders):
            return "the file is excluded"
        return None
