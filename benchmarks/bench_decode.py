"""Where a CPU decode step's time goes, against the memory's own speed, in one process.

For a checkpoint loaded as the server loads it (``codegeex2-lsp convert`` output or any model
directory, default settings), each round measures, interleaved:

- ``bandwidth``: torch summing a 2 GiB float32 array on the same threads: how fast this
  machine's memory can be read, the bound of a step that reads every weight once;
- ``step``: the decode step as the server runs it (``LocalModel.generate`` after a prompt of
  ``--prompt`` tokens, prefix cache off), median and best per token;
- ``linears``: every quantized linear layer of the model called once in model order on one
  token's activations, as a step calls them: the matrix products alone, and the bandwidth
  they reach; ``lm_head`` the output layer alone;
- ``rest``: the step less its linear layers: attention, norms, rotary embedding, sampling and
  Python's own time.

A last pass profiles a few steps with torch's profiler and reports the operators that take the
most time per step (the INT4 CPU kernel is called through ctypes, so it shows only as the time
of the module that calls it). One JSON line per measurement.

    python benchmarks/bench_decode.py --model DIR --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from machine import cpu_name, read_speeds


def tensor_bytes(module: Any) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--steps", type=int, default=24, help="decode steps per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch

    from codegeex2_lsp.backends.generation import SamplingParams
    from codegeex2_lsp.backends.local.loader import load_local
    from codegeex2_lsp.backends.local.quantize import QuantLinear
    from codegeex2_lsp.settings.fields import Settings

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, description = load_local(Settings(model=str(args.model)).load_spec())
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads}
    print(
        json.dumps(
            {
                "measure": "load",
                "seconds": round(time.perf_counter() - started, 2),
                "model": description.replace(str(args.model), args.model.name),
                **machine,
            }
        ),
        flush=True,
    )
    network = model.model
    dtype = next(network.parameters()).dtype
    linears = [
        (name, module)
        for name, module in network.named_modules()
        if isinstance(module, QuantLinear)
    ]
    head = [module for name, module in linears if name.endswith("lm_head")]
    linear_bytes = sum(tensor_bytes(module) for _, module in linears)
    head_bytes = sum(tensor_bytes(module) for module in head)
    inputs = {
        id(module): torch.randn(1, 1, module.in_features, dtype=dtype) for _, module in linears
    }
    ids = [(7 * i) % 60000 + 100 for i in range(args.prompt)]

    def bandwidth() -> dict[str, Any]:
        return {"read_gb_s": round(max(read_speeds()), 1)}

    def step(profiler: Any = None) -> dict[str, Any]:
        times: list[float] = []

        def stamp(text: str) -> bool:
            times.append(time.perf_counter())
            # The profile covers the decode steps only, not the prompt's prefill.
            if profiler is not None and len(times) == 1:
                profiler.start()
            return False

        params = SamplingParams(max_new_tokens=args.steps + 1, speculative=False)
        with torch.inference_mode():
            model.generate(ids, params, should_stop=stamp, cache_bytes=0)
        steps = [b - a for a, b in itertools.pairwise(times)]
        return {
            "ms_median": round(1000 * statistics.median(steps), 2),
            "ms_best": round(1000 * min(steps), 2),
        }

    def products(modules: list[Any], total_bytes: int) -> dict[str, Any]:
        seconds = []
        with torch.inference_mode():
            for _ in range(args.steps):
                begun = time.perf_counter()
                for module in modules:
                    module(inputs[id(module)])
                seconds.append(time.perf_counter() - begun)
        median = statistics.median(seconds)
        return {
            "ms_median": round(1000 * median, 2),
            "ms_best": round(1000 * min(seconds), 2),
            "weight_gb": round(total_bytes / 1e9, 3),
            "gb_s_median": round(total_bytes / median / 1e9, 1),
            "gb_s_best": round(total_bytes / min(seconds) / 1e9, 1),
        }

    for round_number in range(1, args.rounds + 1):
        measured = {
            "bandwidth": bandwidth(),
            "step": step(),
            "linears": products([module for _, module in linears], linear_bytes),
            "lm_head": products(head, head_bytes),
        }
        measured["rest"] = {
            "ms_median": round(measured["step"]["ms_median"] - measured["linears"]["ms_median"], 2)
        }
        for name, values in measured.items():
            line = {"measure": name, "round": round_number, **values, **machine}
            print(json.dumps(line), flush=True)

    from torch.profiler import ProfilerActivity, profile

    profiler = profile(activities=[ProfilerActivity.CPU])
    step(profiler)
    profiler.stop()
    averages = profiler.key_averages()
    top = sorted(averages, key=lambda event: event.self_cpu_time_total, reverse=True)[:15]
    per_step = args.steps
    for event in top:
        line = {
            "measure": "profile",
            "operator": event.key,
            "self_ms_per_step": round(event.self_cpu_time_total / 1000 / per_step, 3),
            "calls_per_step": round(event.count / per_step, 1),
            **machine,
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
