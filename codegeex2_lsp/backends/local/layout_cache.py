"""Quantized weights kept on disk in their kernels' layout, so a later start maps them.

Quantizing a full-precision checkpoint and laying the integers out for a kernel takes most of a
CPU load (tens of seconds for the 6B model); the result depends only on the checkpoint, the
precision, the kernel and this code. The first load writes each quantized linear's kernel
tensors into one file in the user's cache; every later load with the same key maps that file
and builds the kernels around the mapped tensors, without reading the checkpoint's quantized
weights at all. The mapping is shared with the page cache, so a warm start costs little more
than the checksum pass. (Copying the weights on into huge pages made the products a few percent
faster but a warm 6B start several seconds slower, benchmarks/BENCHMARKS.md.)

An entry is a directory named by its key, holding ``weights.bin`` and ``manifest.json``. It is
written in a temporary directory and renamed into place, so readers never see a partial entry
and concurrent writers leave one whole entry. Each tensor's checksum and the file's size are in
the manifest: a damaged entry is removed and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import torch

from codegeex2_lsp.backends.local import int4_cpu
from codegeex2_lsp.backends.local.quantize import Kernel, restore_kernel

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
"""Raised whenever a kernel's saved tensors or their meaning change: older entries then miss."""

MANIFEST = "manifest.json"
DATA = "weights.bin"
_ALIGN = 64

_DTYPES = {
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int32": torch.int32,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def cache_root() -> Path:
    """Where entries are kept: the user's cache directory, beside the built kernels."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "codegeex2-lsp" / "layouts"


def layout_key(files: Iterable[Path], settings: dict[str, Any]) -> str:
    """The key of the kernels' layout for a checkpoint's ``files`` loaded with ``settings``.

    A file counts by name, size and modification time, and by the name of what it resolves to:
    the hub's cache links every file to a blob named by its content hash, and a local file
    rewritten in place changes its time. Hashing the contents themselves would cost as much as
    the load this cache saves.
    """
    parts: list[Any] = [LAYOUT_VERSION, torch.__version__, settings]
    for path in sorted(files):
        stat = path.stat()
        parts.append([path.name, path.resolve().name, stat.st_size, stat.st_mtime_ns])
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def kernel_identity() -> dict[str, Any]:
    """What the saved layout of this machine's kernels depends on beyond their names."""
    library = int4_cpu.fast_library()
    return {"int4cpu": [library.isa, library.tile_rows] if library is not None else None}


def _checksum(data: torch.Tensor) -> int:
    """A sum of the bytes as 64-bit words: one pass at memory speed on torch's threads, and any
    change within one word changes it. Regions are padded to whole words with zeros."""
    return int(data.view(torch.int64).sum())


def _padded_checksum(raw: torch.Tensor) -> int:
    """:func:`_checksum` of ``raw`` followed by zeros, without copying ``raw``."""
    whole = raw.numel() - raw.numel() % 8
    tail = torch.zeros(8, dtype=torch.uint8)
    tail[: raw.numel() - whole] = raw[whole:]
    # torch's int64 sum wraps around; so must the sum of the two parts.
    total = _checksum(raw[:whole]) + _checksum(tail)
    return (total + 2**63) % 2**64 - 2**63


@dataclass(frozen=True)
class Entry:
    """One kept layout, as ``codegeex2-lsp cache`` lists it."""

    directory: Path
    source: str
    size: int
    created: float


class LayoutCache:
    """The entry for one key under ``root``."""

    def __init__(self, root: Path, key: str, source: str) -> None:
        self.root = root
        self.key = key
        self.source = source
        self.directory = root / key

    def load(self, dtype: torch.dtype) -> dict[str, Kernel] | None:
        """The kernels of every quantized linear, by module name, around the mapped file; None
        when there is no whole entry (a damaged one is removed, so the next load rebuilds it)."""
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            return self._read(manifest_path, dtype)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            log.warning("the kept layout %s is damaged (%s); it will be rebuilt", self.key, error)
            shutil.rmtree(self.directory, ignore_errors=True)
            return None

    def _read(self, manifest_path: Path, dtype: torch.dtype) -> dict[str, Kernel]:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("version") != LAYOUT_VERSION or manifest.get("key") != self.key:
            raise ValueError("written for another layout")
        data_path = self.directory / DATA
        size = int(manifest["size"])
        if data_path.stat().st_size != size:
            raise ValueError(f"{DATA} has {data_path.stat().st_size} bytes, not {size}")
        # Copy-on-write, as checkpoint shards are mapped: torch wants a writable buffer, and
        # nothing writes to it, so every page stays shared with the page cache.
        mapped = torch.frombuffer(numpy.memmap(data_path, numpy.uint8, mode="c"), dtype=torch.uint8)
        kernels: dict[str, Kernel] = {}
        for module, saved in manifest["modules"].items():
            tensors = {}
            for name, where in saved["tensors"].items():
                start, stored = int(where["offset"]), int(where["stored"])
                region = mapped[start : start + stored]
                if _checksum(region) != int(where["checksum"]):
                    raise ValueError(f"{module}.{name} does not match its checksum")
                shape = [int(n) for n in where["shape"]]
                tensor_dtype = _DTYPES[where["dtype"]]
                count = int(numpy.prod(shape)) * torch.empty((), dtype=tensor_dtype).element_size()
                tensors[name] = region[:count].view(tensor_dtype).view(shape)
            kernels[module] = restore_kernel(saved["kernel"], tensors, saved["attributes"], dtype)
        log.info("mapped the kept layout of %d quantized weights (%s)", len(kernels), self.key)
        return kernels

    def save(self, kernels: dict[str, Kernel]) -> None:
        """Write the entry, unless one is there already or the disk lacks room; never raises
        for a full or unwritable cache, since the model is loaded either way."""
        if (self.directory / MANIFEST).is_file():
            return
        total = sum(kernel.saved_bytes() for kernel in kernels.values())
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.root).free
            if free < total * 1.1:
                log.warning(
                    "not keeping the quantized layout: it needs %.1f GB, %.1f GB free in %s",
                    total / 1e9,
                    free / 1e9,
                    self.root,
                )
                return
            partial = Path(tempfile.mkdtemp(prefix=f".{self.key}-", dir=self.root))
        except OSError as error:
            log.warning("not keeping the quantized layout in %s: %s", self.root, error)
            return
        try:
            self._write(partial, kernels)
            self._drop_older_entries()
            try:
                os.rename(partial, self.directory)
            except OSError:
                # Another process kept the same layout first; its entry is as good as ours.
                if not (self.directory / MANIFEST).is_file():
                    raise
        except OSError as error:
            log.warning("not keeping the quantized layout in %s: %s", self.root, error)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _write(self, partial: Path, kernels: dict[str, Kernel]) -> None:
        modules: dict[str, Any] = {}
        offset = 0
        with open(partial / DATA, "wb") as data:
            for module, kernel in kernels.items():
                # One module at a time: a kernel that must unpack to save makes a transient copy.
                tensors, attributes = kernel.saved()
                places = {}
                for name, tensor in tensors.items():
                    raw = tensor.detach().contiguous().view(-1).view(torch.uint8)
                    stored = raw.numel() + (-raw.numel()) % _ALIGN
                    # Written from the tensor's own memory, the padding after it: a copy of a
                    # 100 MB weight here would raise the first load's peak by as much.
                    data.write(raw.numpy().data)
                    data.write(bytes(stored - raw.numel()))
                    places[name] = {
                        "dtype": str(tensor.dtype).removeprefix("torch."),
                        "shape": list(tensor.shape),
                        "offset": offset,
                        "stored": stored,
                        "checksum": _padded_checksum(raw),
                    }
                    offset += stored
                modules[module] = {
                    "kernel": kernel.name,
                    "attributes": attributes,
                    "tensors": places,
                }
            data.flush()
            os.fsync(data.fileno())
        manifest = {
            "version": LAYOUT_VERSION,
            "key": self.key,
            "source": self.source,
            "size": offset,
            "created": time.time(),
            "modules": modules,
        }
        # The manifest goes last: a directory without one is never read.
        (partial / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")

    def _drop_older_entries(self) -> None:
        """A checkpoint changed or loaded with other settings leaves its older entries unused;
        only the entries of other checkpoints are kept."""
        for entry in list_entries(self.root):
            if entry.source == self.source and entry.directory != self.directory:
                shutil.rmtree(entry.directory, ignore_errors=True)


def list_entries(root: Path | None = None) -> list[Entry]:
    """The whole entries under ``root`` (the user's cache by default), newest first."""
    root = root or cache_root()
    entries = []
    for manifest_path in root.glob(f"*/{MANIFEST}"):
        if manifest_path.parent.name.startswith("."):
            continue  # being written
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            size = (manifest_path.parent / DATA).stat().st_size
            entries.append(
                Entry(
                    manifest_path.parent,
                    str(manifest["source"]),
                    size,
                    float(manifest["created"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(entries, key=lambda entry: -entry.created)


def clear(root: Path | None = None) -> int:
    """Remove every entry and any partial one; returns the bytes freed."""
    root = root or cache_root()
    freed = 0
    if not root.is_dir():
        return 0
    for child in root.iterdir():
        if child.is_dir():
            freed += sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
            shutil.rmtree(child, ignore_errors=True)
    return freed
