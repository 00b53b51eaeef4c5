"""``doctor``: the report on this machine and the settings, with the facts injected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codegeex2_lsp.backends.local import int4_cpu, quantize
from codegeex2_lsp.backends.local.devices import Hardware
from codegeex2_lsp.backends.local.doctor import diagnose, find_model_config
from codegeex2_lsp.backends.local.memory import GB
from codegeex2_lsp.cli import main
from codegeex2_lsp.settings.fields import Settings

AVX2_LAPTOP = Hardware(cuda_count=0, cuda_bf16=(), mps=False, cpu_features=frozenset({"avx2"}))
RTX = Hardware(
    cuda_count=1,
    cuda_bf16=(True,),
    mps=False,
    cuda_names=("NVIDIA GeForce RTX 3090",),
    cuda_memory=(24 * 10**9,),
)


def _not_downloaded(model: str) -> tuple[dict[str, Any] | None, str]:
    return None, "not downloaded yet"


def _free(gigabytes: float) -> Any:
    return lambda device: int(gigabytes * GB)


def test_reports_versions_devices_resolution_and_memory() -> None:
    report = diagnose(Settings(), hardware=RTX, free=_free(20), find_config=_not_downloaded)
    text = "\n".join(report.lines)
    assert report.ok
    for expected in ("python ", "torch ", "transformers ", "pygls ", "RTX 3090, 24.0 GB, bf16"):
        assert expected in text
    assert "resolves to: cuda:0, bfloat16 (bfloat16: the GPU supports it; none: full" in text
    assert "needs 13.1 GB (assuming the published CodeGeeX2-6B shape)" in text
    assert "20.0 GB free" in text


def test_names_the_cpu_kernel_when_quantized() -> None:
    report = diagnose(
        Settings(quantize="int8"), hardware=AVX2_LAPTOP, free=_free(16), find_config=_not_downloaded
    )
    text = "\n".join(report.lines)
    assert "CPU: " in text and "avx2" in text
    built = int4_cpu.fast_library()
    if built is not None:
        assert f"INT8 kernel: int8cpu (built here for {built.isa})" in text
    else:
        assert "INT8 kernel: dynamic (this project's faster INT8 kernel needs a C compiler" in text


def test_names_the_int4_kernel_and_what_it_was_built_for(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(quantize="int4", device="cpu")
    built = int4_cpu.fast_library()
    if built is not None:
        report = diagnose(
            settings, hardware=AVX2_LAPTOP, free=_free(16), find_config=_not_downloaded
        )
        assert f"INT4 kernel: int4cpu (built here for {built.isa})" in "\n".join(report.lines)
    monkeypatch.setattr(int4_cpu, "fast_library", lambda: None)
    quantize._kernel_works.cache_clear()
    try:
        report = diagnose(
            settings, hardware=AVX2_LAPTOP, free=_free(16), find_config=_not_downloaded
        )
    finally:
        quantize._kernel_works.cache_clear()
    text = "\n".join(report.lines)
    assert "INT4 kernel: int4pack (this project's faster INT4 kernel needs a C compiler" in text


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (Settings(quantize="none", dtype="float32", device="cpu"), "try dtype=bfloat16"),
        (Settings(device="cuda"), "no CUDA GPU"),
        (Settings(num_gpus=2), "needs CUDA GPUs"),
    ],
)
def test_configurations_that_cannot_work(settings: Settings, problem: str) -> None:
    report = diagnose(settings, hardware=AVX2_LAPTOP, free=_free(16), find_config=_not_downloaded)
    assert not report.ok
    assert problem in report.problems[0]


def test_reads_a_local_model(tiny_model_dir: Path) -> None:
    config, where = find_model_config(str(tiny_model_dir))
    assert config is not None and where == "local directory"
    report = diagnose(Settings(model=str(tiny_model_dir)), hardware=AVX2_LAPTOP, free=_free(16))
    text = "\n".join(report.lines)
    assert "(local directory)" in text and "assuming" not in text
    # A tiny model stays in float32: INT8 is for large models on CPU.
    assert "cpu, float32" in text


def test_not_downloaded_hub_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    config, where = find_model_config("THUDM/codegeex2-6b")
    assert config is None and "not downloaded" in where


def test_command_exit_status(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--model", str(tiny_model_dir), "--device", "cpu"]) == 0
    assert "resolves to: cpu" in capsys.readouterr().out
    exact = ["--device", "cpu", "--quantize", "int4", "--kernels", "exact"]
    assert main(["doctor", "--model", str(tiny_model_dir), *exact]) == 0
    out = capsys.readouterr().out
    assert "kernels=exact" in out and "INT4 kernel: dequant (kernels exact" in out
    assert "int4 weights, float32" in out
    assert main(["doctor", "--model", str(tiny_model_dir), "--num-gpus", "2"]) == 1
    assert "problem: numGpus 2 needs CUDA GPUs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ({}, "OMP_WAIT_POLICY=unset, GOMP_SPINCOUNT=10000)"),
        ({"GOMP_SPINCOUNT": "0"}, "OMP_WAIT_POLICY=unset, GOMP_SPINCOUNT=0)"),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, "OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=unset)"),
    ],
)
def test_openmp_threads_spin_briefly_unless_the_user_says(
    tiny_model_dir: Path, given: dict[str, str], shown: str
) -> None:
    """Set by the entry point before torch starts, so the whole process runs with it."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    }
    run = subprocess.run(
        [sys.executable, "-m", "codegeex2_lsp", "doctor", "--model", str(tiny_model_dir)],
        env={**environment, **given},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert shown in run.stdout
