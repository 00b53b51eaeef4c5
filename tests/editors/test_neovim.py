"""Neovim 0.11+, headless, with editors/neovim on the runtimepath as a user would add it.

One Neovim session serves both tests, as the model loads once per server: the inline
request and the completion menu each check what the user would get at the sample position.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from editor_harness import EDITORS, HERE, EditorRun, Sample, find_editor, make_session

pytestmark = [pytest.mark.editor, pytest.mark.slow]

MINIMUM = (0, 11)


def neovim_version(nvim: str) -> tuple[int, int]:
    """Major and minor version, so an older Neovim fails with a clear message."""
    first = subprocess.run(
        [nvim, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()[0]
    major, minor = first.removeprefix("NVIM v").split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="module")
def neovim_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, sample_file: Sample
) -> EditorRun:
    """Neovim with only the project's set-up: no user config, a clean home and data dirs."""
    nvim = find_editor("nvim")
    version = neovim_version(nvim)
    assert version >= MINIMUM, f"Neovim {version} is too old: run .ci/install-editors"
    session = make_session(tmp_path_factory.mktemp("neovim"), tiny_model_dir, sample_file)
    return session.run(
        [
            nvim,
            "--headless",
            "--clean",
            "--cmd",
            f"set runtimepath^={EDITORS / 'neovim'}",
            "-c",
            f"luafile {HERE / 'nvim_driver.lua'}",
        ]
    )


def test_inline_completion_request(
    neovim_run: EditorRun, sample_file: Sample, expected_suggestion: str
) -> None:
    """The config attaches to a Python buffer and its inline answer is the model's text."""
    result = neovim_run.result
    assert result.get("inline") is not None, neovim_run.explain()
    assert result["filetype"] == "python"
    assert result["inline_provider"], neovim_run.explain()
    assert result["inline"] == expected_suggestion, neovim_run.explain()


def test_completion_menu_inserts_suggestion(
    neovim_run: EditorRun, sample_file: Sample, expected_suggestion: str
) -> None:
    """On 0.11 the plugin's menu completion inserts the whole suggestion when accepted."""
    result = neovim_run.result
    assert result.get("error") is None, neovim_run.explain()
    assert result["menu_mapping"], "plugin/codegeex2.lua did not map <C-Space>"
    assert result["popup_items"], neovim_run.explain()
    buffer = result["popup_buffer"] + "\n"
    assert buffer == sample_file.with_inserted(expected_suggestion), neovim_run.explain()


def test_accepting_an_item_is_counted(neovim_run: EditorRun) -> None:
    """Neovim runs the accepted item's command, codegeex2.accept, so the server counts it."""
    assert neovim_run.result.get("accepted") == 1, neovim_run.explain()


def test_toggle_and_status_commands(neovim_run: EditorRun) -> None:
    """:CodeGeeX2 toggle turns suggestions off (an empty answer, no model work) and back on."""
    result = neovim_run.result
    assert result.get("toggle_off") == "CodeGeeX2 suggestions off", neovim_run.explain()
    assert result["items_when_off"] == 0 and result["served_when_off"] == 0
    assert "suggestions off" in result["status_message"]
    assert "accepted 1" in result["status_message"]
    assert result["toggle_on"] == "CodeGeeX2 suggestions on"
    assert result["served_when_on"] == 1
