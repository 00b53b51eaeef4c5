"""How far the fast quantized kernels are from the exact product of the same integers.

The fast CPU kernels round the activations (``int4cpu`` and ``int8cpu`` to int8 per 32
columns, ``dynamic`` INT8 per token), torch's ``int4pack`` takes bfloat16 activations and
scales; ``dequant`` multiplies the stored integers by their scales in float32, exactly. Every
configuration loads the same checkpoint of the CodeGeeX2-6B width (``--layers`` deep, random
weights), quantized the same way, and runs the same prompt of real code; the logits at every
position are compared with the exact kernel's. The unquantized float32 model is listed too, so
the kernels' deviation can be set beside the quantization's own error. One JSON line per
configuration.

    python benchmarks/bench_fidelity.py --layers 4 --workdir /tmp/fidelity --tokens 512
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.local.quantize import QuantLinear
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.testing import codegeex2_6b_shape, write_tiny_model

CORPUS = Path(__file__).with_name("corpus")

# name: (quantize, kernel, compute dtype); the first of each precision is its exact reference.
CONFIGS = {
    "int4-exact": ("int4", "dequant", torch.float32),
    "int4-int4cpu": ("int4", "int4cpu", torch.float32),
    "int4-int4pack-bf16": ("int4", "int4pack", torch.bfloat16),
    "int8-exact": ("int8", "dequant", torch.float32),
    "int8-int8cpu": ("int8", "int8cpu", torch.float32),
    "int8-dynamic": ("int8", "dynamic", torch.float32),
    "float32": ("none", None, torch.float32),
}


def prompt_ids(model_dir: Path, tokens: int) -> list[int]:
    """Real code from the benchmark corpus, all languages in turn, cut to ``tokens`` ids."""
    tokenizer = read_tokenizer(model_dir)
    ids: list[int] = list(tokenizer.prefix_ids)
    for path in sorted(CORPUS.iterdir()):
        ids += tokenizer.encode(path.read_text(encoding="utf-8"))
    return ids[:tokens]


def all_logits(model_dir: Path, config: str, ids: list[int]) -> torch.Tensor | None:
    quantize, kernel, dtype = CONFIGS[config]
    try:
        model = load_model(
            model_dir, device=torch.device("cpu"), dtype=dtype, quantize=quantize, kernel=kernel
        )
    except Exception as error:
        print(json.dumps({"config": config, "skipped": str(error)}), flush=True)
        return None
    kernels = {m.kernel.name for m in model.modules() if isinstance(m, QuantLinear) and m.kernel}
    assert kernel is None or kernels == {kernel}, kernels
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids]), logits_to_keep=0).logits[0].float()
    del model
    return logits


def compare(logits: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    difference = (logits - reference).abs()
    top = reference.topk(2, dim=-1).values
    margin = top[:, 0] - top[:, 1]
    agree = logits.argmax(-1) == reference.argmax(-1)
    return {
        "max_abs_error": round(float(difference.max()), 5),
        "mean_abs_error": round(float(difference.mean()), 6),
        "max_error_over_logit_range": round(
            float(difference.max() / (reference.max() - reference.min())), 6
        ),
        "top1_agreement": round(float(agree.float().mean()), 4),
        "disagreements": int((~agree).sum()),
        "median_top2_margin": round(float(margin.median()), 5),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    model_dir = args.workdir / f"model-{args.layers}"
    if not model_dir.exists():
        write_tiny_model(model_dir, **codegeex2_6b_shape(args.layers), shards=1)
    ids = prompt_ids(model_dir, args.tokens)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(json.dumps({"machine": machine, "layers": args.layers, "positions": len(ids)}))
    references: dict[str, torch.Tensor] = {}
    float32: torch.Tensor | None = None
    for config in CONFIGS:
        logits = all_logits(model_dir, config, ids)
        if logits is None:
            continue
        quantize = CONFIGS[config][0]
        row: dict[str, object] = {"config": config}
        if quantize == "none":
            float32 = logits
        elif quantize not in references:
            references[quantize] = logits
        else:
            row["against_exact_kernel"] = compare(logits, references[quantize])
        if float32 is not None and quantize == "none":
            row["note"] = "unquantized reference"
        print(json.dumps(row), flush=True)
    if float32 is not None:
        for quantize, reference in references.items():
            row = {"config": f"{quantize}-exact", "against_float32": compare(reference, float32)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
