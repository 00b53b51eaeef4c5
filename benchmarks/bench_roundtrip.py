"""Start-up and round-trip times of the real server over stdio, like an editor sees them.

Prints one JSON line per measurement: the server's time from start to a loaded model, and
the LSP round trip of inline completion requests, cold (first request) and warm (the same
position again, served with the prompt's KV cache), with the model's own time from the
server's log beside it.

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

from lsprotocol import types

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codegeex2_lsp.testing import write_tiny_model
from tests.lsp_support import inline, open_document, running_server, wait_for_state

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
        emit(measurement="inline_cold_ms", value=round(timings[0], 2))
        warm = timings[1:]
        emit(
            measurement="inline_warm_ms",
            p50=round(statistics.median(warm), 2),
            p95=round(sorted(warm)[int(0.95 * (len(warm) - 1))], 2),
            requests=len(warm),
        )
        model_ms = [
            float(m.message.rsplit(" in ", 1)[1].split(" ms", 1)[0])
            for m in client.log_messages
            if m.type == types.MessageType.Info and " generated in " in m.message
        ]
        if model_ms:
            emit(measurement="model_ms_per_request", p50=round(statistics.median(model_ms), 2))


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
