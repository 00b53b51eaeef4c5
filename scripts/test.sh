#!/usr/bin/env bash
# The whole test suite from a fresh clone: a virtual environment with the CPU build of
# torch, the package with its test tools, the editors the editor tests drive (Emacs and
# Neovim; installing Emacs needs root or sudo), the VS Code extension's build and unit
# tests, then pytest. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
# torch is pinned here, not in the package, so the CPU build is used for tests and a
# plain install still gets the build that fits the user's machine.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

PYTHON=.venv/bin/python bash .ci/install-editors
bash .ci/build-vscode

.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
