#!/usr/bin/env bash
# Speculative decoding on a CUDA GPU, as one short run (about 4 minutes on an H200):
#   1. greedy output with speculation equals plain decoding on the dynamic, static and compiled
#      (CUDA-graphed) decode paths, on tiny checkpoints;
#   2. the cost of checking 1..8 tokens in one pass against one token on the full 6B shape with
#      random weights (bf16 also through the compiled static passes; INT8, INT4 eager), and a
#      greedy run with speculation on and off on those weights.
# Each writes JSON lines into OUTDIR; the exit status is non-zero if a step failed or an output
# differed. Usage: bash benchmarks/gpu_speculative.sh OUTDIR
set -u
out=${1:?usage: bash benchmarks/gpu_speculative.sh OUTDIR}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
bench=benchmarks/bench_speculative.py
status=0
$python "$bench" identity --device cuda --modes dynamic,static,compiled \
    >"$out/speculative_identity_cuda.jsonl" || status=1
grep -q '"all_identical": false' "$out/speculative_identity_cuda.jsonl" && status=1
$python "$bench" verify --device cuda --configs bf16 --rounds 20 --compiled --greedy-tokens 64 \
    >"$out/speculative_verify_cuda.jsonl" || status=1
$python "$bench" verify --device cuda --configs int8-bf16,int4 --rounds 20 --greedy-tokens 64 \
    >>"$out/speculative_verify_cuda.jsonl" || status=1
exit $status
