"""Load time of the upstream ``.bin`` layout against ``codegeex2-lsp convert`` output.

Writes a checkpoint with the full CodeGeeX2-6B width (hidden 4096, ffn 13696, vocab 65024) and
``--layers`` layers in the upstream bf16 ``.bin`` layout, converts it (full precision, INT8,
INT4), and loads each in a fresh process, twice, reporting both (the second with a warm file
cache), and twice more with the layout cache (the first writes it, the second maps it), one JSON
line per case. Loads of the upstream files with ``quantize`` set include quantizing.

    python benchmarks/bench_load.py --layers 4 --workdir /tmp/load-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from codegeex2_lsp.backends.local.convert import convert
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.testing import codegeex2_6b_shape, write_tiny_model

# (source directory name, quantize setting, dtype)
CASES = [
    ("upstream", "none", "bfloat16"),
    ("converted-none", "none", "bfloat16"),
    ("upstream", "int8", "float32"),
    ("converted-int8", "none", "float32"),
    ("upstream", "int4", "bfloat16"),
    ("converted-int4", "none", "bfloat16"),
]


def timed_load(directory: Path, quantize: str, dtype: str, layout_cache: Path | None) -> float:
    started = time.perf_counter()
    load_model(
        directory,
        device=torch.device("cpu"),
        dtype=getattr(torch, dtype),
        quantize=quantize,
        layout_cache=layout_cache,
    )
    return time.perf_counter() - started


def _load_alone(directory: Path, quantize: str, dtype: str, layout_cache: Path | None) -> float:
    """Seconds to load in a fresh process, as a server start would."""
    command = [sys.executable, __file__, "--workdir", "-", "--one", str(directory), quantize]
    command += [dtype, str(layout_cache or "")]
    run = subprocess.run(command, check=True, capture_output=True, text=True)
    return float(json.loads(run.stdout)["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        directory, quantize, dtype, cache = args.one
        seconds = timed_load(Path(directory), quantize, dtype, Path(cache) if cache else None)
        print(json.dumps({"seconds": round(seconds, 2)}))
        return 0
    upstream = args.workdir / "upstream"
    if not upstream.exists():
        write_tiny_model(
            upstream, **codegeex2_6b_shape(args.layers), shards=max(1, args.layers // 2)
        )
    for quantize in ("none", "int8", "int4"):
        target = args.workdir / f"converted-{quantize}"
        if not target.exists():
            started = time.perf_counter()
            convert(str(upstream), target, quantize=quantize)
            seconds = round(time.perf_counter() - started, 1)
            print(json.dumps({"convert": quantize, "layers": args.layers, "seconds": seconds}))
    for name, quantize, dtype in CASES:
        source = args.workdir / name
        quantized = quantize != "none" or name.endswith(("int8", "int4"))
        cache = args.workdir / "layouts" / name
        shutil.rmtree(cache, ignore_errors=True)
        # Interleaved: the plain load twice (the second with a warm file cache), and for
        # quantized weights the kept layout's first load (which writes it) and second (which
        # maps it).
        plain_first = _load_alone(source, quantize, dtype, None)
        kept_first = _load_alone(source, quantize, dtype, cache) if quantized else None
        plain = _load_alone(source, quantize, dtype, None)
        kept = _load_alone(source, quantize, dtype, cache) if quantized else None
        size = sum(p.stat().st_size for p in source.iterdir())
        row = {
            "source": name,
            "quantize": quantize,
            "dtype": dtype,
            "layers": args.layers,
            "files_gb": round(size / 1e9, 2),
            "load_s": plain,
            "first_load_s": plain_first,
        }
        if quantized:
            row |= {"kept_layout_first_s": kept_first, "kept_layout_second_s": kept}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
