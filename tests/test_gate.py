"""Where suggestions may appear: the exclusion rule for files, languages, and the toggles."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest

from codegeex2_lsp.completion.gate import Gate, is_excluded
from codegeex2_lsp.settings.fields import Settings
from codegeex2_lsp.settings.sources import apply_updates

FOLDER = "file:///work/project"
DEFAULTS = Settings()


@pytest.mark.parametrize(
    "name",
    [
        ".env",
        ".env.production",
        "deploy/server.pem",
        "tls/server.key",
        "keys/id_rsa",
        "keys/id_ed25519.pub",
        "certs/client.p12",
        "certs/client.pfx",
        "android/release.keystore",
        "android/release.jks",
        "vault.kdbx",
        ".npmrc",
        ".pypirc",
        ".netrc",
        ".pgpass",
        ".git-credentials",
        "public/.htpasswd",
        "gcp/credentials.json",
        "home/.ssh/config",
        "home/.aws/credentials",
        "home/.gnupg/pubring.kbx",
        "config/secrets/database.yml",
    ],
)
def test_common_secret_files_are_excluded_by_default(name: str) -> None:
    assert is_excluded(f"{FOLDER}/{name}", DEFAULTS, [FOLDER])
    # Outside every workspace folder the same files are still kept out.
    assert is_excluded(f"/elsewhere/{name}", DEFAULTS, [FOLDER])


@pytest.mark.parametrize(
    "name", ["app.py", "src/env.py", ".envrc", "keys.py", "docs/secrets.md", "monkey.ts"]
)
def test_ordinary_files_are_not(name: str) -> None:
    assert not is_excluded(f"{FOLDER}/{name}", DEFAULTS, [FOLDER])


def test_patterns_are_relative_to_the_innermost_folder_or_absolute() -> None:
    settings = dataclasses.replace(
        Settings(), exclude=("generated/*.py", "/etc/**", "~/notes/**", "*.pem", "!keep.pem")
    )
    folders = [FOLDER, f"{FOLDER}/sub"]
    assert is_excluded(f"{FOLDER}/generated/a.py", settings, folders)
    assert is_excluded(f"{FOLDER}/sub/generated/a.py", settings, folders)
    assert not is_excluded(f"{FOLDER}/src/generated/a.py", settings, folders)
    assert is_excluded("/etc/hosts", settings, folders)
    assert is_excluded(os.path.expanduser("~/notes/plan.py"), settings, folders)
    assert is_excluded(f"{FOLDER}/a.pem", settings, folders)
    assert not is_excluded(f"{FOLDER}/keep.pem", settings, folders)
    # A relative path is taken as relative to the workspace folder.
    assert is_excluded("generated/b.py", settings, [])


def test_uris_are_decoded_and_normalized_before_matching() -> None:
    assert is_excluded(f"{FOLDER}/src/../%2Eenv", DEFAULTS, [FOLDER])
    assert is_excluded("file:///work/project/my%20keys/a.pem", DEFAULTS, [FOLDER])


def test_documents_without_a_file_are_never_excluded() -> None:
    assert not is_excluded("untitled:Untitled-1", DEFAULTS, [FOLDER])
    assert not is_excluded(
        "file:///work/project/.env", dataclasses.replace(DEFAULTS, exclude=()), [FOLDER]
    )


def test_invalid_pattern_is_named_and_the_previous_value_stays() -> None:
    update = apply_updates(DEFAULTS, {"exclude": ["*.secret", "trailing\\"]})
    assert update.settings.exclude == DEFAULTS.exclude
    (error,) = update.errors
    assert "codegeex2.exclude" in error and "'trailing\\\\'" in error


def test_language_ids_are_checked_as_a_list_of_strings() -> None:
    assert apply_updates(DEFAULTS, {"disabledLanguages": "python"}).errors
    assert apply_updates(DEFAULTS, {"disabledLanguages": [1]}).errors
    update = apply_updates(DEFAULTS, {"disabledLanguages": ["Python", "python", "Rust"]})
    assert update.settings.disabled_languages == ("python", "rust")


def test_default_languages_are_off_and_code_is_on() -> None:
    gate = Gate()
    for language_id in DEFAULTS.disabled_languages:
        assert not gate.language_enabled(DEFAULTS, language_id)
    assert gate.language_enabled(DEFAULTS, "python")
    # The canonical id decides too: a plain-text document named README.md is Markdown.
    settings = dataclasses.replace(DEFAULTS, disabled_languages=("markdown",))
    assert not gate.language_enabled(settings, "plaintext", "file:///w/README.md")


def test_toggles_flip_and_hold_until_their_setting_changes() -> None:
    gate = Gate()
    settings = DEFAULTS
    assert gate.refusal(settings, f"{FOLDER}/a.py", "python", [FOLDER]) is None
    assert gate.toggle(settings, "python") is False
    assert gate.refusal(settings, f"{FOLDER}/a.py", "python", [FOLDER]) is not None
    assert "python" in gate.disabled_languages(settings)
    assert gate.toggle(settings, "markdown") is True
    assert "markdown" not in gate.disabled_languages(settings)
    assert gate.toggle(settings) is False
    assert gate.refusal(settings, f"{FOLDER}/a.rs", "rust", [FOLDER]) == "suggestions are off"

    # The editor sends its whole section again for an unrelated change: the toggles hold.
    resent = dataclasses.replace(settings, max_new_tokens=32)
    gate.settings_changed(settings, resent)
    assert not gate.enabled(resent)
    assert not gate.language_enabled(resent, "python")

    # The user changes the settings the toggles override: the settings decide again.
    changed = dataclasses.replace(resent, enable=False, disabled_languages=("python",))
    gate.settings_changed(resent, changed)
    assert not gate.enabled(changed)
    again = dataclasses.replace(changed, enable=True, disabled_languages=())
    gate.settings_changed(changed, again)
    assert gate.enabled(again)
    assert gate.language_enabled(again, "python")
    assert gate.language_enabled(again, "markdown")


def test_an_excluded_file_is_refused_even_when_its_language_is_on() -> None:
    reason = Gate().refusal(DEFAULTS, f"{FOLDER}/.env", "python", [FOLDER])
    assert reason == "the file is excluded"


def test_unknown_language_ids_are_kept_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate()
    caplog.set_level(logging.WARNING, logger="codegeex2_lsp.completion.gate")
    first = dataclasses.replace(DEFAULTS, disabled_languages=("python", "my-own-dsl"))
    gate.settings_changed(DEFAULTS, first)
    gate.settings_changed(first, dataclasses.replace(first, max_new_tokens=8))
    gate.settings_changed(first, first)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "'my-own-dsl'" in messages[0]
    assert not gate.language_enabled(first, "my-own-dsl")
