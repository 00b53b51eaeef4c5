"""Applying settings from each source: defaults, then command-line flags, then
``initializationOptions``, then ``workspace/didChangeConfiguration`` (section ``codegeex2``).

Every source goes through :func:`apply_updates`, so a value is checked the same way wherever it
came from, and a bad value never replaces a good one.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from codegeex2_lsp.settings.fields import (
    MIN_PROMPT_TOKENS,
    SECTION,
    SETTINGS,
    SETTINGS_BY_KEY,
    LoadSpec,
    Settings,
    SettingSpec,
)

_FLAG_BOOLEANS = {"true": True, "on": True, "false": False, "off": False}


@dataclass(frozen=True)
class Update:
    """The result of applying one source of settings: the new settings and what to tell the user."""

    settings: Settings
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def apply_updates(
    settings: Settings, raw: Mapping[str, Any] | None, *, fixed: tuple[str, ...] = ()
) -> Update:
    """Apply the camelCase keys of ``raw`` on top of ``settings``.

    A value that fails its check is reported and the previous value stays; an unknown key is
    reported as a warning and ignored, so a typo never stops the server. A change of a field in
    ``fixed`` (one this source may not change) is reported, and the field keeps its value.
    """
    if raw is None:
        return Update(settings)
    if not isinstance(raw, Mapping):
        return Update(settings, errors=(f"settings must be an object, got {type(raw).__name__}",))
    changes: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for key, value in raw.items():
        spec = SETTINGS_BY_KEY.get(key)
        if spec is None:
            warnings.append(f"unknown setting {key!r} ignored")
            continue
        if value is None:
            continue
        try:
            checked = spec.check(value)
        except ValueError as allowed:
            errors.append(f"{SECTION}.{key}: {value!r} is not valid; expected {allowed}")
            continue
        if spec.field in fixed and checked != getattr(settings, spec.field):
            errors.append(
                f"{SECTION}.{key}: the change to {checked!r} applies only when the language "
                "server restarts: it decides where code and the API key go, so it is taken from "
                "the editor's start-up settings only"
            )
            continue
        changes[spec.field] = checked
    candidate = dataclasses.replace(settings, **changes)
    if candidate.prompt_budget() < MIN_PROMPT_TOKENS:
        errors.append(
            f"{SECTION}.maxNewTokens ({candidate.max_new_tokens}) leaves too little of "
            f"{SECTION}.maxContextTokens ({candidate.max_context_tokens}) for the prompt; "
            "keep maxNewTokens at most maxContextTokens - 18"
        )
        for field in ("max_context_tokens", "max_new_tokens"):
            changes.pop(field, None)
        candidate = dataclasses.replace(settings, **changes)
    return Update(candidate, tuple(errors), tuple(warnings))


def section_from_configuration(raw: Any) -> Mapping[str, Any] | None:
    """Find our section in a ``didChangeConfiguration`` payload.

    Clients differ: VS Code sends ``{"codegeex2": {...}}``, some send the section's own object,
    others send settings for every server at once. Only a payload that names our section, or
    that uses our keys, is taken.
    """
    if not isinstance(raw, Mapping):
        return None
    section = raw.get(SECTION)
    if isinstance(section, Mapping):
        return section
    if any(key in SETTINGS_BY_KEY for key in raw):
        return raw
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A kebab-case flag for every setting; unset flags stay None so they override nothing."""
    group = parser.add_argument_group("settings (the same as the LSP settings)")
    for spec in SETTINGS:
        metavar = spec.metavar or ("|".join(spec.choices) if spec.choices else spec.kind.upper())
        group.add_argument(
            spec.flag,
            dest=spec.field,
            metavar=metavar,
            default=None,
            type=_flag_type(spec),
            help=f"{spec.description} (default: {spec.default})",
        )


def _flag_type(spec: SettingSpec) -> Callable[[str], Any]:
    if spec.kind == "integer":
        return int
    if spec.kind == "number":
        return float
    if spec.kind == "array":
        # Comma-separated; an empty argument is the empty list.
        return lambda text: [part.strip() for part in text.split(",") if part.strip()]
    if spec.kind == "boolean":
        # An unknown word stays a string, which the check reports like any bad value.
        return lambda text: _FLAG_BOOLEANS.get(text.lower(), text)
    return str


_SETTINGS_BY_FIELD = {spec.field: spec for spec in SETTINGS}


def to_arguments(values: Settings | LoadSpec, fields: Iterable[str]) -> list[str]:
    """The flags that set ``fields`` to their values in ``values``, for a process started with
    this package's command line: :func:`add_arguments` and :func:`from_arguments` read them back
    as they were.

    Each flag and its value are one argument (``--model=PATH``), so a value that starts with a
    dash is never taken for a flag.
    """
    arguments = []
    for field in fields:
        spec = _SETTINGS_BY_FIELD[field]
        arguments.append(f"{spec.flag}={_flag_text(spec, getattr(values, field))}")
    return arguments


def _flag_text(spec: SettingSpec, value: Any) -> str:
    """``value`` as :func:`_flag_type` reads it back."""
    if spec.kind == "boolean":
        return "true" if value else "false"
    if spec.kind == "number":
        return repr(float(value))
    if spec.kind == "array":
        if any("," in item for item in value):
            raise ValueError(f"{spec.flag} takes its items comma-separated: {value!r}")
        return ",".join(value)
    return str(value)


_SETTING_NAME = re.compile(r"\bcodegeex2\.([A-Za-z]+)\b")


def for_command_line(text: str) -> str:
    """``text`` with each setting named by its flag: ``codegeex2.model`` reads ``--model``.

    Messages name settings as the editor knows them; on the command line the user sets flags.
    """

    def flag(match: re.Match[str]) -> str:
        spec = SETTINGS_BY_KEY.get(match.group(1))
        return spec.flag if spec is not None else match.group(0)

    return _SETTING_NAME.sub(flag, text)


def from_arguments(namespace: argparse.Namespace, base: Settings | None = None) -> Update:
    """Settings from parsed flags, checked like any other source."""
    raw = {
        spec.key: getattr(namespace, spec.field)
        for spec in SETTINGS
        if getattr(namespace, spec.field, None) is not None
    }
    return apply_updates(base or Settings(), raw)
