"""The CPU kernel for INT4 and INT8 weights: its arithmetic on every instruction set it is
built for, how it is chosen, and its build (cached, and absent without a compiler)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from codegeex2_lsp.backends.local import int4_cpu, quantize
from codegeex2_lsp.backends.local.devices import cpu_features
from codegeex2_lsp.backends.local.quantize import (
    dequantize,
    make_kernel,
    quantize_weight,
    select_kernel,
)

CPU = torch.device("cpu")

needs_compiler = pytest.mark.skipif(
    int4_cpu.load() is None, reason="the INT4 CPU kernel cannot be built on this machine"
)

ARCHES = [
    pytest.param("native", id="native"),
    pytest.param(
        "haswell",
        id="avx2",
        marks=pytest.mark.skipif("avx2" not in cpu_features(), reason="no AVX2"),
    ),
    pytest.param("x86-64", id="portable"),
]


@pytest.fixture
def fresh_selection() -> Iterator[None]:
    """Forget which kernels were found to work, before and after a test that changes it."""
    int4_cpu.load.cache_clear()
    quantize._kernel_works.cache_clear()
    yield
    int4_cpu.load.cache_clear()
    quantize._kernel_works.cache_clear()


def _integer_activations(rows: int, columns: int, generator: torch.Generator) -> torch.Tensor:
    """Integers in [-127, 127] with 127 in every 32-column block: the kernel's int8 rounding
    of these is exact, so its result must equal the float64 product."""
    x = torch.randint(-127, 128, (rows, columns), generator=generator).double()
    x[:, :: int4_cpu.BLOCK] = 127.0
    return x


@needs_compiler
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("group", [32, 128, None])
@pytest.mark.parametrize("bits", [4, 8])
def test_products_are_exact_on_exact_activations(arch: str, group: int | None, bits: int) -> None:
    library = int4_cpu.load(arch)
    assert library is not None
    generator = torch.Generator().manual_seed(3)
    rows, columns = 48, 256
    q, scale = quantize_weight(torch.randn(rows, columns, generator=generator), bits, group)
    if bits == 8:
        # The extremes of the range: -128 is the one value whose magnitude has no int8.
        q[0, :4] = torch.tensor([-128, 127, -128, 127], dtype=torch.int8)
    pack = int4_cpu.pack if bits == 4 else int4_cpu.pack8
    packed, tiled = pack(q, scale, library.tile_rows)
    weight = dequantize(q, scale, torch.float64)
    # 1 to 9 activation rows: the kernel works through them four at a time.
    for count in range(1, 10):
        x = _integer_activations(count, columns, generator)
        x[0, :4] = torch.tensor([-127.0, 127.0, 127.0, -127.0])
        group_size = columns // scale.shape[1]
        got = library.matmul(x.float().contiguous(), packed, tiled, group_size, rows, bits)
        want = x @ weight.T
        error = float((got.double() - want).abs().max() / want.abs().max())
        assert error < 1e-6, (library.isa, count, error)


@needs_compiler
@pytest.mark.parametrize("arch", ARCHES)
def test_float_activations_lose_only_their_int8_rounding(arch: str) -> None:
    library = int4_cpu.load(arch)
    assert library is not None
    generator = torch.Generator().manual_seed(4)
    q, scale = quantize_weight(torch.randn(32, 512, generator=generator), 4, 128)
    packed, tiled = int4_cpu.pack(q, scale, library.tile_rows)
    x = torch.randn(5, 512, generator=generator)
    want = x @ dequantize(q, scale, torch.float32).T
    got = library.matmul(x, packed, tiled, 128, 32)
    assert float((got - want).abs().max() / want.abs().max()) < 0.02


@needs_compiler
def test_chosen_for_int8_on_cpu_where_the_shape_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_kernel(CPU, torch.bfloat16, 8, per_row=True) == "int8cpu"
    assert select_kernel(CPU, torch.float32, 8, per_row=True) == "int8cpu"
    q, scale = quantize_weight(torch.randn(48, 256), 8)
    assert make_kernel(q, scale, torch.float32, 8).name == "int8cpu"

    def refuse(*args: object) -> None:
        raise ValueError("not this shape")

    monkeypatch.setattr(int4_cpu, "pack8", refuse)
    assert make_kernel(q, scale, torch.float32, 8).name == "dynamic"


@needs_compiler
def test_chosen_for_int4_on_cpu_where_the_shape_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_kernel(CPU, torch.bfloat16, 4, per_row=False) == "int4cpu"
    assert select_kernel(CPU, torch.float32, 4, per_row=True) == "int4cpu"
    q, scale = quantize_weight(torch.randn(48, 256), 4, 128)
    assert make_kernel(q, scale, torch.bfloat16, 4).name == "int4cpu"
    # 40 rows are not whole tiles, for torch's INT4 kernel either: plain torch takes them.
    odd_q, odd_scale = quantize_weight(torch.randn(40, 256), 4, 128)
    assert make_kernel(odd_q, odd_scale, torch.float32, 4).name == "dequant"
    with pytest.raises(ValueError, match="multiples"):
        make_kernel(odd_q, odd_scale, torch.float32, 4, "int4cpu")

    def refuse(*args: object) -> None:
        raise ValueError("not this shape")

    # A weight the kernel refuses goes to the next kernel that works, not straight to torch.
    monkeypatch.setattr(int4_cpu, "pack", refuse)
    assert make_kernel(q, scale, torch.bfloat16, 4).name == "int4pack"


@needs_compiler
def test_bfloat16_activations_come_back_in_bfloat16() -> None:
    q, scale = quantize_weight(torch.randn(32, 256), 4, 128)
    kernel = make_kernel(q, scale, torch.bfloat16, 4, "int4cpu")
    x = torch.randn(2, 3, 256)
    got = kernel(x.bfloat16())
    assert got.dtype == torch.bfloat16 and got.shape == (2, 3, 32)
    want = x @ dequantize(q, scale, torch.float32).T
    assert float((got.float() - want).abs().max() / want.abs().max()) < 0.03


@needs_compiler
@pytest.mark.usefixtures("fresh_selection")
def test_built_once_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert int4_cpu.load() is not None
    built = list((tmp_path / "codegeex2-lsp" / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"

    def no_compiler(*args: object) -> None:
        raise OSError("the compiler must not run again")

    monkeypatch.setattr(int4_cpu, "_build", no_compiler)
    int4_cpu.load.cache_clear()
    assert int4_cpu.load() is not None


@pytest.mark.usefixtures("fresh_selection")
def test_without_a_compiler_torch_kernels_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    caplog.set_level(logging.INFO, logger=int4_cpu.__name__)
    assert int4_cpu.load() is None
    assert select_kernel(CPU, torch.bfloat16, 4, per_row=False) == "int4pack"
    assert select_kernel(CPU, torch.float32, 4, per_row=False) == "dequant"
    assert sum("could not be built" in r.getMessage() for r in caplog.records) == 1
    assert not list((tmp_path / "codegeex2-lsp" / "kernels").iterdir())


def test_a_failing_compiler_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    compiler = tmp_path / "cc"
    compiler.write_text("#!/bin/sh\necho 'cc: error: unsupported option' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(compiler))
    caplog.set_level(logging.INFO, logger=int4_cpu.__name__)
    int4_cpu.load.cache_clear()
    try:
        assert int4_cpu.load() is None
    finally:
        int4_cpu.load.cache_clear()
    assert any("unsupported option" in r.getMessage() for r in caplog.records)
    assert not list((tmp_path / "codegeex2-lsp" / "kernels").iterdir())


@needs_compiler
@pytest.mark.usefixtures("fresh_selection")
def test_a_build_that_computes_wrongly_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = tmp_path / "wrong.c"
    wrong.write_text(
        "#include <stdint.h>\n"
        "int cg_isa(void) { return 3; }\n"
        "int cg_tile_rows(void) { return 16; }\n"
        "int cg_int4_matmul(const float *x, int64_t m, int64_t k, const void *w,\n"
        "                   const float *s, int64_t g, int64_t n, float *y, int t) {\n"
        "    for (int64_t i = 0; i < m * n; i++) y[i] = 0.0f;\n"
        "    return 0;\n"
        "}\n"
        "int cg_int8_matmul(const float *x, int64_t m, int64_t k, const void *w,\n"
        "                   const float *s, int64_t g, int64_t n, float *y, int t) {\n"
        "    return cg_int4_matmul(x, m, k, w, s, g, n, y, t);\n"
        "}\n"
    )
    real = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    compiler = tmp_path / "cc"
    compiler.write_text(
        '#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\n'
        f'exec {real} -fPIC -shared -o "$2" {wrong}\n'
    )
    compiler.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(compiler))
    caplog.set_level(logging.INFO, logger=int4_cpu.__name__)
    assert int4_cpu.load() is None
    assert any("failed its check" in r.getMessage() for r in caplog.records)
    assert not list((tmp_path / "codegeex2-lsp" / "kernels").iterdir())
