"""Running real editors headless against the real server on the tiny model.

Each editor loads the set-up straight from the repository's ``editors/`` directory with a
throwaway home directory, so neither the developer's configuration nor a previous run leaks
in. The server command is this interpreter's ``-m codegeex2_lsp``, so the tests need no PATH
set-up. Every editor run is bounded by a timeout and killed with its whole process group
(the editor and the server it started), so a server that never answers fails the test
instead of hanging CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EDITORS = REPO / "editors"
HERE = Path(__file__).resolve().parent

SKIP_VARIABLE = "CODEGEEX2_SKIP_EDITOR_TESTS"

# How long an editor may run, start to exit: server start (torch import), model load,
# the completions themselves, with room for a loaded CI machine.
EDITOR_TIMEOUT_S = 180
# The editor-side deadline for one session, shorter so the driver can still report.
DRIVER_TIMEOUT_S = 150

# A Python buffer and a position at the end of a line, after a colon, where the tiny
# model's greedy suggestion is several lines starting with a line break: inserting it
# whole, with the indentation it was sent with, is what editors most easily get wrong.
# Positions are LSP ones: 0-based line, UTF-16 character.
SAMPLE = "import json\n\n\nclass Store:\n    pass\n"
SAMPLE_LINE = 3
SAMPLE_CHARACTER = 12


@dataclass(frozen=True)
class Sample:
    """The file an editor opens and where it asks for a completion."""

    path: Path
    line: int
    character: int

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def with_inserted(self, suggestion: str) -> str:
        """The file's text after accepting ``suggestion`` at the position (ASCII sample)."""
        lines = self.text.splitlines(keepends=True)
        offset = sum(len(line) for line in lines[: self.line]) + self.character
        return self.text[:offset] + suggestion + self.text[offset:]


def find_editor(name: str) -> str:
    """The editor's executable, looked up next to this interpreter first, then on PATH.

    A missing editor fails the test, so CI cannot pass by skipping it; developers without
    the editors set CODEGEEX2_SKIP_EDITOR_TESTS=1.
    """
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found:
        return found
    message = f"{name} is not installed: run .ci/install-editors"
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{message} ({SKIP_VARIABLE}=1)")
    pytest.fail(f"{message}, or set {SKIP_VARIABLE}=1 to skip the editor tests")


def server_command(log_file: Path) -> list[str]:
    """The language server as the editors start it: no PATH lookup, a log for failures."""
    return [
        sys.executable,
        "-m",
        "codegeex2_lsp",
        "--log-file",
        str(log_file),
        "--log-level",
        "DEBUG",
    ]


@dataclass
class EditorRun:
    """What one headless editor session reported, with what to show when it failed."""

    result: dict[str, Any]
    output: str
    server_log: str

    def explain(self) -> str:
        return (
            f"driver result: {json.dumps(self.result, indent=2)}\n"
            f"--- editor output (tail) ---\n{self.output[-4000:]}\n"
            f"--- server log (tail) ---\n{self.server_log[-6000:]}"
        )


@dataclass(frozen=True)
class Session:
    """A throwaway home and the environment that points an editor's driver at the sample."""

    home: Path
    env: dict[str, str]
    result_file: Path
    server_log: Path

    def run(self, command: list[str]) -> EditorRun:
        """Run the editor to completion, or kill it and its server at the timeout."""
        with subprocess.Popen(
            command,
            cwd=self.home,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as process:
            try:
                output, _ = process.communicate(timeout=EDITOR_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                output, _ = process.communicate()
                output += f"\n[killed after {EDITOR_TIMEOUT_S} s]"
        result: dict[str, Any] = {}
        if self.result_file.exists():
            result = json.loads(self.result_file.read_text(encoding="utf-8"))
        server_log = ""
        if self.server_log.exists():
            server_log = self.server_log.read_text(encoding="utf-8", errors="replace")
        return EditorRun(result=result, output=output, server_log=server_log)


def make_session(directory: Path, model: Path, sample: Sample) -> Session:
    """A clean home for one editor run, and the variables its driver script reads."""
    home = directory / "home"
    home.mkdir()
    result_file = directory / "result.json"
    server_log = directory / "server.log"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("XDG_", "NVIM", "EMACS", "VIM"))
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_STATE_HOME=str(home / ".local/state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        CODEGEEX2_TEST_SERVER_COMMAND=json.dumps(server_command(server_log)),
        CODEGEEX2_TEST_MODEL=str(model),
        CODEGEEX2_TEST_FILE=str(sample.path),
        CODEGEEX2_TEST_LINE=str(sample.line),
        CODEGEEX2_TEST_CHARACTER=str(sample.character),
        CODEGEEX2_TEST_RESULT=str(result_file),
        CODEGEEX2_TEST_TIMEOUT_S=str(DRIVER_TIMEOUT_S),
    )
    return Session(home=home, env=env, result_file=result_file, server_log=server_log)
