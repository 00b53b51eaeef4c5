"""The CPU kernels for quantized weights side by side, on the 6B model's layer shapes.

Each kernel runs the same weights: ``--layers`` copies of one CodeGeeX2-6B layer's four linear
layers (query/key/value 4096 -> 4608, dense 4096 -> 4096, MLP 4096 -> 27392 and 13696 -> 4096),
random, quantized as the server quantizes them (INT8 per row, INT4 per 128 columns). That is far
more than the CPU's caches hold, so every product reads its weights from memory, as decode does.
Per measurement: the time to run every weight once on ``--rows`` activation rows (1 is a decode
step; more is a prefill chunk) and, for one row, the weights' bytes over that time.

Kernels: ``int8cpu`` and ``int4cpu`` (this project's, weights in ordinary 4 KiB pages, as the
server holds them), the same with ``-huge`` (weights copied into memory that asks for
transparent huge pages, which the layout cache could copy them into), and ``dynamic``
(torch's dynamic INT8 linear, fbgemm). Kernels alternate within each round. One JSON line per
measurement.

    python benchmarks/bench_kernels.py --layers 6 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import time
from typing import Any

from machine import cpu_name

SHAPES = ((4608, 4096), (4096, 4096), (27392, 4096), (4096, 13696))
"""One layer's linear layers, [out, in]."""


def huge_page_bytes(count: int) -> Any:
    """A uint8 tensor in anonymous memory that asks the kernel for transparent huge pages."""
    import torch

    region = mmap.mmap(-1, count, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(region, dtype=torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", default="1,64", help="activation rows per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch

    from codegeex2_lsp.backends.local.quantize import (
        DynamicInt8Kernel,
        Int4CpuKernel,
        Int8CpuKernel,
        Kernel,
        quantize_weight,
        restore_kernel,
    )

    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    kernels: dict[str, list[Kernel]] = {
        name: [] for name in ("int8cpu", "int8cpu-huge", "dynamic", "int4cpu", "int4cpu-huge")
    }

    def huge(kernel: Kernel) -> Kernel:
        """The kernel as the layout cache would restore it into huge pages."""
        packed = huge_page_bytes(kernel.packed.numel()).copy_(kernel.packed)
        attributes = {name: getattr(kernel, name) for name in kernel.attributes}
        tensors = {"packed": packed, "scale": kernel.scale}
        return restore_kernel(kernel.name, tensors, attributes, torch.float32)

    for _ in range(args.layers):
        for shape in SHAPES:
            weight = torch.randn(*shape, generator=generator).mul_(0.02)
            q8, scale8 = quantize_weight(weight, 8)
            q4, scale4 = quantize_weight(weight, 4, 128)
            int8 = Int8CpuKernel(q8, scale8, torch.float32)
            int4 = Int4CpuKernel(q4, scale4, torch.float32)
            kernels["int8cpu"].append(int8)
            kernels["int8cpu-huge"].append(huge(int8))
            kernels["dynamic"].append(DynamicInt8Kernel(q8, scale8, torch.float32))
            kernels["int4cpu"].append(int4)
            kernels["int4cpu-huge"].append(huge(int4))
    sizes = {
        name: sum(k.packed.numel() for k in found) if name != "dynamic" else None
        for name, found in kernels.items()
    }
    sizes["dynamic"] = sizes["int8cpu"]
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads}
    row_counts = [int(part) for part in args.rows.split(",")]
    inputs = {rows: [torch.randn(rows, shape[1]) for shape in SHAPES] for rows in row_counts}
    names = list(kernels)
    with torch.inference_mode():
        for round_number in range(1, args.rounds + 1):
            for rows in row_counts:
                order = names if round_number % 2 else names[::-1]
                for name in order:
                    repeats = 3 if rows == 1 else 1
                    seconds = []
                    for _ in range(repeats):
                        started = time.perf_counter()
                        for index, kernel in enumerate(kernels[name]):
                            kernel(inputs[rows][index % len(SHAPES)])
                        seconds.append(time.perf_counter() - started)
                    best = min(seconds)
                    line: dict[str, Any] = {
                        "kernel": name,
                        "rows": rows,
                        "round": round_number,
                        "ms": round(1000 * best, 1),
                        "ms_median": round(1000 * statistics.median(seconds), 1),
                        "weight_gb": round(sizes[name] / 1e9, 3),
                        **machine,
                    }
                    if rows == 1:
                        line["gb_s"] = round(sizes[name] / best / 1e9, 1)
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
