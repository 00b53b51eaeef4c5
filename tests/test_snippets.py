"""Context from other files, the pure parts and the index: parsing, discovery, resolution,
selection, rendering, the budget, and the block's stability while the user types."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from codegeex2_lsp.completion.pipeline import prepare
from codegeex2_lsp.completion.prompt import Context, LineTokenCache
from codegeex2_lsp.context.files import Limits, read_source, walk
from codegeex2_lsp.context.index import Workspace
from codegeex2_lsp.context.parsing import parse
from codegeex2_lsp.context.render import Snippet, comment_prefix, render, snippet_lines
from codegeex2_lsp.context.select import (
    ContextRequest,
    ContextSelector,
    OpenDocument,
    Use,
    jaccard,
    uses_near,
)
from codegeex2_lsp.lsp.text import LspText
from codegeex2_lsp.settings.fields import Settings

TAG = "# language: Python"

MODELS = """\
class User:
    def __init__(self, name: str) -> None:
        self.name = name


def make_user(name: str) -> User:
    return User(name)
"""

APP_HEAD = "from pkg.models import make_user\n\n\ndef main():\n"


def encode_line(line: str) -> tuple[int, ...]:
    """One id per character: token counts are character counts."""
    return tuple(ord(char) for char in line)


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def indexed(root: Path) -> Workspace:
    workspace = Workspace()
    workspace.start()
    workspace.set_roots([root])
    assert workspace.wait_settled(60)
    return workspace


def request(path: Path, text: str, budget: int = 400, **extra: object) -> ContextRequest:
    return ContextRequest(
        path.resolve(), LspText(text), len(text), "python", TAG, budget, encode_line, **extra
    )  # type: ignore[arg-type]


# -- parsing -----------------------------------------------------------------------------------

LANGUAGE_SAMPLES = [
    (
        "python",
        "import os\n@dec\ndef area(r):\n    return r\nclass Shape:\n    pass\n",
        {"area", "Shape"},
    ),
    (
        "javascript",
        (
            "import { a } from './a';\nexport function area(r) {\n"
            "  return r;\n}\nconst Shape = () => 1;\n"
        ),
        {"area", "Shape"},
    ),
    (
        "typescript",
        (
            "import type { R } from './r';\n"
            "export interface Shape { area(): number }\n"
            "export type Id = string;\n"
            "export function area(r: number): number { return r; }\n"
        ),
        {"area", "Shape", "Id"},
    ),
    (
        "go",
        (
            'package g\nimport "fmt"\ntype Shape struct {\n  R int\n}\n'
            "func Area(r int) int { return r }\n"
        ),
        {"Area", "Shape"},
    ),
    (
        "rust",
        "use crate::geo::Point;\npub struct Shape { r: f64 }\npub fn area(r: f64) -> f64 { r }\n",
        {"area", "Shape"},
    ),
    (
        "java",
        "import a.b.C;\npublic class Shape {\n  public double area() { return 1; }\n}\n",
        {"Shape"},
    ),
    (
        "c",
        '#include "geo.h"\ntypedef struct { int r; } Shape;\nint area(int r);\n#define PI 3\n',
        {"area", "Shape", "PI"},
    ),
    (
        "cpp",
        '#include "geo.hpp"\nnamespace g {\nclass Shape {\n public:\n  int area() const;\n};\n}\n',
        {"Shape"},
    ),
]


@pytest.mark.parametrize(
    ("language", "text", "names"),
    LANGUAGE_SAMPLES,
    ids=lambda v: v if isinstance(v, str) and len(v) < 12 else "",
)
def test_each_language_yields_its_top_level_definitions_and_imports(
    language: str, text: str, names: set[str]
) -> None:
    symbols = parse(text, language)
    assert symbols is not None
    top = {d.name for d in symbols.definitions if d.member_of is None}
    assert names <= top
    assert symbols.imports, "every sample imports something"


def test_a_long_definition_is_summarised_by_its_headers() -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(30))
    text = (
        f"class Big(Base):\n    def first(self, a: int) -> int:\n"
        f"{body}    def second(self):\n        pass\n"
    )
    symbols = parse(text, "python")
    assert symbols is not None
    big = next(d for d in symbols.definitions if d.name == "Big")
    assert big.header == "class Big(Base):"
    assert big.snippet.split("\n") == [
        "class Big(Base):",
        "    def first(self, a: int) -> int:",
        "    def second(self):",
    ]


def test_python_imports_bind_local_names_to_originals() -> None:
    symbols = parse("from .models import User as U, make_user\nimport pkg.util\n", "python")
    assert symbols is not None
    first, second = symbols.imports
    assert first.relative and first.names == (("U", "User"), ("make_user", "make_user"))
    assert second.names == (("pkg", ""),)


# -- discovery ---------------------------------------------------------------------------------


def test_walk_respects_gitignore_nested_negation_and_skips_what_is_not_source(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            ".gitignore": "build/\n*.log\n",
            "build/gen.py": "x = 1\n",
            "a.log": "log\n",
            "sub/.gitignore": "!keep.log\n",
            "sub/keep.log": "kept\n",
            "node_modules/dep/index.js": "x\n",
            "src/main.py": "x = 1\n",
        },
    )
    found = {path.relative_to(tmp_path).as_posix() for path in walk(tmp_path)}
    assert found == {".gitignore", "sub/.gitignore", "sub/keep.log", "src/main.py"}


def test_the_exclusion_predicate_is_asked_once_per_file(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "", "b.py": "", "c/d.py": ""})
    asked: list[str] = []

    def excluded(path: Path) -> bool:
        asked.append(path.name)
        return path.name == "b.py"

    found = {path.name for path in walk(tmp_path, excluded=excluded)}
    assert found == {"a.py", "d.py"}
    assert sorted(asked) == ["a.py", "b.py", "d.py"]


def test_binary_oversized_and_invalid_utf8_files_are_not_read(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "ok.py": "def f(): pass\n",
            "binary.py": b"def f(): pass\n\x00\x01",
            "latin1.py": "caf\u00e9 = 1\n".encode("latin-1"),
            "big.py": "x = 1\n" * 100,
        },
    )
    limits = Limits(max_file_bytes=200)
    assert read_source(tmp_path / "ok.py", limits) == "def f(): pass\n"
    assert read_source(tmp_path / "binary.py", limits) is None
    assert read_source(tmp_path / "latin1.py", limits) is None
    assert read_source(tmp_path / "big.py", limits) is None


def test_symlink_loops_and_unreadable_entries_end_in_log_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, {"pkg/a.py": "x = 1\n"})
    os.symlink(tmp_path, tmp_path / "pkg" / "loop")
    os.symlink("self.py", tmp_path / "self.py")
    with caplog.at_level(logging.INFO, logger="codegeex2_lsp.context"):
        found = {path.relative_to(tmp_path).as_posix() for path in walk(tmp_path)}
    assert found == {"pkg/a.py"}
    messages = [record.getMessage() for record in caplog.records]
    assert any("already read (a loop?)" in message for message in messages)
    assert any("self.py" in message and "cannot read" in message for message in messages)


def test_the_file_limit_stops_the_walk(tmp_path: Path) -> None:
    write(tmp_path, {f"m{i}.py": "" for i in range(10)})
    assert len(list(walk(tmp_path, limits=Limits(max_files=4)))) == 4


# -- the index ---------------------------------------------------------------------------------


def test_selection_uses_what_is_indexed_while_the_index_is_still_being_built(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"a/models.py": MODELS, **{f"b/m{i}.py": f"v{i} = {i}\n" for i in range(20)}})
    reading = threading.Event()
    release = threading.Event()

    def gated_read(path: Path, limits: Limits) -> str | None:
        if path.parent.name == "b":
            reading.set()
            assert release.wait(60)
        return read_source(path, limits)

    workspace = Workspace(read=gated_read)
    workspace.start()
    workspace.set_roots([tmp_path])
    try:
        assert reading.wait(60)
        assert not workspace.settled()
        selector = ContextSelector(workspace.index)
        app = tmp_path / "app.py"
        block = selector.block(request(app, APP_HEAD + "    user = make_user('a')\n    "))
        assert "# def make_user(name: str) -> User:" in block.text
    finally:
        release.set()
    assert workspace.wait_settled(60)
    assert len(workspace.index) == 21
    workspace.close()


def test_open_documents_win_over_the_disk_and_deleted_files_drop_out(tmp_path: Path) -> None:
    write(tmp_path, {"pkg/models.py": MODELS, "pkg/extra.py": "def helper():\n    pass\n"})
    workspace = indexed(tmp_path)
    models = (tmp_path / "pkg" / "models.py").resolve()
    workspace.opened(models, "def make_user(name, admin):\n    pass\n")
    assert workspace.wait_settled(60)
    file = workspace.index.file(models)
    assert file is not None
    assert file.symbols.definitions[0].header == "def make_user(name, admin):"
    extra = (tmp_path / "pkg" / "extra.py").resolve()
    extra.unlink()
    workspace.changed_on_disk(extra)
    assert workspace.wait_settled(60)
    assert workspace.index.file(extra) is None
    assert workspace.index.defining("helper") == []
    workspace.close()


# -- resolution and selection ------------------------------------------------------------------

RESOLUTION_CASES = [
    (
        "python-relative",
        {"pkg/models.py": MODELS, "pkg/app.py": ""},
        "pkg/app.py",
        "python",
        "from .models import make_user as mk\n\nx = mk('a')\n",
        "def make_user(name: str) -> User:",
    ),
    (
        "typescript",
        {
            "src/geo/shape.ts": "export function area(r: number): number {\n  return r * r;\n}\n",
            "src/app.ts": "",
        },
        "src/app.ts",
        "typescript",
        "import { area } from './geo/shape';\n\nconst a = area(2);\n",
        "export function area(r: number): number {",
    ),
    (
        "javascript-index",
        {
            "lib/util/index.js": "export function clamp(x, lo, hi) {\n  return x;\n}\n",
            "lib/main.js": "",
        },
        "lib/main.js",
        "javascript",
        "import { clamp } from './util';\n\nconst c = clamp(1, 0, 2);\n",
        "export function clamp(x, lo, hi) {",
    ),
    (
        "go-package",
        {
            "go.mod": "module example.com/proj\n",
            "geo/shape.go": "package geo\n\nfunc Area(r int) int {\n\treturn r * r\n}\n",
            "main.go": "",
        },
        "main.go",
        "go",
        'package main\n\nimport "example.com/proj/geo"\n\nfunc main() {\n\ta := geo.Area(2)\n',
        "func Area(r int) int {",
    ),
    (
        "rust",
        {"src/geo.rs": "pub fn area(r: f64) -> f64 {\n    r * r\n}\n", "src/main.rs": ""},
        "src/main.rs",
        "rust",
        "use crate::geo::area;\n\nfn main() {\n    let a = area(2.0);\n",
        "pub fn area(r: f64) -> f64 {",
    ),
    (
        "java",
        {
            "src/com/x/geo/Shape.java": (
                "package com.x.geo;\npublic class Shape {\n"
                "  public double area() { return 1; }\n}\n"
            ),
            "src/com/x/App.java": "",
        },
        "src/com/x/App.java",
        "java",
        (
            "package com.x;\nimport com.x.geo.Shape;\nclass App {\n"
            "  void run() {\n    Shape s = new Shape();\n"
        ),
        "public class Shape {",
    ),
    (
        "c-include",
        {"include/geo.h": "int area(int r);\n", "src/main.c": ""},
        "src/main.c",
        "c",
        '#include "geo.h"\n\nint main(void) {\n  int a = area(2);\n',
        "int area(int r);",
    ),
    (
        "cpp-include",
        {"geo.hpp": "class Shape {\n public:\n  int area() const;\n};\n", "main.cpp": ""},
        "main.cpp",
        "cpp",
        '#include "geo.hpp"\n\nint main() {\n  Shape s;\n',
        "class Shape {",
    ),
]


@pytest.mark.parametrize(
    ("case", "files", "current", "language", "text", "header"),
    RESOLUTION_CASES,
    ids=[case[0] for case in RESOLUTION_CASES],
)
def test_a_name_used_near_the_cursor_brings_its_definition_from_another_file(
    tmp_path: Path,
    case: str,
    files: dict[str, str],
    current: str,
    language: str,
    text: str,
    header: str,
) -> None:
    write(tmp_path, files)
    workspace = indexed(tmp_path)
    path = (tmp_path / current).resolve()
    workspace.opened(path, text)
    assert workspace.wait_settled(60)
    selector = ContextSelector(workspace.index)
    tag = "# language: Python" if language == "python" else "// language: X"
    block = selector.block(
        ContextRequest(path, LspText(text), len(text), language, tag, 400, encode_line)
    )
    prefix = tag.split(" ")[0]
    assert f"{prefix} {header}\n" in block.text, block.text
    workspace.close()


def test_uses_near_leaves_out_the_word_being_typed_and_puts_the_nearest_first() -> None:
    assert uses_near("a = geo.Area(x)\nmake_us") == [
        Use("x"),
        Use("Area", "geo"),
        Use("geo"),
        Use("a"),
    ]


def test_jaccard_of_identifier_sets() -> None:
    assert jaccard(frozenset({"a", "b"}), frozenset({"b", "c"})) == pytest.approx(1 / 3)
    assert jaccard(frozenset(), frozenset()) == 0.0


def test_similar_windows_of_open_documents_and_recent_edits_fill_the_rest(tmp_path: Path) -> None:
    write(tmp_path, {"pkg/models.py": MODELS})
    workspace = indexed(tmp_path)
    selector = ContextSelector(workspace.index)
    other = tmp_path / "pkg" / "report.py"
    other_text = (
        "def render_report(rows, width):\n    for row in rows:\n        print(row.ljust(width))\n"
    )
    notes = tmp_path / "pkg" / "notes.py"
    notes_text = "\n".join(f"n{i} = {i}" for i in range(20))
    selector.edited(notes, 10)
    documents = [
        OpenDocument(other, 1, lambda: other_text, "python"),
        OpenDocument(notes, 1, lambda: notes_text, "python"),
    ]
    text = "def show(rows, width):\n    for row in rows:\n        "
    block = selector.block(request(tmp_path / "app.py", text, open_documents=documents))
    origins = [snippet.origin for snippet in block.snippets]
    assert origins[-1].startswith("similar")
    assert "edited recently" in origins
    assert "# n10 = 10\n" in block.text
    workspace.close()


# -- rendering and the budget ------------------------------------------------------------------


def test_snippets_are_comments_of_the_documents_language_with_a_path_line() -> None:
    assert comment_prefix("# language: Python") == "#"
    assert comment_prefix("// language: Go") == "//"
    assert comment_prefix("-- language: SQL") == "--"
    assert comment_prefix("<!--language: HTML-->") is None
    assert comment_prefix("/* language: CSS */") is None
    snippet = Snippet("pkg/models.py", "def f():\n\n    return 1", "definition of f", 0)
    block = render([snippet], "#", encode_line)
    assert block.text == "# path: pkg/models.py\n# def f():\n#\n#     return 1\n"
    assert block.ids == encode_line(block.text)


def test_the_block_fits_its_budget_and_falls_back_to_headers(tmp_path: Path) -> None:
    write(tmp_path, {"pkg/models.py": MODELS})
    workspace = indexed(tmp_path)
    selector = ContextSelector(workspace.index)
    text = APP_HEAD + "    u = make_user('a')\n    "
    for budget in (20, 60, 80, 200, 1000):
        block = selector.block(request(tmp_path / "pkg" / "app.py", text, budget))
        assert len(block.ids) <= budget
    small = selector.block(request(tmp_path / "pkg" / "app.py", text, 60))
    assert small.text == "# path: pkg/models.py\n# def make_user(name: str) -> User:\n"
    workspace.close()


def test_the_prompt_puts_the_block_after_the_tag_and_the_file_keeps_priority(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"pkg/models.py": MODELS})
    workspace = indexed(tmp_path)
    selector = ContextSelector(workspace.index)
    path = tmp_path / "pkg" / "app.py"
    text = APP_HEAD + "    x = 1\n" * 200 + "    u = make_user('a')\n    "
    cache = LineTokenCache(lambda line: [ord(char) for char in line])

    def context(document: LspText, offset: int, language: str | None, budget: int) -> Context:
        block = selector.block(
            ContextRequest(
                path.resolve(), document, offset, language, TAG, budget, cache.encode_line
            )
        )
        return block.text, block.ids

    settings = Settings(max_context_tokens=600, max_new_tokens=64, context_tokens=512)
    prepared = prepare(
        text, 205, 4, settings=settings, cache=cache, language_id="python", context=context
    )
    assert prepared is not None
    prompt = prepared.prompt.text
    assert prompt.startswith(TAG + "\n# path: pkg/models.py\n# def make_user(")
    assert len(prepared.prompt.ids) <= settings.prompt_budget()
    block_chars = prompt.index("    x = 1")
    assert block_chars - len(TAG) - 1 <= (settings.prompt_budget() - len(TAG) - 1) // 2
    off = prepare(
        text,
        205,
        4,
        settings=Settings(max_context_tokens=600, context_tokens=0),
        cache=cache,
        language_id="python",
        context=context,
    )
    assert off is not None and "# path:" not in off.prompt.text
    workspace.close()


# -- stability ---------------------------------------------------------------------------------


def test_the_block_stays_while_a_function_is_typed_and_changes_only_when_it_must(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            "pkg/models.py": MODELS,
            # ``sho`` is what ``shout`` reads as while it is typed: never looked up.
            "pkg/text.py": (
                "def shout(s: str) -> str:\n    return s.upper()\n\n\ndef sho(x):\n    return x\n"
            ),
        },
    )
    workspace = indexed(tmp_path)
    selector = ContextSelector(workspace.index)
    app = tmp_path / "pkg" / "app.py"
    head = (
        "from pkg.models import make_user\nfrom pkg import text\n\n\n"
        "def main():\n    u = make_user('a')\n"
    )
    typed = "    total = 0\n    for i in range(10):\n        total += i * 2\n    return total\n"
    blocks = []
    for end in range(len(typed) + 1):
        blocks.append(selector.block(request(app, head + typed[:end])).ids)
    assert len(set(blocks)) == 1, "typing code that uses no new name keeps the block"
    assert selector.rebuilds == 1
    rebuilds = selector.rebuilds
    uses = "    s = text.shout(u.name)\n"
    changed = [
        selector.block(request(app, head + typed + uses[:end])).ids for end in range(len(uses) + 1)
    ]
    assert len(set(changed)) == 2, "the block changes once, when shout is complete"
    assert "# def shout(s: str) -> str:\n" in "".join(map(chr, changed[-1]))
    assert selector.rebuilds - rebuilds <= 3
    models = (tmp_path / "pkg" / "models.py").resolve()
    workspace.opened(
        models, MODELS.replace("def make_user(name: str)", "def make_user(name: str, admin: bool)")
    )
    assert workspace.wait_settled(60)
    edited = selector.block(request(app, head + typed + uses))
    assert "# def make_user(name: str, admin: bool) -> User:\n" in edited.text
    workspace.close()


def test_snippet_lines_end_at_every_lsp_break_and_encode() -> None:
    snippet = Snippet("pkg/\ud800odd.py", "def f():\r    return 1\r\n\ud83d x = 2", "definition", 0)
    lines = snippet_lines(snippet, "#")
    assert lines == [
        "# path: pkg/\ufffdodd.py\n",
        "# def f():\n",
        "#     return 1\n",
        "# \ufffd x = 2\n",
    ]
    for line in lines:
        line.encode("utf-8")


def test_a_document_with_lone_surrogates_still_parses() -> None:
    symbols = parse("def ok():\n    return '\ud800'\n\n\ndef after():\n    pass\n", "python")
    assert symbols is not None
    assert [d.name for d in symbols.definitions] == ["ok", "after"]
