"""The VS Code extension contributes exactly the server's settings, documented the same way.

VS Code validates and documents settings from ``package.json`` alone, so a setting added to the
server but not there, or a default that drifted, would be invisible or wrong for users.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codegeex2_lsp.settings.fields import SECTION, SETTINGS, USER_ONLY, SettingSpec

PACKAGE_JSON = Path(__file__).resolve().parents[2] / "editors" / "vscode" / "package.json"

# Settings of the extension itself: how to start the server, and what the client does.
LAUNCH = {"serverCommand", "pythonPath", "serverEnv"}
CLIENT_ONLY = LAUNCH | {"popupCompletions", "trace.server"}


def _manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(PACKAGE_JSON.read_text(encoding="utf-8"))
    return manifest


def _properties() -> dict[str, dict[str, Any]]:
    properties: dict[str, dict[str, Any]] = _manifest()["contributes"]["configuration"][
        "properties"
    ]
    return properties


def _server_properties() -> dict[str, dict[str, Any]]:
    prefix = SECTION + "."
    found = {}
    for name, schema in _properties().items():
        assert name.startswith(prefix), f"{name} is outside the {SECTION} section"
        key = name.removeprefix(prefix)
        if key not in CLIENT_ONLY:
            found[key] = schema
    return found


def test_contributes_exactly_the_server_settings() -> None:
    assert sorted(_server_properties()) == sorted(spec.key for spec in SETTINGS)


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.key)
def test_setting_matches_the_server(spec: SettingSpec) -> None:
    schema = _server_properties()[spec.key]
    assert schema["type"] == spec.kind
    assert schema["default"] == spec.default
    # The same one-line text as the server's --help, so the two never tell different stories.
    assert schema["description"] == spec.description
    assert tuple(schema.get("enum", ())) == spec.choices
    assert schema.get("pattern") == spec.pattern
    # JSON Schema writes an open lower bound as exclusiveMinimum.
    low = "exclusiveMinimum" if spec.open_minimum else "minimum"
    assert schema.get(low) == spec.minimum
    assert schema.get("maximum") == spec.maximum


def test_client_only_settings_are_documented() -> None:
    properties = _properties()
    for key in CLIENT_ONLY:
        schema = properties[f"{SECTION}.{key}"]
        assert schema.get("description") or schema.get("markdownDescription"), key


def test_a_workspace_cannot_choose_the_program_or_where_code_goes() -> None:
    """What runs, what is loaded and where code and the key go are machine-scoped (a
    workspace's settings.json cannot set them) and restricted in untrusted workspaces; the
    rest stays settable per workspace."""
    user_only = LAUNCH | set(USER_ONLY)
    for name, schema in _properties().items():
        key = name.removeprefix(SECTION + ".")
        if key in user_only:
            assert schema.get("scope") in ("machine", "application"), key
        else:
            assert schema.get("scope") not in ("machine", "application"), key
    untrusted = _manifest()["capabilities"]["untrustedWorkspaces"]
    assert untrusted["supported"] == "limited"
    assert sorted(untrusted["restrictedConfigurations"]) == sorted(
        f"{SECTION}.{key}" for key in user_only
    )
