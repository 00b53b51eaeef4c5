"""Start-up and round-trip times of the real server over stdio, like an editor sees them.

Prints one JSON line per measurement: the server's time from process start to a loaded
model; the LSP round trip of an inline completion request, cold (the first, with the
model's own time beside it) and repeated at the same position (answered typed-ahead from
the suggestion already shown, without the model); and the status command's round trip, the
JSON-RPC floor.

    python benchmarks/bench_roundtrip.py [--model DIR] [--requests N]

Without ``--model`` it writes the default tiny checkpoint to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codegeex2_lsp.testing import write_tiny_model
from tests.lsp_support import inline, open_document, running_server, status, wait_for_state

SOURCE = "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        "
URI = "file:///bench/app.py"


def emit(**fields: object) -> None:
    fields["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(json.dumps(fields), flush=True)


async def measure(model: Path, requests: int) -> None:
    started = time.perf_counter()
    async with running_server(
        "--model", str(model), "--device", "cpu", "--debounce-ms", "0"
    ) as client:
        ready = await wait_for_state(client, "ready")
        emit(measurement="start_to_ready_s", value=round(time.perf_counter() - started, 3),
             model=ready["description"])  # fmt: skip
        open_document(client, URI, SOURCE)
        timings = []
        for _ in range(requests + 1):
            begin = time.perf_counter()
            await inline(client, URI, 5, 8, invoked=False)
            timings.append(1000 * (time.perf_counter() - begin))
            if len(timings) == 1:
                after_cold = await status(client)
        emit(
            measurement="inline_cold_ms",
            value=round(timings[0], 2),
            model_ms=round(1000 * after_cold["tokens"]["seconds"], 2),
        )
        final = await status(client)
        warm = timings[1:]
        emit(
            measurement="inline_repeat_ms",
            p50=round(statistics.median(warm), 2),
            p95=round(sorted(warm)[int(0.95 * (len(warm) - 1))], 2),
            requests=len(warm),
            served=final["served"],
            model_calls=final["tokens"]["generations"] - after_cold["tokens"]["generations"],
        )
        floor = []
        for _ in range(requests):
            begin = time.perf_counter()
            await status(client)
            floor.append(1000 * (time.perf_counter() - begin))
        emit(measurement="status_round_trip_ms", p50=round(statistics.median(floor), 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: tiny)")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or write_tiny_model(Path(scratch) / "tiny")
        asyncio.run(measure(model, args.requests))


if __name__ == "__main__":
    main()
