"""Which language a document is in, and the tag line that tells the model so.

Editors name languages differently: VS Code sends its language ids, Neovim its filetypes, Emacs
ids derived from major modes. Everything is mapped to one canonical id, VS Code's where VS Code
has one, and the canonical id to the tag line the model was trained with.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath, PureWindowsPath
from urllib.parse import unquote, urlsplit

# The model's tag lines, keyed as in the upstream evaluation code, copied verbatim (oddities
# included: Swift is lower case there, Standard ML has no space after the colon).
UPSTREAM_TAGS: dict[str, str] = {
    "c": "// language: C",
    "c++": "// language: C++",
    "cpp": "// language: C++",
    "c#": "// language: C#",
    "csharp": "// language: C#",
    "c-sharp": "// language: C#",
    "css": "/* language: CSS */",
    "cuda": "// language: Cuda",
    "dart": "// language: Dart",
    "lua": "// language: Lua",
    "objectivec": "// language: Objective-C",
    "objective-c": "// language: Objective-C",
    "objective-c++": "// language: Objective-C++",
    "python": "# language: Python",
    "perl": "# language: Perl",
    "prolog": "% language: Prolog",
    "swift": "// language: swift",
    "lisp": "; language: Lisp",
    "java": "// language: Java",
    "scala": "// language: Scala",
    "tex": "% language: TeX",
    "vue": "<!--language: Vue-->",
    "markdown": "<!--language: Markdown-->",
    "html": "<!--language: HTML-->",
    "php": "// language: PHP",
    "js": "// language: JavaScript",
    "javascript": "// language: JavaScript",
    "typescript": "// language: TypeScript",
    "go": "// language: Go",
    "shell": "# language: Shell",
    "rust": "// language: Rust",
    "sql": "-- language: SQL",
    "kotlin": "// language: Kotlin",
    "vb": "' language: Visual Basic",
    "ruby": "# language: Ruby",
    "pascal": "// language: Pascal",
    "r": "# language: R",
    "fortran": "!language: Fortran",
    "lean": "-- language: Lean",
    "matlab": "% language: Matlab",
    "delphi": "{language: Delphi}",
    "scheme": "; language: Scheme",
    "basic": "' language: Basic",
    "assembly": "; language: Assembly",
    "groovy": "// language: Groovy",
    "abap": "* language: Abap",
    "gdscript": "# language: GDScript",
    "haskell": "-- language: Haskell",
    "julia": "# language: Julia",
    "elixir": "# language: Elixir",
    "excel": "' language: Excel",
    "clojure": "; language: Clojure",
    "actionscript": "// language: ActionScript",
    "solidity": "// language: Solidity",
    "powershell": "# language: PowerShell",
    "erlang": "% language: Erlang",
    "cobol": "// language: Cobol",
    "alloy": "/* language: Alloy */",
    "awk": "// language: AWK",
    "thrift": "/* language: Thrift */",
    "sparql": "# language: SPARQL",
    "augeas": "// language: Augeas",
    "cmake": "# language: CMake",
    "f-sharp": "// language: F#",
    "stan": "// language: Stan",
    "isabelle": "(*language: Isabelle*)",
    "dockerfile": "# language: Dockerfile",
    "rmarkdown": "# language: RMarkdown",
    "literate-agda": "-- language: Literate Agda",
    "glsl": "// language: GLSL",
    "antlr": "// language: ANTLR",
    "verilog": "// language: Verilog",
    "racket": "; language: Racket",
    "standard-ml": "(*language:Standard ML*)",
    "elm": "-- language: Elm",
    "yaml": "# language: YAML",
    "smalltalk": "'' language: Smalltalk",
    "ocaml": "(*language: OCaml*)",
    "idris": "-- language: Idris",
    "visual-basic": "' language: Visual Basic",
    "protocol-buffer": "// language: Protocol Buffer",
    "bluespec": "// language: Bluespec",
    "applescript": "-- language: AppleScript",
    "makefile": "# language: Makefile",
    "tcsh": "# language: TCSH",
    "maple": "# language: Maple",
    "systemverilog": "// language: SystemVerilog",
    "literate-coffeescript": "# language: Literate CoffeeScript",
    "vhdl": "-- language: VHDL",
    "restructuredtext": ".. language: reStructuredText",
    "sas": "* language: SAS",
    "literate-haskell": "> language: Literate Haskell",
    "java-server-pages": "// language: Java Server Pages",
    "coffeescript": "# language: CoffeeScript",
    "emacs-lisp": "; language: Emacs Lisp",
    "mathematica": "// language: Mathematica",
    "xslt": "<!--language: XSLT-->",
    "zig": "// language: Zig",
    "common-lisp": "; language: Common Lisp",
    "stata": "* language: Stata",
    "agda": "-- language: Agda",
    "ada": "-- language: Ada",
}

# Canonical id -> key in UPSTREAM_TAGS, or None where the model was trained without a tag for
# the language. Canonical ids are VS Code's (built-in or from the language's main extension);
# languages VS Code has no id for get the name the other editors agree on.
#
# A dialect gets its parent's tag only when code in the parent language is valid in it (JSX is
# JavaScript, a compose file is YAML, CSS is valid SCSS and Less); otherwise a wrong tag would
# steer the model to the wrong syntax, which is worse than no tag.
#
# Tcl has no tag of its own. Upstream maps it to Augeas, an unrelated configuration language,
# which is a bug. The nearest trained tag by syntax would be Shell, whose idioms differ enough to
# mislead, so Tcl gets no tag.
_TAG_KEYS: dict[str, str | None] = {
    "abap": "abap",
    "actionscript": "actionscript",
    "ada": "ada",
    "agda": "agda",
    "alloy": "alloy",
    "ansible": "yaml",
    "antlr": "antlr",
    "applescript": "applescript",
    "arduino": "cpp",
    "asm": "assembly",
    "augeas": "augeas",
    "awk": "awk",
    "basic": "basic",
    "bluespec": "bluespec",
    "c": "c",
    "clojure": "clojure",
    "cmake": "cmake",
    "cobol": "cobol",
    "coffeescript": "coffeescript",
    "commonlisp": "common-lisp",
    "cpp": "cpp",
    "csharp": "csharp",
    "css": "css",
    "cuda-cpp": "cuda",
    "dart": "dart",
    "dockercompose": "yaml",
    "dockerfile": "dockerfile",
    "elixir": "elixir",
    "elm": "elm",
    "emacs-lisp": "emacs-lisp",
    "erlang": "erlang",
    # Upstream's "Excel" code is VBA-like (its tag uses the Visual Basic comment); no editor has
    # an id for it, so it is reachable only by its own name.
    "excel": "excel",
    "fortran": "fortran",
    "fsharp": "f-sharp",
    "gdscript": "gdscript",
    "github-actions-workflow": "yaml",
    "glsl": "glsl",
    "go": "go",
    "groovy": "groovy",
    "haskell": "haskell",
    "html": "html",
    "idris": "idris",
    "isabelle": "isabelle",
    "java": "java",
    "javascript": "javascript",
    "javascriptreact": "javascript",
    "jenkinsfile": "groovy",
    "jsp": "java-server-pages",
    "julia": "julia",
    "kotlin": "kotlin",
    "lagda": "literate-agda",
    "latex": "tex",
    "lean": "lean",
    "less": "css",
    "lisp": "lisp",
    "literate haskell": "literate-haskell",
    "litcoffee": "literate-coffeescript",
    "lua": "lua",
    "makefile": "makefile",
    "maple": "maple",
    "markdown": "markdown",
    "matlab": "matlab",
    "objective-c": "objective-c",
    "objective-cpp": "objective-c++",
    "objectpascal": "delphi",
    "ocaml": "ocaml",
    # Octave runs MATLAB code; the MATLAB tag is the nearest the model knows.
    "octave": "matlab",
    "pascal": "pascal",
    "perl": "perl",
    "php": "php",
    "powershell": "powershell",
    "prolog": "prolog",
    "proto3": "protocol-buffer",
    "python": "python",
    # Quarto documents are R Markdown's successor, with the same chunk syntax.
    "quarto": "rmarkdown",
    "r": "r",
    "racket": "racket",
    "restructuredtext": "restructuredtext",
    "rmd": "rmarkdown",
    "ruby": "ruby",
    "rust": "rust",
    "sas": "sas",
    "scala": "scala",
    "scheme": "scheme",
    "scss": "css",
    "shellscript": "shell",
    "smalltalk": "smalltalk",
    "sml": "standard-ml",
    "solidity": "solidity",
    "sparql": "sparql",
    "sql": "sql",
    "stan": "stan",
    "stata": "stata",
    "swift": "swift",
    "systemverilog": "systemverilog",
    "tcsh": "tcsh",
    "tex": "tex",
    "thrift": "thrift",
    "typescript": "typescript",
    "typescriptreact": "typescript",
    "vb": "vb",
    "verilog": "verilog",
    "vhdl": "vhdl",
    # The VBA editor's language is Visual Basic for Applications: Visual Basic syntax.
    "vba": "visual-basic",
    "vue": "vue",
    "vue-html": "vue",
    "wolfram": "mathematica",
    "xsl": "xslt",
    "yaml": "yaml",
    "zig": "zig",
    # Known languages the model has no tag for: recognised, so that the uri is not consulted
    # and the prompt goes out without a tag.
    "astro": None,
    "bat": None,
    "bibtex": None,
    "crystal": None,
    "csv": None,
    "d": None,
    "diff": None,
    "dotenv": None,
    "fish": None,
    "git-commit": None,
    "git-rebase": None,
    "gleam": None,
    "go.mod": None,
    "go.sum": None,
    "go.work": None,
    "graphql": None,
    "handlebars": None,
    "haml": None,
    "haxe": None,
    "hcl": None,
    "hlsl": None,
    "ignore": None,
    "ini": None,
    "jade": None,
    "jinja": None,
    "json": None,
    "jsonc": None,
    "jsonl": None,
    "log": None,
    "mdx": None,
    "meson": None,
    "mojo": None,
    "nginx": None,
    "nim": None,
    "nix": None,
    "nushell": None,
    "odin": None,
    "org": None,
    "perl6": None,
    "phoenix-heex": None,
    "pip-requirements": None,
    "plaintext": None,
    "properties": None,
    "purescript": None,
    "razor": None,
    "reason": None,
    "sass": None,
    "shaderlab": None,
    "slim": None,
    "starlark": None,
    "stylus": None,
    "svelte": None,
    "tcl": None,
    "terraform": None,
    "toml": None,
    "twig": None,
    "typst": None,
    "v": None,
    "vala": None,
    "vim": None,
    "wgsl": None,
    "xml": None,
}

# Ids meaning "no particular language": the file name says more than they do.
_GENERIC = frozenset({"plaintext"})


def _same(ids: str) -> dict[str, str]:
    """Identity entries for space-separated ids, to keep long lists readable."""
    return {language_id: language_id for language_id in ids.split()}


# What each editor sends, as far as it differs from or adds to the canonical ids. Keys are
# lower case; lookups fold case.

# VS Code: built-in languages and the main extension for each language that lacks one.
_VSCODE: dict[str, str] = {
    **_same(
        "abap ada agda alloy ansible antlr applescript arduino astro awk bat bibtex c clojure "
        "cmake coffeescript commonlisp cpp crystal csharp css csv cuda-cpp d dart diff "
        "dockercompose dockerfile dotenv elixir elm erlang fish fortran fsharp gdscript "
        "git-commit git-rebase github-actions-workflow gleam glsl go go.mod go.sum go.work graphql "
        "groovy haml handlebars haskell haxe hcl hlsl html ignore ini isabelle jade java "
        "javascript javascriptreact jenkinsfile jinja json jsonc jsonl jsp julia kotlin latex "
        "lean less lisp litcoffee log lua makefile markdown matlab mdx meson mojo nginx nim nix "
        "nushell objective-c objective-cpp objectpascal ocaml octave odin pascal perl perl6 "
        "phoenix-heex php pip-requirements plaintext powershell prolog properties proto3 "
        "purescript python quarto r racket razor reason restructuredtext rmd ruby rust sas sass "
        "scala scheme scss shaderlab shellscript slim smalltalk sml solidity sparql sql stan "
        "starlark stata stylus svelte swift systemverilog tcl terraform tex thrift toml twig "
        "typescript typescriptreact typst v vala vb vba verilog vhdl vue vue-html wgsl wolfram "
        "xml xsl yaml zig"
    ),
    "literate haskell": "literate haskell",
    "bsv": "bluespec",
    "clojurescript": "clojure",
    "cobol": "cobol",
    "cython": "python",
    "delphi": "objectpascal",
    "django-html": "html",
    "doctex": "latex",
    "eex": "elixir",
    "erb": "ruby",
    "fortran-modern": "fortran",
    "fortran90": "fortran",
    "fortranfixedform": "fortran",
    "fortranfreeform": "fortran",
    "fortran_fixed-form": "fortran",
    "fortran_free-form": "fortran",
    "html-eex": "html",
    "isabelle-ml": "isabelle",
    "javascript.jsx": "javascriptreact",
    "jsx": "javascriptreact",
    "lagda-forester": "lagda",
    "lagda-md": "lagda",
    "lagda-org": "lagda",
    "lagda-rst": "lagda",
    "lagda-tex": "lagda",
    "lagda-typ": "lagda",
    "lean4": "lean",
    "mathematica": "wolfram",
    "ocaml.interface": "ocaml",
    "postcss": "css",
    "proto": "proto3",
    "pug": "jade",
    "raku": "perl6",
    "snakemake": "python",
    "arm": "asm",
    "arm64": "asm",
    "asm-collection": "asm",
    "asm-intel-x86-generic": "asm",
    "gas": "asm",
    "masm": "asm",
    "nasm": "asm",
    "riscv": "asm",
    "jlweave": "latex",
    "pweave": "latex",
    "rsweave": "latex",
    "latex-expl3": "latex",
    "viml": "vim",
    "sol": "solidity",
    "tailwindcss": "css",
    "vbscript": "vb",
}

# Neovim sends the buffer's 'filetype' unless the client config maps it.
_NEOVIM: dict[str, str] = {
    **_same(
        "abap ada agda applescript arduino asm astro awk c clojure cmake cobol cpp crystal css "
        "csv d dart diff dockerfile elixir elm erlang fish fortran fsharp gdscript gleam glsl "
        "go graphql groovy haml handlebars haskell hcl hlsl html java javascript "
        "javascriptreact jinja json jsonc jsonl jsp julia kotlin lean less lisp lua maple "
        "markdown matlab meson mojo nginx nim nix ocaml octave odin org pascal perl php prolog "
        "python quarto r racket rmd ruby rust sas sass scala scheme scss solidity sparql "
        "sql starlark stata stylus svelte swift systemverilog tcl tcsh terraform tex thrift "
        "toml twig typescript typescriptreact typst v vala vb verilog vhdl vim vue wgsl xml "
        "yaml zig"
    ),
    "antlr4": "antlr",
    "aspvbs": "vb",
    "automake": "makefile",
    "bash": "shellscript",
    "bib": "bibtex",
    "bzl": "starlark",
    "coffee": "coffeescript",
    "context": "tex",
    "cs": "csharp",
    "csh": "tcsh",
    "cuda": "cuda-cpp",
    "dosbatch": "bat",
    "dosini": "ini",
    "eelixir": "elixir",
    "eruby": "ruby",
    "freebasic": "basic",
    "basic": "basic",
    "gitcommit": "git-commit",
    "gitignore": "ignore",
    "gitrebase": "git-rebase",
    "gomod": "go.mod",
    "gosum": "go.sum",
    "gowork": "go.work",
    "heex": "phoenix-heex",
    "htmldjango": "html",
    "idris2": "idris",
    "javascript.glimmer": "javascript",
    "jproperties": "properties",
    "ksh": "shellscript",
    "lhaskell": "literate haskell",
    "lidris2": "idris",
    "litcoffee": "litcoffee",
    "make": "makefile",
    "masm": "asm",
    "mma": "wolfram",
    "nasm": "asm",
    "nu": "nushell",
    "objc": "objective-c",
    "objcpp": "objective-cpp",
    "pandoc": "markdown",
    "plaintex": "tex",
    "plsql": "sql",
    "mysql": "sql",
    "proto": "proto3",
    "ps1": "powershell",
    "pug": "jade",
    "purescript": "purescript",
    "pyrex": "python",
    "qb64": "basic",
    "raku": "perl6",
    "rst": "restructuredtext",
    "sh": "shellscript",
    "sml": "sml",
    "st": "smalltalk",
    "text": "plaintext",
    "typescript.glimmer": "typescript",
    "typescript.tsx": "typescriptreact",
    "javascript.jsx": "javascriptreact",
    "xhtml": "html",
    "xslt": "xsl",
    "zsh": "shellscript",
}

# Emacs with eglot: the major mode's name without "-ts-mode" or "-mode", unless the mode has an
# `eglot-language-id` property or the server entry names a :language-id.
_EGLOT: dict[str, str] = {
    **_same(
        "abap actionscript ada agda alloy antlr applescript arduino asm astro awk c clojure "
        "cmake cobol crystal csharp css csv d dart diff dockerfile elixir elm emacs-lisp erlang "
        "fish fortran fsharp gdscript gleam glsl go graphql groovy haml haskell haxe hcl hlsl "
        "html idris isabelle java javascript jinja json jsonc julia kotlin latex lean less lisp "
        "lua markdown matlab meson mojo nginx nim nix ocaml octave odin org pascal perl php "
        "powershell prolog purescript python quarto r racket reason ruby rust sas sass scala "
        "scheme scss smalltalk sml solidity sparql sql stan stata svelte swift tcl terraform "
        "tex thrift toml typescript typst v vala verilog vhdl vue wgsl xml yaml zig"
    ),
    "agda2": "agda",
    "bash": "shellscript",
    "bat": "bat",
    "bazel-build": "starlark",
    "bazel-starlark": "starlark",
    "bazel-workspace": "starlark",
    "bibtex": "bibtex",
    "bsv": "bluespec",
    "c++": "cpp",
    "caml": "ocaml",
    "clojure-ts-clojurescript": "clojure",
    "clojure-ts-clojurec": "clojure",
    "clojurec": "clojure",
    "clojurescript": "clojure",
    "coffee": "coffeescript",
    "conf-javaprop": "properties",
    "conf-toml": "toml",
    "context": "tex",
    "cperl": "perl",
    "cuda": "cuda-cpp",
    "cython": "python",
    "delphi": "objectpascal",
    "docker-compose": "dockercompose",
    "enh-ruby": "ruby",
    "ess-julia": "julia",
    "ess-r": "r",
    "ess-sas": "sas",
    "ess-stata": "stata",
    "f90": "fortran",
    "gfm": "markdown",
    "git-commit": "git-commit",
    "git-rebase": "git-rebase",
    "go-dot-mod": "go.mod",
    "go-dot-work": "go.work",
    "go-mod": "go.mod",
    "go-work": "go.work",
    "haskell-literate": "literate haskell",
    "heex": "phoenix-heex",
    "idris2": "idris",
    "isar": "isabelle",
    "jenkinsfile": "jenkinsfile",
    "js": "javascript",
    "js-json": "json",
    "js-jsx": "javascriptreact",
    "js2": "javascript",
    "js2-jsx": "javascriptreact",
    "lean4": "lean",
    "less-css": "less",
    "lisp-data": "emacs-lisp",
    "lisp-interaction": "emacs-lisp",
    "literate-haskell": "literate haskell",
    "makefile": "makefile",
    "makefile-automake": "makefile",
    "makefile-bsdmake": "makefile",
    "makefile-gmake": "makefile",
    "makefile-imake": "makefile",
    "makefile-makepp": "makefile",
    "maplev": "maple",
    "masm": "asm",
    "mathematica": "wolfram",
    "mhtml": "html",
    "nasm": "asm",
    "nushell": "nushell",
    "nxml": "xml",
    "objc": "objective-c",
    "opascal": "objectpascal",
    "phps": "php",
    "plain-tex": "tex",
    "poly-markdown": "markdown",
    "poly-markdown+r": "rmd",
    "protobuf": "proto3",
    "rjsx": "javascriptreact",
    "rst": "restructuredtext",
    "rustic": "rust",
    "sgml": "html",
    "sh": "shellscript",
    "shader": "shaderlab",
    "ssass": "sass",
    "systemd": "ini",
    "texinfo": "plaintext",
    "tsx": "typescriptreact",
    "tuareg": "ocaml",
    "typescript-tsx": "typescriptreact",
    "vbnet": "vb",
    "vimrc": "vim",
    "visual-basic": "vb",
    "web": "html",
    "wolfram": "wolfram",
    "xah-wolfram": "wolfram",
    "xsl": "xsl",
}

# Emacs with lsp-mode: every value of its `lsp-language-id-configuration`.
_LSP_MODE: dict[str, str] = {
    **_same(
        "ada astro awk bibtex c clojure cmake cpp crystal csharp css d dart dockerfile elixir "
        "elm erlang fortran fsharp gdscript gleam glsl go go.mod graphql groovy haskell haxe "
        "html idris java javascript javascriptreact json jsonc julia kotlin latex less lua "
        "markdown mojo nginx nim nix ocaml objective-c org perl php plaintext powershell prolog "
        "purescript python r racket reason restructuredtext ruby rust sass scala scss shaderlab "
        "shellscript solidity sql svelte swift terraform toml typescript typescriptreact v vala "
        "verilog vhdl vim vue wgsl xml yaml zig"
    ),
    "actionscript": "actionscript",
    "clojurescript": "clojure",
    "context": "tex",
    "cuda": "cuda-cpp",
    "idris2": "idris",
    "mdx": "mdx",
    "nushell": "nushell",
    "plaintex": "tex",
    "protobuf": "proto3",
    "spring-boot-properties": "properties",
    "spring-boot-properties-yaml": "yaml",
}

# The upstream table's own keys, so that a client configured with them (or a user who reads the
# model's documentation) gets the tag they name.
_UPSTREAM_NAMES: dict[str, str] = {
    "assembly": "asm",
    "c#": "csharp",
    "c-sharp": "csharp",
    "common-lisp": "commonlisp",
    "f-sharp": "fsharp",
    "java-server-pages": "jsp",
    "literate-agda": "lagda",
    "literate-coffeescript": "litcoffee",
    "objective-c++": "objective-cpp",
    "objectivec": "objective-c",
    "protocol-buffer": "proto3",
    "rmarkdown": "rmd",
    "shell": "shellscript",
    "standard-ml": "sml",
}

# Later tables win where an id means different things to different editors.
_SOURCES: dict[str, dict[str, str]] = {
    "upstream": _UPSTREAM_NAMES,
    "lsp-mode": _LSP_MODE,
    "eglot": _EGLOT,
    "neovim": _NEOVIM,
    "vscode": _VSCODE,
}
_ALIASES: dict[str, str] = {
    language_id: canonical
    for table in _SOURCES.values()
    for language_id, canonical in table.items()
}

# File name suffixes (lower case), longest first where one ends another.
_EXTENSIONS: dict[str, str] = {
    ".lagda.md": "lagda",
    ".lagda.org": "lagda",
    ".lagda.rst": "lagda",
    ".lagda.tex": "lagda",
    ".lagda.typ": "lagda",
    ".abap": "abap",
    ".as": "actionscript",
    ".adb": "ada",
    ".ads": "ada",
    ".agda": "agda",
    ".als": "alloy",
    ".g4": "antlr",
    ".applescript": "applescript",
    ".scpt": "applescript",
    ".ino": "arduino",
    ".asm": "asm",
    ".s": "asm",
    ".nasm": "asm",
    ".aug": "augeas",
    ".awk": "awk",
    ".gawk": "awk",
    ".bas": "vb",
    ".bsv": "bluespec",
    ".c": "c",
    ".h": "cpp",
    ".clj": "clojure",
    ".cljs": "clojure",
    ".cljc": "clojure",
    ".edn": "clojure",
    ".cmake": "cmake",
    ".cob": "cobol",
    ".cbl": "cobol",
    ".coffee": "coffeescript",
    ".litcoffee": "litcoffee",
    ".cl": "commonlisp",
    ".asd": "commonlisp",
    ".lisp": "lisp",
    ".lsp": "lisp",
    ".cpp": "cpp",
    ".cc": "cpp",
    ".cxx": "cpp",
    ".c++": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".hxx": "cpp",
    ".h++": "cpp",
    ".ipp": "cpp",
    ".tpp": "cpp",
    ".inl": "cpp",
    ".cppm": "cpp",
    ".ixx": "cpp",
    ".cs": "csharp",
    ".csx": "csharp",
    ".css": "css",
    ".cu": "cuda-cpp",
    ".cuh": "cuda-cpp",
    ".dart": "dart",
    ".dpr": "objectpascal",
    ".dpk": "objectpascal",
    ".pas": "pascal",
    ".dockerfile": "dockerfile",
    ".ex": "elixir",
    ".exs": "elixir",
    ".elm": "elm",
    ".el": "emacs-lisp",
    ".erl": "erlang",
    ".hrl": "erlang",
    ".f": "fortran",
    ".for": "fortran",
    ".f77": "fortran",
    ".f90": "fortran",
    ".f95": "fortran",
    ".f03": "fortran",
    ".f08": "fortran",
    ".fs": "fsharp",
    ".fsi": "fsharp",
    ".fsx": "fsharp",
    ".gd": "gdscript",
    ".glsl": "glsl",
    ".vert": "glsl",
    ".frag": "glsl",
    ".geom": "glsl",
    ".comp": "glsl",
    ".go": "go",
    ".groovy": "groovy",
    ".gradle": "groovy",
    ".hs": "haskell",
    ".lhs": "literate haskell",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".idr": "idris",
    ".thy": "isabelle",
    ".java": "java",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascriptreact",
    ".jsp": "jsp",
    ".jl": "julia",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".lagda": "lagda",
    ".tex": "latex",
    ".ltx": "latex",
    ".sty": "latex",
    ".cls": "latex",
    ".lean": "lean",
    ".less": "less",
    ".lua": "lua",
    ".mk": "makefile",
    ".mak": "makefile",
    ".mpl": "maple",
    ".mw": "maple",
    ".md": "markdown",
    ".markdown": "markdown",
    ".m": "objective-c",
    ".mm": "objective-cpp",
    ".ml": "ocaml",
    ".mli": "ocaml",
    ".pl": "perl",
    ".pm": "perl",
    ".php": "php",
    ".ps1": "powershell",
    ".psm1": "powershell",
    ".psd1": "powershell",
    ".proto": "proto3",
    ".py": "python",
    ".pyi": "python",
    ".pyw": "python",
    ".qmd": "quarto",
    ".r": "r",
    ".rkt": "racket",
    ".rst": "restructuredtext",
    ".rmd": "rmd",
    ".rb": "ruby",
    ".rake": "ruby",
    ".gemspec": "ruby",
    ".rs": "rust",
    ".sas": "sas",
    ".scala": "scala",
    ".sc": "scala",
    ".scm": "scheme",
    ".ss": "scheme",
    ".scss": "scss",
    ".sh": "shellscript",
    ".bash": "shellscript",
    ".zsh": "shellscript",
    ".ksh": "shellscript",
    ".st": "smalltalk",
    ".sml": "sml",
    ".sig": "sml",
    ".sol": "solidity",
    ".rq": "sparql",
    ".sparql": "sparql",
    ".sql": "sql",
    ".stan": "stan",
    ".do": "stata",
    ".ado": "stata",
    ".swift": "swift",
    ".sv": "systemverilog",
    ".svh": "systemverilog",
    ".csh": "tcsh",
    ".tcsh": "tcsh",
    ".thrift": "thrift",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "typescriptreact",
    ".vb": "vb",
    ".vbs": "vb",
    ".vba": "vba",
    ".v": "verilog",
    ".vh": "verilog",
    ".vhd": "vhdl",
    ".vhdl": "vhdl",
    ".vue": "vue",
    ".wl": "wolfram",
    ".nb": "wolfram",
    ".xsl": "xsl",
    ".xslt": "xsl",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".zig": "zig",
    ".bat": "bat",
    ".cmd": "bat",
    ".json": "json",
    ".jsonc": "jsonc",
    ".toml": "toml",
    ".xml": "xml",
    ".ini": "ini",
    ".tcl": "tcl",
    ".txt": "plaintext",
}

# Whole file names (lower case) that say more than their suffix.
_FILE_NAMES: dict[str, str] = {
    "makefile": "makefile",
    "gnumakefile": "makefile",
    "dockerfile": "dockerfile",
    "containerfile": "dockerfile",
    "cmakelists.txt": "cmake",
    "compose.yaml": "dockercompose",
    "compose.yml": "dockercompose",
    "docker-compose.yaml": "dockercompose",
    "docker-compose.yml": "dockercompose",
    "rakefile": "ruby",
    "gemfile": "ruby",
    "podfile": "ruby",
    "vagrantfile": "ruby",
    "jenkinsfile": "jenkinsfile",
    "build.gradle": "groovy",
    ".bashrc": "shellscript",
    ".bash_profile": "shellscript",
    ".bash_aliases": "shellscript",
    ".zshrc": "shellscript",
    ".zprofile": "shellscript",
    ".profile": "shellscript",
    "pkgbuild": "shellscript",
    ".cshrc": "tcsh",
    ".tcshrc": "tcsh",
    ".emacs": "emacs-lisp",
    "go.mod": "go.mod",
    "go.sum": "go.sum",
    "go.work": "go.work",
}

# Ids some editors use for a family of files, which the file's suffix can narrow down (Neovim
# calls Emacs Lisp files "lisp"; Emacs edits SystemVerilog in verilog-mode).
_NARROWER: dict[str, frozenset[str]] = {
    "agda": frozenset({"lagda"}),
    "coffeescript": frozenset({"litcoffee"}),
    "haskell": frozenset({"literate haskell"}),
    "lisp": frozenset({"emacs-lisp", "commonlisp"}),
    "markdown": frozenset({"rmd", "quarto", "lagda"}),
    "pascal": frozenset({"objectpascal"}),
    "verilog": frozenset({"systemverilog"}),
    "yaml": frozenset({"dockercompose"}),
}


def _lookup(language_id: str) -> str | None:
    key = language_id.strip().lower()
    if key in _TAG_KEYS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    # Vim's compound filetypes ("htmldjango.html"): the first known part names the language.
    if "." in key:
        for part in key.split("."):
            found = _lookup(part)
            if found:
                return found
    return None


def language_id_for_path(path: str | os.PathLike[str]) -> str | None:
    """Canonical id guessed from a file's name, for clients that send no usable language id."""
    name = PureWindowsPath(os.fspath(path)).name.lower()
    if name in _FILE_NAMES:
        return _FILE_NAMES[name]
    if name.startswith(("dockerfile.", "containerfile.")):
        return "dockerfile"
    if name.startswith(("makefile.", "gnumakefile.")):
        return "makefile"
    suffixes = PurePosixPath(name).suffixes
    for count in (2, 1):
        found = _EXTENSIONS.get("".join(suffixes[-count:]))
        if found:
            return found
    return None


def _uri_path(uri: str) -> str:
    parts = urlsplit(uri)
    return unquote(parts.path or parts.netloc or uri)


def canonical_language_id(language_id: str | None, uri: str | None = None) -> str | None:
    """The canonical id for what the client sent, falling back to the document's file name.

    The client's id wins over the file name: it reflects what the user chose (a mode set by
    hand, a modeline), which the name cannot know. The name decides only when the id is missing,
    unknown or generic ("plaintext"), or when it narrows a family id down to a member with a
    tag of its own (Neovim's "lisp" for an ``.el`` file is Emacs Lisp).
    """
    found = _lookup(language_id) if language_id else None
    if found is not None and found not in _GENERIC and found not in _NARROWER:
        return found
    guessed = language_id_for_path(_uri_path(uri)) if uri else None
    if found is None:
        return guessed
    if found in _GENERIC:
        return guessed or found
    return guessed if guessed in _NARROWER[found] else found


def tag_line(canonical: str | None) -> str | None:
    """The model's tag line for a canonical id, or None when the model knows no tag for it.

    The id is made canonical once, by :func:`canonical_language_id`, where the request is
    prepared; an editor's own id has no tag here.
    """
    key = _TAG_KEYS.get(canonical) if canonical else None
    return UPSTREAM_TAGS[key] if key else None
