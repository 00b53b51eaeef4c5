"""Fixtures shared by the editor tests: the sample file and what the server suggests there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from editor_harness import (
    EDITOR_TIMEOUT_S,
    SAMPLE,
    SAMPLE_CHARACTER,
    SAMPLE_LINE,
    Sample,
)


@pytest.fixture(scope="session")
def sample_file(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """The sample written once per test session; editors must not save over it."""
    path = tmp_path_factory.mktemp("project") / "sample.py"
    path.write_text(SAMPLE, encoding="utf-8")
    return Sample(path=path, line=SAMPLE_LINE, character=SAMPLE_CHARACTER)


@pytest.fixture(scope="session")
def expected_suggestion(tiny_model_dir: Path, sample_file: Sample) -> str:
    """What ``codegeex2-lsp complete`` prints at the sample position: the editors must agree."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "codegeex2_lsp",
            "complete",
            str(sample_file.path),
            "--line",
            str(sample_file.line),
            "--character",
            str(sample_file.character),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=EDITOR_TIMEOUT_S,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip(), (
        "the tiny model suggests nothing at the sample position; pick another one in "
        f"editor_harness.py\n{completed.stderr}"
    )
    # complete ends its output with a newline of its own.
    return completed.stdout.removesuffix("\n")
