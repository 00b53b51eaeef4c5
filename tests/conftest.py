"""Shared fixtures: one tiny checkpoint in the upstream layout, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codegeex2_lsp.testing import write_tiny_model

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic tiny ChatGLM2 checkpoint, as the writer makes it by default."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own state directory, inherited by the servers it starts: acceptance counts
    never land in the home directory of whoever runs the tests."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state
