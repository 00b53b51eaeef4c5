"""Weight-only INT8/INT4 linear layers, with the fastest kernel that works on each device.

One scheme covers the official ChatGLM2 quantized checkpoints and load-time quantization:
symmetric integers with one float scale per output row (official) or per group of input columns
(load-time INT4, which loses less), ``W ≈ scale * q``. The integers are handed to a kernel
unchanged; only their layout changes, so a checkpoint's stored values are what is computed with.

Kernels, chosen per device and dtype by :func:`select_kernel` and checked once on a small probe
against the plain-torch result, so a kernel that is missing or broken on some build falls back
instead of producing garbage:

- ``int8cpu``: the INT8 path of this project's CPU kernel (below): activations quantized to
  int8 per 32 columns, byte dot products against the stored integers. On the 6B model's shapes
  its products took up to a fifth longer than ``dynamic``'s, but its layout is plain tensors
  that a later start maps from the layout cache instead of packing again, and it rounds less.
- ``dynamic``: torch's dynamic INT8 linear (fbgemm/x86 on CPU). Activations are quantized per
  token on the fly; fbgemm packs the weights into a form of its own at every start.
- ``int8pack``: torch's weight-only INT8 matmul (CUDA, MPS; CPU with 16-bit activations).
- ``int4cpu``: this project's INT4 CPU kernel (:mod:`codegeex2_lsp.backends.local.int4_cpu`),
  built on the machine with its C compiler: activations quantized to int8 per 32 columns, byte
  dot products against the nibbles, so batch-1 decode is bound by reading the weights.
- ``int4pack``: torch's weight-only INT4 matmul (tinygemm on CUDA, its CPU and MPS versions), which
  takes 16-bit activations; on CPU it wants bfloat16.
- ``dequant``: plain torch, multiply the integers by their scales and run ``F.linear``; exact in
  the activation dtype, and the fallback everywhere.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from codegeex2_lsp.backends.local import int4_cpu

log = logging.getLogger(__name__)

INT4_GROUP_SIZE = 128
"""Columns sharing one scale when INT4 is made at load time: far less error than one per row."""

_INT4_KERNEL_GROUPS = (32, 64, 128, 256)

_TORCH_PACK_ROWS = 4096
"""Rows packed at a time for torch's CPU INT4 kernel; a multiple of its 64-row blocks, or the blocks
would be laid out differently from a whole-weight packing."""


def bits_of(quantize: str) -> int:
    """Integer bits per weight: 8 or 4 for ``int8``/``int4``; 0 for ``none``."""
    return {"none": 0, "int8": 8, "int4": 4}[quantize]


def quantize_weight(
    weight: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    *,
    scale_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization as upstream does it: ``scale = max|w| / (2^(bits-1) - 1)``.

    weight: [out, in] -> q: int8 [out, in] in [-2^(bits-1), 2^(bits-1) - 1], scale:
    ``scale_dtype`` [out, in / group_size] (one column when ``group_size`` is None: one scale per
    row). The integers are computed with the scales as stored, so float16 scales (upstream's)
    reproduce upstream's integers.
    """
    out_features, in_features = weight.shape
    group = group_size or in_features
    if in_features % group:
        raise ValueError(f"group size {group} does not divide {in_features} columns")
    top = 2 ** (bits - 1) - 1
    grouped = weight.float().reshape(out_features, in_features // group, group)
    scale = (grouped.abs().amax(dim=-1) / top).to(scale_dtype)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(grouped / scale.unsqueeze(-1)).clamp(-top - 1, top).to(torch.int8)
    return q.reshape(out_features, in_features), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``scale * q`` as a dense [out, in] tensor; scale: [out, groups]."""
    out_features, in_features = q.shape
    groups = scale.shape[1]
    grouped = q.reshape(out_features, groups, in_features // groups).to(torch.float32)
    return (grouped * scale.float().unsqueeze(-1)).reshape(out_features, in_features).to(dtype)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """The official packing: two values per byte, the even column in the high nibble.

    q: int8 [out, in] in [-8, 7] -> int8 [out, in / 2]
    """
    high = q[:, 0::2].to(torch.int16) << 4
    low = q[:, 1::2].to(torch.int16) & 0xF
    return ((high | low) & 0xFF).to(torch.uint8).view(torch.int8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`, with arithmetic shifts so the sign comes back.

    packed: int8 [out, in / 2] -> int8 [out, in]
    """
    packed = packed.view(torch.int8)
    high = packed >> 4
    low = (packed << 4) >> 4
    return torch.stack([high, low], dim=-1).reshape(packed.shape[0], packed.shape[1] * 2)


class Kernel(nn.Module):
    """``y = x @ (scale * q).T`` for one weight; subclasses hold it in their kernel's layout."""

    name = "dequant"
    q: torch.Tensor
    scale: torch.Tensor
    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        self.bits = 8
        self.register_buffer("q", q)
        self.register_buffer("scale", scale.to(torch.float32))
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, dequantize(self.q, self.scale, x.dtype))

    attributes: tuple[str, ...] = ("bits",)
    """What besides its tensors rebuilds this kernel (see :meth:`saved`)."""

    def saved(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The tensors, in this kernel's layout, and the attributes that rebuild it without
        packing again (:func:`restore_kernel`); the layout cache keeps them on disk."""
        tensors = {name: buffer for name, buffer in self.named_buffers(recurse=False)}
        return tensors, {name: getattr(self, name) for name in self.attributes}

    def saved_bytes(self) -> int:
        """About how many bytes :meth:`saved` gives, without making them."""
        return sum(b.numel() * b.element_size() for b in self.buffers(recurse=False))

    @classmethod
    def restore(
        cls, tensors: dict[str, torch.Tensor], attributes: dict[str, Any], dtype: torch.dtype
    ) -> Kernel:
        """The kernel around tensors already in its layout, as :meth:`saved` gave them."""
        kernel = cls.__new__(cls)
        nn.Module.__init__(kernel)
        kernel.dtype = dtype
        for name in cls.attributes:
            setattr(kernel, name, attributes[name])
        for name, tensor in tensors.items():
            kernel.register_buffer(name, tensor)
        return kernel


class Int4DequantKernel(Kernel):
    """The plain-torch INT4 fallback: kept packed, unpacked on every call."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__(pack_int4(q), scale, dtype)
        self.bits = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, dequantize(unpack_int4(self.q), self.scale, x.dtype))


class DynamicInt8Kernel(Kernel):
    """torch's dynamic INT8 linear: activations quantized per token, int8 dot products.

    The per-row scales become the quantized tensor's channel scales, exactly (float64 holds
    every float16/float32 value); only per-row weights are accepted.
    """

    name = "dynamic"

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> None:
        nn.Module.__init__(self)
        self.bits = 8
        self.dtype = dtype
        if scale.shape[1] != 1:
            raise ValueError("the dynamic INT8 kernel needs one scale per row")
        self.shape = tuple(q.shape)
        with warnings.catch_warnings():
            # The quantized-tensor API warns that it will move to torchao; it is still the
            # fastest INT8 CPU path in torch, and select_kernel falls back if it goes away.
            warnings.simplefilter("ignore")
            scales = scale[:, 0].to(torch.float64)
            zeros = torch.zeros(q.shape[0], dtype=torch.long)
            qweight = torch._make_per_channel_quantized_tensor(q, scales, zeros, 0)
            self.packed = torch.ops.quantized.linear_prepack(qweight, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(x.float(), self.packed, True)
        return y.to(x.dtype)

    def saved(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        # fbgemm's packed form is opaque: the integers and scales are kept, and packed again.
        qweight, _ = torch.ops.quantized.linear_unpack(self.packed)
        scale = qweight.q_per_channel_scales().to(torch.float32).unsqueeze(1)
        return {"q": qweight.int_repr(), "scale": scale}, {}

    def saved_bytes(self) -> int:
        rows, columns = self.shape
        return rows * columns + rows * 4

    @classmethod
    def restore(
        cls, tensors: dict[str, torch.Tensor], attributes: dict[str, Any], dtype: torch.dtype
    ) -> Kernel:
        return cls(tensors["q"], tensors["scale"], dtype)


class Int8PackKernel(Kernel):
    """torch's weight-only INT8 matmul (per-row scales), in the activation dtype.

    The scales are held in that dtype: cast on every call, they would be a computed input that
    the compiler's lowering of this matmul does not take.
    """

    name = "int8pack"

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> None:
        if scale.shape[1] != 1:
            raise ValueError("the INT8 matmul needs one scale per row")
        super().__init__(q, scale[:, 0], dtype)
        self.register_buffer("scale", scale[:, 0].to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        scale = self.scale if self.scale.dtype == x.dtype else self.scale.to(x.dtype)
        y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.q, scale)
        return y.reshape(*shape[:-1], -1)


class Int4PackKernel(Kernel):
    """torch's weight-only INT4 matmul; integers stored as unsigned nibbles with offset 8.

    It computes ``(u - 8) * scale + zero`` per group; with ``u = q + 8`` and zero 0 that is
    ``scale * q``. Per-row scales are repeated over kernel-sized groups, which is exact; the
    scales are held in the activation dtype (bfloat16 on CPU), the one rounding this makes.
    """

    name = "int4pack"

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> None:
        nn.Module.__init__(self)
        self.bits = 4
        self.dtype = dtype
        group = q.shape[1] // scale.shape[1]
        if group not in _INT4_KERNEL_GROUPS:
            fitting = [g for g in _INT4_KERNEL_GROUPS if group % g == 0]
            if not fitting:
                raise ValueError(f"INT4 matmul groups must divide {group}")
            scale = scale.repeat_interleave(group // fitting[-1], dim=1)
            group = fitting[-1]
        self.group_size = group
        if q.device.type == "cpu":
            # Row blocks pack independently; converting a block at a time keeps the int32
            # intermediate small (the 6B output layer would need a gigabyte for it at once).
            packed = torch.cat(
                [
                    torch._convert_weight_to_int4pack_for_cpu(
                        (block.to(torch.int32) + 8).contiguous(), 1
                    )
                    for block in q.split(_TORCH_PACK_ROWS)
                ]
            )
        else:
            unsigned = q.to(torch.int32) + 8
            nibbles = ((unsigned[:, 0::2] << 4) | unsigned[:, 1::2]).to(torch.uint8)
            packed = torch._convert_weight_to_int4pack(nibbles.contiguous(), 8)
        self.register_buffer("packed", packed)
        scales_and_zeros = torch.stack([scale.t(), torch.zeros_like(scale.t())], dim=-1)
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(dtype).contiguous())

    attributes = ("bits", "group_size")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).to(self.dtype)
        if flat.device.type == "cpu":
            y = torch._weight_int4pack_mm_for_cpu(
                flat, self.packed, self.group_size, self.scales_and_zeros
            )
        else:
            y = torch._weight_int4pack_mm(flat, self.packed, self.group_size, self.scales_and_zeros)
        return y.reshape(*shape[:-1], -1).to(x.dtype)


class Int4CpuKernel(Kernel):
    """The INT4 CPU kernel of :mod:`codegeex2_lsp.backends.local.int4_cpu`; computes in float32.

    The scales stay float32, so the integers and scales are used exactly as stored; only the
    activations are rounded (to int8 per 32 columns).
    """

    name = "int4cpu"
    width = 4
    """Bits per weight; the kernel's INT8 path is :class:`Int8CpuKernel`."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> None:
        nn.Module.__init__(self)
        library = int4_cpu.fast_library() if q.device.type == "cpu" else None
        if library is None:
            raise RuntimeError(f"the INT{self.width} CPU kernel is not available on this machine")
        self.bits = self.width
        self.dtype = dtype
        self.library = library
        self.rows = q.shape[0]
        self.group_size = q.shape[1] // scale.shape[1]
        pack = int4_cpu.pack if self.width == 4 else int4_cpu.pack8
        packed, tiled_scale = pack(q, scale, library.tile_rows)
        self.register_buffer("packed", packed)
        self.register_buffer("scale", tiled_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).float().contiguous()
        y = self.library.matmul(
            flat, self.packed, self.scale, self.group_size, self.rows, self.bits
        )
        return y.reshape(*shape[:-1], -1).to(x.dtype)

    attributes = ("bits", "rows", "group_size", "tile_rows")

    @property
    def tile_rows(self) -> int:
        return self.library.tile_rows

    @classmethod
    def restore(
        cls, tensors: dict[str, torch.Tensor], attributes: dict[str, Any], dtype: torch.dtype
    ) -> Kernel:
        library = int4_cpu.fast_library()
        if library is None or library.tile_rows != attributes["tile_rows"]:
            raise RuntimeError("the INT4 CPU kernel here lays weights out differently")
        kernel = cls.__new__(cls)
        nn.Module.__init__(kernel)
        kernel.library = library
        kernel.dtype = dtype
        kernel.bits = attributes["bits"]
        kernel.rows = attributes["rows"]
        kernel.group_size = attributes["group_size"]
        for name, tensor in tensors.items():
            kernel.register_buffer(name, tensor)
        return kernel


class Int8CpuKernel(Int4CpuKernel):
    """The INT8 path of the same CPU kernel: activations as int8 per 32 columns, byte dot
    products against the stored integers, one scale per row or group as stored. Unlike torch's
    dynamic INT8 linear, whose packed form is opaque and made again at every start, its layout
    is plain tensors, so a later load maps it from the layout cache."""

    name = "int8cpu"
    width = 8


_KERNELS: dict[str, type[Kernel]] = {
    "int8cpu": Int8CpuKernel,
    "dynamic": DynamicInt8Kernel,
    "int8pack": Int8PackKernel,
    "int4pack": Int4PackKernel,
    "int4cpu": Int4CpuKernel,
}


def restore_kernel(
    name: str, tensors: dict[str, torch.Tensor], attributes: dict[str, Any], dtype: torch.dtype
) -> Kernel:
    """The kernel ``name`` around tensors that :meth:`Kernel.saved` gave."""
    if name == "dequant":
        kind: type[Kernel] = Int4DequantKernel if attributes["bits"] == 4 else Kernel
    else:
        kind = _KERNELS[name]
    return kind.restore(tensors, attributes, dtype)


def kernel_candidates(device: torch.device, dtype: torch.dtype, bits: int) -> tuple[str, ...]:
    """Kernels to try, best first, for weights on ``device`` with activations in ``dtype``.

    On CPU (measured, see benchmarks/BENCHMARKS.md) this project's kernels come first: a later
    start maps their layout from the layout cache in seconds, INT4's decodes faster than torch's,
    and INT8's comes within a fifth of the dynamic INT8 linear, which beats the weight-only INT8
    matmul several times over. torch's INT4 kernel is slow with float32 activations and so is
    only tried in bfloat16.
    """
    if bits == 8:
        if device.type == "cpu":
            torch_kernels = ("dynamic", "int8pack") if dtype != torch.float32 else ("dynamic",)
            return ("int8cpu", *torch_kernels)
        return ("int8pack",)
    if device.type == "cpu":
        return ("int4cpu", "int4pack") if dtype == torch.bfloat16 else ("int4cpu",)
    if device.type == "cuda" and dtype != torch.bfloat16:
        return ()
    return ("int4pack",)


@functools.cache
def _kernel_works(name: str, device: torch.device, dtype: torch.dtype, bits: int) -> bool:
    """Run ``name`` once on a small random weight and compare with plain torch."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 512, generator=generator)
    x = torch.randn(3, 512, generator=generator).to(device=device, dtype=dtype)
    group = None if bits == 8 else INT4_GROUP_SIZE
    q, scale = quantize_weight(weight, bits, group)
    try:
        kernel = _KERNELS[name](q.to(device), scale.to(device), dtype)
        got = kernel(x).float().cpu()
    except Exception as error:
        log.info("%s kernel unavailable on %s/%s: %s", name, device, dtype, error)
        return False
    want = F.linear(x.float().cpu(), dequantize(q, scale, torch.float32))
    # Dynamic INT8 also rounds the activations: allow a few percent of the output's scale.
    tolerance = 0.05 * float(want.abs().max())
    ok = bool(torch.isfinite(got).all()) and float((got - want).abs().max()) <= tolerance
    if not ok:
        log.warning("%s kernel gives wrong results on %s/%s; not using it", name, device, dtype)
    return ok


def working_kernels(
    device: torch.device, dtype: torch.dtype, bits: int, *, per_row: bool
) -> Iterator[str]:
    """The candidates that work here, fastest first, each probed only once it is asked for;
    ``dequant`` (plain torch) last."""
    for name in kernel_candidates(device, dtype, bits):
        if (per_row or name not in ("dynamic", "int8pack")) and _kernel_works(
            name, device, dtype, bits
        ):
            yield name
    yield "dequant"


def select_kernel(device: torch.device, dtype: torch.dtype, bits: int, *, per_row: bool) -> str:
    """The first candidate that works here, or ``dequant``."""
    return next(working_kernels(device, dtype, bits, per_row=per_row))


def make_kernel(
    q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, bits: int, kernel: str | None = None
) -> Kernel:
    """The kernel module for one quantized weight, already on its device.

    q: int8 [out, in] (unpacked), scale: [out, groups]. ``kernel`` forces a choice (tests
    compare kernels); by default the fastest working kernel that takes this weight's shape.
    """
    if kernel is not None:
        return _make(kernel, q, scale, dtype, bits)
    for name in working_kernels(q.device, dtype, bits, per_row=scale.shape[1] == 1):
        try:
            return _make(name, q, scale, dtype, bits)
        except (RuntimeError, ValueError) as error:
            # Kernels have shape rules (the CPU INT4 ones want rows in multiples of 16).
            log.debug("%s kernel cannot take a %s weight (%s)", name, list(q.shape), error)
    raise AssertionError("the plain-torch kernel takes every weight")


def _make(name: str, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, bits: int) -> Kernel:
    if name == "dequant":
        return Int4DequantKernel(q, scale, dtype) if bits == 4 else Kernel(q, scale, dtype)
    return _KERNELS[name](q, scale, dtype)


def int4_group_size(in_features: int, preferred: int = INT4_GROUP_SIZE) -> int | None:
    """Columns per scale for INT4: ``preferred``, or the largest divisor of it from 32 on that
    divides ``in_features``; None (one scale per row) when none does."""
    group = math.gcd(in_features, preferred)
    return group if group >= 32 else None


class QuantLinear(nn.Module):
    """A drop-in for ``nn.Linear`` whose weight is INT8/INT4; the bias stays a float parameter."""

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        self.bias: nn.Parameter | None = (
            nn.Parameter(torch.empty(out_features, device="meta"), requires_grad=False)
            if bias
            else None
        )
        self.kernel: Kernel | None = None

    def set_weight(
        self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, kernel: str | None = None
    ) -> None:
        """Install the integers (int8 [out, in], unpacked) and scales ([out, groups])."""
        if tuple(q.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"quantized weight has shape {list(q.shape)}, "
                f"the layer needs {[self.out_features, self.in_features]}"
            )
        self.kernel = make_kernel(q, scale, dtype, self.bits, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        if self.kernel is None:
            raise RuntimeError("quantized weight not loaded")
        y = self.kernel(x)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        name = self.kernel.name if self.kernel is not None else "unset"
        return f"in={self.in_features}, out={self.out_features}, int{self.bits}, kernel={name}"


def swap_linears(model: nn.Module, bits: int, names: set[str]) -> None:
    """Replace the ``nn.Linear`` modules named in ``names`` by empty :class:`QuantLinear`."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, child)
        replacement = QuantLinear(
            linear.in_features, linear.out_features, linear.bias is not None, bits
        )
        setattr(parent, child, replacement)
