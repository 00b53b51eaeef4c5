"""Emacs 28+ in batch mode with editors/emacs on the load path, through eglot and lsp-mode.

Each client gets its own Emacs and server, as a user runs one or the other. The driver
completes through `completion-at-point-functions` and inserts the first candidate the way
`completion-at-point` does, so the buffer shows what the user would get.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from editor_harness import EDITORS, HERE, EditorRun, Sample, find_editor, make_session

pytestmark = [pytest.mark.editor, pytest.mark.slow]

MINIMUM = (28, 1)


def emacs_version(emacs: str) -> tuple[int, int]:
    """Major and minor version, so an older Emacs fails with a clear message."""
    first = subprocess.run(
        [emacs, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()[0]
    major, minor = first.split()[-1].split(".")[:2]
    return int(major), int(minor)


def run_emacs(directory: Path, model: Path, sample: Sample, client: str) -> EditorRun:
    """Batch Emacs (no init file, a clean home) loading the set-up and the test driver."""
    emacs = find_editor("emacs")
    version = emacs_version(emacs)
    assert version >= MINIMUM, f"Emacs {version} is too old: run .ci/install-editors"
    session = make_session(directory, model, sample)
    session.env["CODEGEEX2_TEST_CLIENT"] = client
    run = session.run(
        [
            emacs,
            "--batch",
            "-L",
            str(EDITORS / "emacs"),
            "-l",
            str(HERE / "emacs_driver.el"),
        ]
    )
    if "Cannot open load file" in str(run.result.get("error")):
        pytest.fail(f"{client} is not installed: run .ci/install-editors\n{run.explain()}")
    return run


def check_toggles(run: EditorRun) -> None:
    """codegeex2-lsp-toggle turns suggestions off (no model work) and on, everywhere and for
    the buffer's language; codegeex2-lsp-status reports the switch."""
    result = run.result
    assert result.get("error") is None, run.explain()
    assert result["toggle_off"] is False, run.explain()
    assert result["served_when_off"] == 0
    assert result["status_enabled"] is False
    assert result["toggle_on"] is True
    assert result["language_off"] is False
    assert result["served_when_language_off"] == 0
    assert "python" in result["disabled"]
    assert result["language_on"] is True
    assert result["served_when_on"] == 1


def test_eglot_completion_at_point(
    tmp_path: Path, tiny_model_dir: Path, sample_file: Sample, expected_suggestion: str
) -> None:
    """`eglot-ensure` in a Python buffer starts the server; completing inserts the suggestion."""
    run = run_emacs(tmp_path, tiny_model_dir, sample_file, "eglot")
    result = run.result
    assert result.get("error") is None, run.explain()
    assert result["mode"] == "python-mode"
    assert result["capf"] == "eglot-completion-at-point", run.explain()
    assert result["buffer"] == sample_file.with_inserted(expected_suggestion), run.explain()
    # Eglot 1.9 runs no command when a completion is inserted: nothing is counted.
    assert result["accepted"] == 0
    check_toggles(run)


def test_lsp_mode_completion(
    tmp_path: Path, tiny_model_dir: Path, sample_file: Sample, expected_suggestion: str
) -> None:
    """`lsp` starts the add-on client; inline requests and completion-at-point both agree."""
    run = run_emacs(tmp_path, tiny_model_dir, sample_file, "lsp-mode")
    result = run.result
    assert result.get("error") is None, run.explain()
    assert result["mode"] == "python-mode"
    assert result["inline"] == expected_suggestion, run.explain()
    assert result["capf"] == "lsp-completion-at-point", run.explain()
    assert result["buffer"] == sample_file.with_inserted(expected_suggestion), run.explain()
    # lsp-mode runs the inserted item's codegeex2.accept.
    assert result["accepted"] == 1, run.explain()
    check_toggles(run)
