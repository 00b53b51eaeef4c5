"""Language ids from every editor map to one canonical id, and canonical ids to the model's tags."""

from __future__ import annotations

from pathlib import Path, PureWindowsPath

import pytest

from codegeex2_lsp.completion import languages
from codegeex2_lsp.completion.languages import (
    UPSTREAM_TAGS,
    canonical_language_id,
    language_id_for_path,
    tag_line,
)

# The model's own tag list, copied verbatim from upstream into the test data: an independent
# reference the package's table is checked against.
MODEL_TAGS_FILE = Path(__file__).parent / "data" / "language_tags.tsv"


def _model_tags() -> dict[str, str]:
    header, *rows = MODEL_TAGS_FILE.read_text(encoding="utf-8").splitlines()
    assert header.split("\t") == ["key", "tag_line"]
    tags = dict(row.split("\t", 1) for row in rows if row)
    assert len(tags) == len([row for row in rows if row]), "a key is listed twice"
    return tags


MODEL_TAGS = _model_tags()


def tag_for(language_id: str | None) -> str | None:
    """The tag line for what an editor sends: made canonical first, as a request is."""
    return tag_line(canonical_language_id(language_id))


def test_the_tag_table_is_the_models_verbatim() -> None:
    assert len(MODEL_TAGS) >= 100
    assert UPSTREAM_TAGS == MODEL_TAGS


@pytest.mark.parametrize("key", sorted(MODEL_TAGS))
def test_every_key_the_model_knows_gets_its_tag(key: str) -> None:
    assert tag_for(key) == MODEL_TAGS[key]


def test_every_tag_the_model_knows_is_reachable_from_a_canonical_id() -> None:
    reached = {tag_for(canonical) for canonical in languages._TAG_KEYS}
    assert set(MODEL_TAGS.values()) <= reached


def test_no_tag_line_is_invented() -> None:
    """Whatever an editor sends, the tag line is one the model was trained with, or none."""
    sent = [*languages._TAG_KEYS, *languages._ALIASES, *MODEL_TAGS]
    produced = {tag_for(language_id) for language_id in sent} - {None}
    assert produced <= set(MODEL_TAGS.values())


def test_tag_keys_name_upstream_keys() -> None:
    keys = {key for key in languages._TAG_KEYS.values() if key is not None}
    assert keys <= set(UPSTREAM_TAGS)


@pytest.mark.parametrize("source", sorted(languages._SOURCES))
def test_every_alias_leads_to_a_canonical_id(source: str) -> None:
    table = languages._SOURCES[source]
    assert table, source
    for language_id, canonical in table.items():
        assert language_id == language_id.strip().lower(), language_id
        assert canonical in languages._TAG_KEYS, (language_id, canonical)
        assert canonical_language_id(language_id) == canonical, language_id


def test_editors_agree_on_the_ids_they_share() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for source, table in languages._SOURCES.items():
        for language_id, canonical in table.items():
            if language_id in seen:
                assert seen[language_id][1] == canonical, (language_id, seen[language_id], source)
            seen[language_id] = (source, canonical)


def test_file_name_tables_lead_to_canonical_ids() -> None:
    targets = [*languages._EXTENSIONS.values(), *languages._FILE_NAMES.values()]
    assert set(targets) <= set(languages._TAG_KEYS)
    narrowed = {member for members in languages._NARROWER.values() for member in members}
    assert set(languages._NARROWER) | narrowed <= set(languages._TAG_KEYS)


@pytest.mark.parametrize(
    ("sent", "canonical"),
    [
        # VS Code
        ("python", "python"),
        ("typescriptreact", "typescriptreact"),
        ("javascriptreact", "javascriptreact"),
        ("shellscript", "shellscript"),
        ("objective-cpp", "objective-cpp"),
        ("cuda-cpp", "cuda-cpp"),
        ("literate haskell", "literate haskell"),
        ("perl6", "perl6"),
        ("dockercompose", "dockercompose"),
        ("FortranFreeForm", "fortran"),
        # Neovim filetypes
        ("sh", "shellscript"),
        ("bash", "shellscript"),
        ("zsh", "shellscript"),
        ("cs", "csharp"),
        ("objc", "objective-c"),
        ("objcpp", "objective-cpp"),
        ("typescript.tsx", "typescriptreact"),
        ("javascript.jsx", "javascriptreact"),
        ("make", "makefile"),
        ("ps1", "powershell"),
        ("lhaskell", "literate haskell"),
        ("mma", "wolfram"),
        ("gomod", "go.mod"),
        ("typescript.glimmer", "typescript"),
        # Emacs with eglot (major mode name without -ts-mode / -mode)
        ("c++", "cpp"),
        ("js", "javascript"),
        ("tsx", "typescriptreact"),
        ("emacs-lisp", "emacs-lisp"),
        ("LaTeX", "latex"),
        ("makefile-gmake", "makefile"),
        ("opascal", "objectpascal"),
        ("tuareg", "ocaml"),
        ("go-mod", "go.mod"),
        # Emacs with lsp-mode
        ("cuda", "cuda-cpp"),
        ("protobuf", "proto3"),
        ("plaintex", "tex"),
        ("PowerShell", "powershell"),
        ("Nix", "nix"),
        ("spring-boot-properties-yaml", "yaml"),
        # Case and stray whitespace
        ("  Python ", "python"),
        ("COBOL", "cobol"),
    ],
)
def test_editor_ids(sent: str, canonical: str) -> None:
    assert canonical_language_id(sent) == canonical


def test_compound_filetypes_fall_back_to_a_known_part() -> None:
    assert canonical_language_id("custom.python") == "python"
    assert canonical_language_id("go.mod") == "go.mod"
    assert canonical_language_id("nothing.known") is None


@pytest.mark.parametrize(
    ("sent", "uri", "canonical"),
    [
        (None, "file:///home/u/src/main.py", "python"),
        ("", "file:///home/u/src/main.rs", "rust"),
        ("no-such-language", "file:///home/u/src/main.go", "go"),
        ("plaintext", "file:///home/u/Makefile", "makefile"),
        ("plaintext", "file:///home/u/notes", "plaintext"),
        # A known id wins over the file name, even one without a tag.
        ("json", "file:///home/u/settings.py", "json"),
        ("python", "file:///home/u/build.gradle", "python"),
        # A family id narrowed by the file's suffix.
        ("lisp", "file:///home/u/.emacs.d/init.el", "emacs-lisp"),
        ("lisp", "file:///home/u/src/app.asd", "commonlisp"),
        ("lisp", "file:///home/u/src/app.lisp", "lisp"),
        ("lisp", "file:///home/u/src/app.py", "lisp"),
        ("verilog", "file:///home/u/rtl/top.sv", "systemverilog"),
        ("markdown", "file:///home/u/report.Rmd", "rmd"),
        ("agda", "file:///home/u/Proof.lagda.md", "lagda"),
        ("pascal", "file:///home/u/App.dpr", "objectpascal"),
        ("no-such-language", None, None),
        (None, None, None),
        (None, "untitled:Untitled-1", None),
    ],
)
def test_uri_fallback(sent: str | None, uri: str | None, canonical: str | None) -> None:
    assert canonical_language_id(sent, uri) == canonical


@pytest.mark.parametrize(
    ("uri", "canonical"),
    [
        ("file:///c%3A/Users/u/Main.PY", "python"),
        ("file:///home/u/My%20Project/app.tsx", "typescriptreact"),
        ("file:///home/u/src/types.d.ts", "typescript"),
        ("file:///home/u/Dockerfile.dev", "dockerfile"),
        ("file:///home/u/api.Dockerfile", "dockerfile"),
        ("file:///home/u/CMakeLists.txt", "cmake"),
        ("file:///home/u/GNUmakefile", "makefile"),
        ("file:///home/u/docker-compose.yml", "dockercompose"),
        ("file:///home/u/.bashrc", "shellscript"),
        ("file:///home/u/Jenkinsfile", "jenkinsfile"),
        ("file:///home/u/go.mod", "go.mod"),
        ("file:///home/u/kernel.cu", "cuda-cpp"),
        ("file:///home/u/x.py?query=1#frag", "python"),
        ("file:///home/u/archive.tar.gz", None),
        ("file:///home/u/LICENSE", None),
    ],
)
def test_uri_forms(uri: str, canonical: str | None) -> None:
    assert canonical_language_id(None, uri) == canonical


def test_language_id_for_path_takes_paths_of_any_flavour() -> None:
    assert language_id_for_path(Path("src") / "lib.rs") == "rust"
    assert language_id_for_path("C:\\src\\App.java") == "java"
    assert language_id_for_path(PureWindowsPath("C:/src/makefile")) == "makefile"
    assert language_id_for_path("README") is None


@pytest.mark.parametrize(
    ("language_id", "tag"),
    [
        ("python", "# language: Python"),
        ("cpp", "// language: C++"),
        ("c", "// language: C"),
        ("html", "<!--language: HTML-->"),
        ("css", "/* language: CSS */"),
        ("sql", "-- language: SQL"),
        ("swift", "// language: swift"),
        ("typescriptreact", "// language: TypeScript"),
        ("javascriptreact", "// language: JavaScript"),
        ("shellscript", "# language: Shell"),
        ("objective-cpp", "// language: Objective-C++"),
        ("latex", "% language: TeX"),
        ("sml", "(*language:Standard ML*)"),
        ("fortran", "!language: Fortran"),
        ("dockercompose", "# language: YAML"),
        # Editor ids are made canonical first.
        ("sh", "# language: Shell"),
        ("c++", "// language: C++"),
    ],
)
def test_tag_for(language_id: str, tag: str) -> None:
    assert tag_for(language_id) == tag


@pytest.mark.parametrize("language_id", ["tcl", "json", "plaintext", "toml", "no-such", "", None])
def test_no_tag(language_id: str | None) -> None:
    assert tag_for(language_id) is None


def test_tcl_is_not_tagged_as_augeas() -> None:
    assert tag_for("tcl") is None
    assert tag_line(canonical_language_id(None, "file:///x/build.tcl")) is None
    assert tag_for("augeas") == "// language: Augeas"
