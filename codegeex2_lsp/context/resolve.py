"""Which workspace files an import names, per language family, through the index's module keys.

Only imports that lead into the workspace resolve; a package from a registry or the standard
library names no file here and adds nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from codegeex2_lsp.context.index import IndexedFile, SymbolIndex
from codegeex2_lsp.context.parsing import Import, family

SCRIPT_SUFFIXES = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs")


def resolve(importer: IndexedFile, imported: Import, index: SymbolIndex) -> list[IndexedFile]:
    group = family(importer.symbols.language)
    if group == "python":
        return _python(importer, imported, index)
    if group == "javascript":
        return _script(importer, imported, index)
    if group == "c":
        return _include(importer, imported, index)
    if group == "go":
        return _suffixes(index, "go", imported.source.split("/"), folder=True)
    if group == "java":
        source = imported.source
        if source.endswith(".*"):
            return _keyed(index, "java", source[:-2].replace(".", "/") + "/")
        return _keyed(index, "java", source.replace(".", "/"))
    if group == "rust":
        return _rust(importer, imported, index)
    return []


def neighbours(importer: IndexedFile, index: SymbolIndex) -> list[IndexedFile]:
    """Files whose names a file uses without importing them: its Go package or Java package."""
    if importer.symbols.language not in ("go", "java") or importer.root is None:
        return []
    try:
        folder = importer.path.parent.relative_to(importer.root).as_posix()
    except ValueError:
        return []
    key = (folder + "/") if folder != "." else ""
    if not key:
        return []
    return [
        found
        for found in index.modules(importer.symbols.language, key)
        if found.path.parent == importer.path.parent and found.path != importer.path
    ]


def _keyed(index: SymbolIndex, language: str, key: str) -> list[IndexedFile]:
    return index.modules(language, key) if key and key != "/" else []


def _exact(index: SymbolIndex, *paths: Path) -> list[IndexedFile]:
    found = []
    for path in paths:
        indexed = index.file(Path(os.path.normpath(path)))
        if indexed is not None:
            found.append(indexed)
    return found


def _suffixes(
    index: SymbolIndex, language: str, parts: list[str], *, folder: bool = False
) -> list[IndexedFile]:
    """The files of the longest trailing part of ``parts`` the index knows."""
    for start in range(len(parts)):
        key = "/".join(parts[start:]) + ("/" if folder else "")
        found = _keyed(index, language, key)
        if found:
            return found
    return []


def _python(importer: IndexedFile, imported: Import, index: SymbolIndex) -> list[IndexedFile]:
    source = imported.source
    originals = [original for _, original in imported.names if original]
    if imported.relative:
        dots = len(source) - len(source.lstrip("."))
        base = importer.path.parent
        for _ in range(dots - 1):
            base = base.parent
        rest = source[dots:]
        target = base.joinpath(*rest.split(".")) if rest else base
        found = _exact(index, target.with_suffix(".py"), target / "__init__.py")
        found += _exact(index, *(target / f"{name}.py" for name in originals))
        return found
    key = source.replace(".", "/")
    found = _keyed(index, "python", key) or _keyed(index, "python", key + "/")
    for name in originals:
        found += _keyed(index, "python", f"{key}/{name}")
    return _nearest(importer, found)


def _script(importer: IndexedFile, imported: Import, index: SymbolIndex) -> list[IndexedFile]:
    if not imported.relative:
        return []
    target = importer.path.parent / imported.source
    candidates = [target]
    stem = target.with_suffix("") if target.suffix in (".js", ".mjs", ".cjs", ".jsx") else target
    candidates += [Path(f"{stem}{suffix}") for suffix in SCRIPT_SUFFIXES]
    candidates += [target / f"index{suffix}" for suffix in SCRIPT_SUFFIXES]
    found = _exact(index, *candidates)
    return found[:1]


def _include(importer: IndexedFile, imported: Import, index: SymbolIndex) -> list[IndexedFile]:
    found = _exact(index, importer.path.parent / imported.source)
    if found:
        return found
    return _nearest(importer, _keyed(index, importer.symbols.language, imported.source))


def _rust(importer: IndexedFile, imported: Import, index: SymbolIndex) -> list[IndexedFile]:
    if imported.relative:
        name = imported.source
        base = importer.path.parent
        if importer.path.stem not in ("mod", "lib", "main"):
            base = base / importer.path.stem
        return _exact(index, base / f"{name}.rs", base / name / "mod.rs")
    parts = [part for part in imported.source.split("::") if part not in ("crate", "self", "super")]
    if not parts:
        return []
    return _nearest(
        importer,
        _keyed(index, "rust", "/".join(parts)) or _keyed(index, "rust", "/".join(parts) + "/"),
    )


def _nearest(importer: IndexedFile, found: list[IndexedFile]) -> list[IndexedFile]:
    """Files of the importer's own workspace folder first, at most a few: a module name many
    folders share is more likely the importer's neighbour than a far one."""
    found = list(dict.fromkeys(found))
    found.sort(key=lambda other: (other.root != importer.root, distance(importer.path, other.path)))
    return found[:4]


def distance(a: Path, b: Path) -> int:
    """Steps from one file to the other through their folders: nearer files are likelier kin."""
    common = 0
    for left, right in zip(a.parts, b.parts, strict=False):
        if left != right:
            break
        common += 1
    return len(a.parts) + len(b.parts) - 2 * common
