"""The INT4 CPU kernel in ``int4_cpu.c``: built once per machine with its C compiler, called
through ctypes.

torch's INT4 CPU matmul turns every nibble into a bfloat16 before multiplying, and that work,
not reading the weights, bounds its batch-1 decode. The C kernel multiplies the nibbles with
int8-quantized activations by byte dot-product instructions instead, so decode is bound by
memory (benchmarks/BENCHMARKS.md). It is compiled for the CPU it runs on (``-march=native``)
into the user's cache, under a name derived from the source, the compiler, the flags and the
CPU, so a home directory shared by different machines never loads code built for another CPU.
Without a C compiler with OpenMP, or off x86-64, there is no such kernel and torch's is used.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("int4_cpu.c")

BLOCK = 32
"""Columns per activation scale; the C kernel's BLOCK."""

_ISAS = {0: "portable C", 1: "AVX2", 2: "AVX-VNNI", 3: "AVX-512 VNNI"}

_KERNEL_PACK_ROWS = 256
"""Rows packed at a time. Small blocks keep the intermediates small enough that glibc returns
them at once: with 4,096 rows, loading the 6B model in INT4 peaked 0.8 GB higher."""


@dataclass(frozen=True)
class Library:
    """A built kernel: its entry point, its tile height and the instructions it was built with."""

    handle: ctypes.CDLL
    tile_rows: int
    isa: str

    def matmul(
        self,
        x: torch.Tensor,
        packed: torch.Tensor,
        scale: torch.Tensor,
        group: int,
        rows: int,
        bits: int = 4,
    ) -> torch.Tensor:
        """x: float32 [M, K] contiguous -> [M, rows] float32, with weights from :func:`pack`
        (``bits`` 4) or :func:`pack8` (``bits`` 8)."""
        out = torch.empty(x.shape[0], rows, dtype=torch.float32)
        entry = self.handle.cg_int4_matmul if bits == 4 else self.handle.cg_int8_matmul
        status = entry(
            x.data_ptr(),
            x.shape[0],
            x.shape[1],
            packed.data_ptr(),
            scale.data_ptr(),
            group,
            rows,
            out.data_ptr(),
            torch.get_num_threads(),
        )
        if status != 0:
            raise MemoryError("the CPU kernel could not allocate its scratch memory")
        return out


def _check_tiles(
    q: torch.Tensor, scale: torch.Tensor, tile_rows: int, width: str
) -> tuple[int, int]:
    """q's rows and columns, where the kernel takes its shape; ValueError, naming it, where not."""
    rows, columns = q.shape
    groups = scale.shape[1]
    group = columns // groups
    if rows % tile_rows or columns % BLOCK or group % BLOCK or group * groups != columns:
        raise ValueError(
            f"the {width} CPU kernel takes rows in multiples of {tile_rows} and groups of "
            f"multiples of {BLOCK} columns, not a [{rows}, {columns}] weight in groups of {group}"
        )
    return rows, columns


def _tiled_scales(scale: torch.Tensor, tile_rows: int) -> torch.Tensor:
    """[N, groups] -> float32 [N / tile, groups, tile]: one vector load per tile and group."""
    rows, groups = scale.shape
    return scale.float().reshape(rows // tile_rows, tile_rows, groups).permute(0, 2, 1).contiguous()


def pack(q: torch.Tensor, scale: torch.Tensor, tile_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The C kernel's layout (see int4_cpu.c) for q: int8 [N, K] in [-8, 7], scale: [N, groups].

    Returns the nibbles, uint8 [N * K / 2], and the scales, float32 [N / tile, groups, tile].
    Raises ValueError for shapes the kernel does not take.
    """
    rows, columns = _check_tiles(q, scale, tile_rows, "INT4")
    packed = torch.empty(rows * columns // 2, dtype=torch.uint8)
    step = _KERNEL_PACK_ROWS - _KERNEL_PACK_ROWS % tile_rows
    for start in range(0, rows, step):
        block = q[start : start + step]
        count = block.shape[0]
        # u = q + 8 fits an int8; per tile and 8 columns, byte j of a row holds u[j] (low
        # nibble) and u[4 + j] (high nibble).
        unsigned = (block + 8).view(torch.uint8)
        unsigned = unsigned.reshape(count // tile_rows, tile_rows, columns // 8, 2, 4)
        nibbles = unsigned[..., 0, :] | (unsigned[..., 1, :] << 4)
        tiled = nibbles.permute(0, 2, 1, 3).reshape(-1)
        packed[start * columns // 2 : (start + count) * columns // 2] = tiled
    return packed, _tiled_scales(scale, tile_rows)


def pack8(
    q: torch.Tensor, scale: torch.Tensor, tile_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The C kernel's INT8 layout for q: int8 [N, K], scale: [N, groups] (one group per row for
    the official INT8 checkpoints).

    Returns the bytes, uint8 [N * K], and the scales, float32 [N / tile, groups, tile]. Raises
    ValueError for shapes the kernel does not take.
    """
    rows, columns = _check_tiles(q, scale, tile_rows, "INT8")
    packed = torch.empty(rows * columns, dtype=torch.uint8)
    step = _KERNEL_PACK_ROWS - _KERNEL_PACK_ROWS % tile_rows
    for start in range(0, rows, step):
        block = q[start : start + step].view(torch.uint8)
        count = block.shape[0]
        # Per tile and 4 columns, the 4 bytes of each row in turn.
        tiled = block.reshape(count // tile_rows, tile_rows, columns // 4, 4).permute(0, 2, 1, 3)
        packed[start * columns : (start + count) * columns] = tiled.reshape(-1)
    return packed, _tiled_scales(scale, tile_rows)


def _compiler() -> str | None:
    chosen = os.environ.get("CC")
    if chosen:
        return shutil.which(chosen) or chosen
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the CPU's feature flags where Linux lists them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_directory() -> Path:
    """Where built kernels are kept: the user's cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "codegeex2-lsp" / "kernels"


@functools.cache
def load(arch: str = "native") -> Library | None:
    """The kernel built for ``-march=arch`` (building it the first time), or None if it cannot
    be built here; why is logged once."""
    if platform.machine().lower() not in ("x86_64", "amd64") or os.name != "posix":
        log.info("the INT4 CPU kernel is for x86-64 Linux and macOS; using torch's")
        return None
    compiler = _compiler()
    if compiler is None:
        log.info("no C compiler (cc, gcc, clang or $CC) for the INT4 CPU kernel; using torch's")
        return None
    flags = ["-O3", f"-march={arch}", "-fPIC", "-shared", "-fopenmp"]
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, compiler.encode(), " ".join(flags).encode(), _cpu_identity().encode()])
    ).hexdigest()[:20]
    target = cache_directory() / f"int4_cpu-{key}.so"
    if not target.exists():
        try:
            _build(compiler, flags, target)
        except (OSError, subprocess.SubprocessError) as error:
            log.info("the INT4 CPU kernel could not be built (%s); using torch's", error)
            return None
    # OpenMP: the library asks for libgomp by its usual name, and the dynamic loader hands it
    # the copy torch has already loaded, so both share one thread pool.
    handle = ctypes.CDLL(str(target))
    for entry in (handle.cg_int4_matmul, handle.cg_int8_matmul):
        entry.restype = ctypes.c_int
        entry.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
    library = Library(handle, handle.cg_tile_rows(), _ISAS.get(handle.cg_isa(), "unknown"))
    log.info("INT4 CPU kernel built for %s (%s)", library.isa, target.name)
    return library


_CHECK = """
import ctypes, sys
library = ctypes.CDLL(sys.argv[1])
rows, columns = library.cg_tile_rows(), 64
types = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int]
library.cg_int4_matmul.argtypes = library.cg_int8_matmul.argtypes = types
# Every weight 1 (nibble 9, byte 1) with scale 0.5, every activation 1: each output is 32.
scale = (ctypes.c_float * (rows * 2))(*[0.5] * (rows * 2))
x = (ctypes.c_float * columns)(*[1.0] * columns)
ok = True
for entry, byte, size in ((library.cg_int4_matmul, 0x99, rows * columns // 2),
                          (library.cg_int8_matmul, 1, rows * columns)):
    packed = (ctypes.c_uint8 * size)(*[byte] * size)
    y = (ctypes.c_float * rows)()
    status = entry(x, 1, columns, packed, scale, 32, rows, y, 1)
    ok = ok and status == 0 and all(abs(v - 32.0) < 1e-3 for v in y)
sys.exit(0 if ok else 1)
"""
"""Run on a fresh build in a process of its own: an instruction the CPU refuses (a hypervisor
that hides what the compiler saw) kills that process, never the server."""


def _build(compiler: str, flags: list[str], target: Path) -> None:
    """Compile into a temporary file beside ``target``, check it, and rename it: concurrent
    builds by several servers never see a half-written or unchecked library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".so.partial")
    os.close(handle)
    try:
        try:
            subprocess.run(
                [compiler, *flags, "-o", partial, str(SOURCE)],
                check=True,
                capture_output=True,
                cwd=target.parent,
                timeout=120,
            )
        except subprocess.CalledProcessError as error:
            message = error.stderr.decode(errors="replace").strip().splitlines()
            raise OSError(message[-1] if message else f"{compiler} failed") from None
        # Isolated, in the cache directory: the server's working directory may be a repository
        # whose modules would otherwise be imported in place of ctypes.
        checked = subprocess.run(
            [sys.executable, "-I", "-c", _CHECK, partial],
            check=False,
            capture_output=True,
            cwd=target.parent,
            timeout=60,
        )
        if checked.returncode != 0:
            raise OSError(f"the built kernel failed its check (exit status {checked.returncode})")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def fast_library() -> Library | None:
    """The native build when it uses vector instructions; the portable C path is slower than
    torch's own INT4 kernel."""
    library = load()
    return library if library is not None and library.isa != _ISAS[0] else None
