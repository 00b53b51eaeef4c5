"""The full-size CodeGeeX2-6B shape on one CUDA GPU: prefill and decode per precision, decode
eager and compiled. Random weights, built straight on the GPU as ``bench_model.py`` builds them.

    python benchmarks/bench_gpu.py OUT_DIR [--budget-s 280]

Writes one JSON line per measurement to ``OUT_DIR/gpu.jsonl`` (and stdout) as each finishes, so
what was measured survives a run cut short. Each (precision, decode path) runs in its own
process with its own time limit; eager paths first, then the compiled ones (whose compile time
is reported), and no new one starts once ``--budget-s`` is spent. Decode runs after the 512-token
prompt, on the engine's own paths: the growing prefix cache (``dynamic``), and the static cache
stepped eagerly (``static``) or through ``torch.compile`` with CUDA graphs (``compiled``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# precision: bench_model's configuration name
PRECISIONS = {"bf16": "bf16", "int8": "int8-bf16", "int4": "int4"}
DECODES = ("dynamic", "static", "compiled")


def _synchronized(torch: Any) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def measure(
    precision: str, decode: str, prompt: int, steps: int, device_name: str, layers: int
) -> dict[str, Any]:
    import torch
    import transformers
    from bench_model import build, prefill

    from codegeex2_lsp.backends.local.inference import StaticDecoder

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    started = time.perf_counter()
    with torch.inference_mode():
        model = build(PRECISIONS[precision], layers, device)
    result: dict[str, Any] = {
        "precision": precision,
        "decode": decode,
        "layers": layers,
        "gpu": torch.cuda.get_device_name() if cuda else str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_s": round(time.perf_counter() - started, 1),
        "weights_gb": round(torch.cuda.memory_allocated() / 1e9, 2) if cuda else None,
    }
    ids = torch.randint(100, 60000, (1, prompt), device=device)
    with torch.inference_mode():
        prefill(model, ids)  # warm-up: kernel selection, allocator
        started = _synchronized(torch)
        logits, cache = prefill(model, ids)
        result["prefill_tok_s"] = round(prompt / (_synchronized(torch) - started), 1)
        token = int(logits.logits[0, -1].argmax())
        times = []
        if decode == "dynamic":
            step = torch.tensor([[token]], device=device)
            for _ in range(steps + 3):
                started = _synchronized(torch)
                out = model(input_ids=step, cache=cache, use_cache=True, logits_to_keep=1)
                step = out.logits[:, -1:].argmax(-1)
                times.append(_synchronized(torch) - started)
        else:
            started = time.perf_counter()
            static = StaticDecoder(model, 1024, compiled=decode == "compiled")
            static.warm_up(cache, prompt)
            result["warm_up_s"] = round(_synchronized(torch) - started, 1)
            static.load(cache, prompt)
            for _ in range(steps + 3):
                started = _synchronized(torch)
                token = int(static.step(token).argmax())
                times.append(_synchronized(torch) - started)
        times = times[3:]
    result["decode_ms"] = round(1000 * statistics.median(times), 2)
    result["decode_ms_best"] = round(1000 * min(times), 2)
    result["decode_steps"] = len(times)
    if cuda:
        result["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="directory for gpu.jsonl")
    parser.add_argument("--budget-s", type=float, default=280.0)
    parser.add_argument("--timeout-s", type=float, default=150.0, help="for one measurement")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--decodes", default=",".join(DECODES))
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=28, help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = measure(*args.one, args.prompt, args.steps, args.device, args.layers)
        print(json.dumps(result), flush=True)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    status = 0
    for decode in args.decodes.split(","):
        for precision in args.precisions.split(","):
            left = deadline - time.monotonic()
            if left < 20:
                line: dict[str, Any] = {"precision": precision, "decode": decode}
                line["skipped"] = "time budget spent"
            else:
                command = [sys.executable, __file__, str(args.out), "--one", precision, decode]
                command += ["--prompt", str(args.prompt), "--steps", str(args.steps)]
                command += ["--device", args.device, "--layers", str(args.layers)]
                try:
                    done = subprocess.run(
                        command, capture_output=True, text=True, timeout=min(args.timeout_s, left)
                    )
                    if done.returncode:
                        status = 1
                        line = {"precision": precision, "decode": decode}
                        line["error"] = done.stderr.strip().splitlines()[-5:]
                    else:
                        line = json.loads(done.stdout.strip().splitlines()[-1])
                except subprocess.TimeoutExpired:
                    status = 1
                    line = {"precision": precision, "decode": decode, "error": "timed out"}
            text = json.dumps(line)
            print(text, flush=True)
            with (args.out / "gpu.jsonl").open("a", encoding="utf-8") as out:
                out.write(text + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
