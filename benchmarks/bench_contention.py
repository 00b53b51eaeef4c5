"""Decode under CPU contention: OpenMP's spin-waiting against its thread count.

torch's CPU ops and the INT4 CPU kernel run on OpenMP (libgomp), whose threads spin at a
barrier for a while before they sleep. With other work on the cores, a thread spinning for a
descheduled sibling burns the time slice that sibling needs. This script measures decode time
per token of a 2-layer model of CodeGeeX2-6B's width (random weights, INT4 or INT8, as the
server loads them) quiet and beside a hog of busy-looping processes, for each candidate
setting. Spin-waiting is read by libgomp when it starts, so each setting runs in a process of
its own with its environment set before torch is imported; the settings, and quiet and loaded
runs within each, are interleaved round by round, so they share the machine's other load.
One JSON line per measurement, then one summary line per setting with its medians and the
ratio hog/quiet; the CPU is named in every line.

    python benchmarks/bench_contention.py --rounds 3
    python benchmarks/bench_contention.py --settings default,passive --hog 2 --quantize int8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
"""Taken out of the inherited environment, so each setting is only what it says."""

SETTINGS: dict[str, tuple[dict[str, str], int | None]] = {
    "default": ({}, None),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "spincount0": ({"GOMP_SPINCOUNT": "0"}, None),
    "spincount1k": ({"GOMP_SPINCOUNT": "1000"}, None),
    "spincount10k": ({"GOMP_SPINCOUNT": "10000"}, None),
    "spincount100k": ({"GOMP_SPINCOUNT": "100000"}, None),
    "active": ({"OMP_WAIT_POLICY": "ACTIVE"}, None),
    "threads1": ({}, 1),
    "threads1-passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, 1),
}
"""name: (environment set before torch starts, torch threads or None for torch's default).
``default`` is OpenMP's own (libgomp spins a while before it sleeps); the server sets
``GOMP_SPINCOUNT=10000`` unless the user set it, as ``spincount10k`` here."""

HOG = "print('spinning', flush=True)\nwhile True: pass"
"""One busy-looping process; it says when it spins, so no measurement starts before it."""


def cpu_name() -> str:
    """The CPU's model name, so numbers are never read without the machine they came from."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)"


def write_model(directory: Path) -> None:
    from codegeex2_lsp.testing import codegeex2_6b_shape, write_tiny_model

    if not (directory / "config.json").exists():
        write_tiny_model(directory, **codegeex2_6b_shape(2))


def child(args: argparse.Namespace) -> None:
    """One setting's process: load once, then decode quiet and beside the hog in turn."""
    import torch
    from transformers import DynamicCache

    from codegeex2_lsp.backends.local.loader import load_model

    _, threads = SETTINGS[args.child]
    if threads is not None:
        torch.set_num_threads(threads)
    dtype = torch.bfloat16 if args.quantize == "int4" else torch.float32
    model = load_model(
        args.model,
        device=torch.device("cpu"),
        dtype=dtype,
        quantize=args.quantize,
        layout_cache=args.cache,
    )
    prompt = torch.arange(100, 100 + args.prompt, dtype=torch.long)[None]

    @torch.inference_mode()
    def decode_ms() -> list[float]:
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=prompt, cache=cache, use_cache=True, logits_to_keep=1).logits
        times = []
        for _ in range(args.tokens):
            token = logits[:, -1].argmax(-1, keepdim=True)
            started = time.perf_counter()
            logits = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1).logits
            times.append(1000 * (time.perf_counter() - started))
        return times

    decode_ms()
    phases = ["quiet", "hog"] if args.round % 2 == 0 else ["hog", "quiet"]
    for phase in phases:
        hogs = []
        if phase == "hog":
            hogs = [
                subprocess.Popen([sys.executable, "-I", "-c", HOG], stdout=subprocess.PIPE)
                for _ in range(args.hog)
            ]
        try:
            for hog in hogs:
                assert hog.stdout is not None
                hog.stdout.readline()
            times = decode_ms()
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait(timeout=10)
        line = {
            "setting": args.child,
            "phase": phase,
            "round": args.round,
            "quantize": args.quantize,
            "torch_threads": torch.get_num_threads(),
            "env": SETTINGS[args.child][0],
            "decode_ms_median": round(statistics.median(times), 2),
            "decode_ms_best": round(min(times), 2),
            "tokens": len(times),
            "cpu": cpu_name(),
        }
        print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=24, help="decode steps per measurement")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens before decoding")
    parser.add_argument("--hog", type=int, default=2, help="busy-looping processes")
    parser.add_argument("--quantize", choices=("int4", "int8"), default="int4")
    parser.add_argument("--model", type=Path, help="checkpoint (default: a 2-layer 6B-wide one)")
    parser.add_argument("--cache", type=Path, help="layout cache (default: a temporary one)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or Path(scratch) / "model"
        cache = args.cache or Path(scratch) / "layouts"
        write_model(model)
        names = args.settings.split(",")
        results: list[dict[str, Any]] = []
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                inherited = {
                    key: value for key, value in os.environ.items() if key not in OPENMP_VARIABLES
                }
                environment = {**inherited, **SETTINGS[name][0]}
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    name,
                    "--round",
                    str(round_),
                    "--model",
                    str(model),
                    "--cache",
                    str(cache),
                    "--quantize",
                    args.quantize,
                    "--tokens",
                    str(args.tokens),
                    "--prompt",
                    str(args.prompt),
                    "--hog",
                    str(args.hog),
                ]
                run = subprocess.run(
                    command, env=environment, capture_output=True, text=True, timeout=900
                )
                if run.returncode != 0:
                    sys.exit(f"{name} failed:\n{run.stderr}")
                for line in run.stdout.splitlines():
                    print(line, flush=True)
                    results.append(json.loads(line))
        for name in names:
            quiet = [
                r["decode_ms_median"]
                for r in results
                if r["setting"] == name and r["phase"] == "quiet"
            ]
            hog = [
                r["decode_ms_median"]
                for r in results
                if r["setting"] == name and r["phase"] == "hog"
            ]
            base = [
                r["decode_ms_median"]
                for r in results
                if r["setting"] == "default" and r["phase"] == "quiet"
            ]
            summary = {
                "summary": name,
                "quiet_ms": statistics.median(quiet),
                "hog_ms": statistics.median(hog),
                "hog_over_quiet": round(statistics.median(hog) / statistics.median(quiet), 2),
                "cpu": cpu_name(),
            }
            if base:
                summary["quiet_over_default_quiet"] = round(
                    statistics.median(quiet) / statistics.median(base), 2
                )
            print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
