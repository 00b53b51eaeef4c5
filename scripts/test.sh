#!/usr/bin/env bash
# The whole test suite from a fresh clone: a virtual environment with torch (the build the
# configured package indexes offer; see the README for the CPU-only one), the package with its
# test tools, the editors the editor tests drive (Emacs and Neovim; installing Emacs needs root
# or sudo), the VS Code extension's build and unit tests, vLLM for the remote backend's tests
# (kept outside the clone between runs), the linter, the formatter and the type checker, then
# pytest. Arguments go to pytest. Without arguments (the whole suite, as CI runs it) the VS Code
# extension's end-to-end test in code-server runs before pytest; it installs what it needs
# itself (Chromium from Debian, Node 24 and code-server from npm, cached outside the clone:
# about 13 minutes the first time, 2 after).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
# torch is pinned here, not in the package, so tests run on one known version and a plain
# install still gets the build that fits the user's machine. An installed torch 2.13.0 (say
# the CPU-only build) is kept.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

PYTHON=.venv/bin/python bash .ci/install-editors
bash .ci/build-vscode
# vLLM, in an environment of its own outside the clone, for the remote backend's tests.
CODEGEEX2_VLLM_PYTHON=$(bash scripts/vllm-env.sh | tail -n 1)
export CODEGEEX2_VLLM_PYTHON

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The whole run (no arguments, as CI calls it) includes the extension's end-to-end test in a
# real VS Code; it goes first so that pytest's summary closes the output.
if (($# == 0)); then
  PYTHON=.venv/bin/python bash editors/vscode/scripts/e2e.sh
fi
exec .venv/bin/python -m pytest "$@"
