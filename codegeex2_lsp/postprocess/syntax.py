"""The per-language syntax table: what the rules need to know about each language.

Languages come in families (indentation, braces, `end` keywords, SQL); each has its
comment and string syntax, block keywords and what starts a definition. The table is keyed
by the canonical ids of `codegeex2_lsp.completion.languages`; unknown ids get generic
bracket-and-indentation rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Syntax:
    """What the rules need to know about a language family."""

    kind: Literal["indent", "brace", "end", "sql", "generic"]
    line_comments: tuple[str, ...] = ()
    block_comment: tuple[str, str] | None = None
    quotes: str = "\"'"
    # `'x'` is a one-character literal (C, Java, Rust…) rather than a string delimiter, so a
    # lone apostrophe (a Rust lifetime) must not open a string.
    char_literals: bool = False
    triple_quotes: bool = False
    # A line (stripped) that begins a new definition: reaching one at or below the cursor's
    # block level means the completion has moved on to something else.
    definition: re.Pattern[str] | None = None
    # A line at the block's level that continues the construct above it (else, catch…).
    continuation: re.Pattern[str] | None = None
    # End-keyword languages: words that open and close blocks, counted on code text.
    opener: re.Pattern[str] | None = None
    closer: re.Pattern[str] | None = None
    # A line (stripped) that closes a block opened before it, for end-keyword languages.
    closing_line: re.Pattern[str] | None = None
    # What the lexer stops at in code: comment starts, quotes, brackets.
    special: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        marks = [*(self.block_comment[:1] if self.block_comment else ()), *self.line_comments]
        marks += [*self.quotes, *(["'"] if self.char_literals else [])]
        special = re.compile("|".join([*map(re.escape, marks), r"[()\[\]{}]"]))
        object.__setattr__(self, "special", special)


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


_C_SIGNATURE = (
    r"(?!(?:if|else|while|for|switch|return|do|case|sizeof|throw|delete|new|goto)\b)"
    r"[A-Za-z_][\w:<>,\*&\s]*[\s\*&][A-Za-z_~][\w:]*\s*\([^;]*\)\s*(?:const\s*)?(?:\{\s*)?$"
)
_BRACE_CONTINUATION = _rx(r"^(?:else|catch|finally|except|while\s*\(.*\)\s*;)\b")

_C = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes='"',
    char_literals=True,
    definition=_rx(
        r"^(?:#\s*include\b|typedef\b|namespace\b|template\s*<|extern\s+\"C\"|/\*\*"
        r"|(?:struct|union|enum|class)\s+\w+\s*(?:[:{]|$)|" + _C_SIGNATURE + r")"
    ),
    continuation=_BRACE_CONTINUATION,
)
_JS = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes="\"'`",
    definition=_rx(
        r"^(?:/\*\*|(?:export\s+)?(?:default\s+)?(?:declare\s+)?(?:abstract\s+)?(?:async\s+)?"
        r"(?:function\b|class\b|interface\b|enum\b|namespace\b|type\s+\w+\s*(?:<[^>]*>)?\s*=)"
        r"|(?:export\s+)?(?:const|let|var)\s+\w+\s*(?::[^=]+)?=\s*(?:async\s*)?"
        r"(?:function\b|\([^)]*\)\s*(?::[^=]+)?=>|\w+\s*=>))"
    ),
    continuation=_BRACE_CONTINUATION,
)
_JAVA = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes='"',
    char_literals=True,
    definition=_rx(
        r"^(?:/\*\*|@[A-Z]\w*|(?:public|private|protected|static|abstract|synchronized)\b"
        r"|(?:final\s+)?(?:class|interface|enum|record)\s+\w)"
    ),
    continuation=_BRACE_CONTINUATION,
)
_CSHARP = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes='"',
    char_literals=True,
    definition=_rx(
        r"^(?:///|\[[A-Z]\w*|(?:public|private|protected|internal|static|abstract|sealed"
        r"|override|virtual)\b|(?:partial\s+)?(?:class|interface|struct|enum|record|namespace)\s+\w)"
    ),
    continuation=_BRACE_CONTINUATION,
)
_GO = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes='"`',
    char_literals=True,
    definition=_rx(r"^(?:func\b|type\s+\w|import\b|package\b|(?:var|const)\s*\($)"),
    continuation=_BRACE_CONTINUATION,
)
_RUST = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes='"',
    char_literals=True,
    definition=_rx(
        r"^(?:///|//!|#!?\[|(?:pub(?:\([\w:\s]+\))?\s+)?(?:(?:async|const|unsafe|extern"
        r"(?:\s+\"\w+\")?)\s+)*(?:fn|struct|enum|trait|impl|mod|type|union|macro_rules!)\b"
        r"|(?:pub\s+)?use\s)"
    ),
    continuation=_BRACE_CONTINUATION,
)
_PHP = Syntax(
    kind="brace",
    line_comments=("//", "#"),
    block_comment=("/*", "*/"),
    quotes="\"'",
    definition=_rx(
        r"^(?:/\*\*|(?:(?:public|private|protected|static|abstract|final)\s+)*function\b"
        r"|(?:(?:abstract|final|readonly)\s+)?(?:class|interface|trait|enum)\s+\w|namespace\b)"
    ),
    continuation=_BRACE_CONTINUATION,
)
_KOTLIN = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes='"',
    char_literals=True,
    definition=_rx(
        r"^(?:/\*\*|@[A-Z]\w*|(?:(?:public|private|protected|internal|open|override|abstract"
        r"|data|sealed|inline|suspend|enum|annotation|companion|inner|value)\s+)*"
        r"(?:fun|class|object|interface|typealias)\b)"
    ),
    continuation=_BRACE_CONTINUATION,
)
_SWIFT = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes='"',
    definition=_rx(
        r"^(?:///|@\w+|(?:(?:public|private|fileprivate|internal|open|static|final|override"
        r"|mutating|convenience|required)\s+)*(?:func|class|struct|enum|protocol|extension"
        r"|init|actor)\b)"
    ),
    continuation=_BRACE_CONTINUATION,
)
_SCALA = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes='"',
    char_literals=True,
    definition=_rx(
        r"^(?:/\*\*|@[A-Z]\w*|(?:(?:private|protected|override|final|sealed|abstract|implicit"
        r"|case|lazy)\s+)*(?:def|class|object|trait|enum|given|extension)\b)"
    ),
    continuation=_BRACE_CONTINUATION,
)
_DART = Syntax(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes="\"'",
    definition=_rx(
        r"^(?:///|@\w+|(?:abstract\s+)?class\s|enum\s|mixin\s|extension\s|typedef\s|import\s"
        r"|" + _C_SIGNATURE + r")"
    ),
    continuation=_BRACE_CONTINUATION,
)
_CSS = Syntax(kind="brace", block_comment=("/*", "*/"), quotes="\"'")
_SCSS = Syntax(kind="brace", line_comments=("//",), block_comment=("/*", "*/"), quotes="\"'")
_PYTHON = Syntax(
    kind="indent",
    line_comments=("#",),
    quotes="\"'",
    triple_quotes=True,
    definition=_rx(r"^(?:(?:async\s+)?def\s|class\s|@\w)"),
    continuation=_rx(r"^(?:elif|else|except|finally)\b"),
)
_RUBY = Syntax(
    kind="end",
    line_comments=("#",),
    quotes="\"'",
    definition=_rx(r"^(?:def\s|class\s|module\s|(?:private|protected|public)$)"),
    continuation=_rx(r"^(?:else|elsif|when|in|rescue|ensure)\b"),
    opener=_rx(
        r"^\s*(?:def|class|module|if|unless|while|until|case|begin|for)\b"
        r"|(?<![\w.])do\s*(?:\|[^|]*\|)?\s*$|=\s*(?:if|unless|case|begin)\b"
    ),
    closer=_rx(r"(?<![\w.:])end\b"),
    closing_line=_rx(r"^end\b"),
)
_LUA = Syntax(
    kind="end",
    line_comments=("--",),
    quotes="\"'",
    definition=_rx(r"^(?:local\s+)?function\b"),
    continuation=_rx(r"^(?:else|elseif)\b"),
    opener=_rx(r"(?<![\w.:])(?:function|do|then|repeat)\b"),
    closer=_rx(r"(?<![\w.:])(?:end|until|elseif)\b"),
    closing_line=_rx(r"^(?:end|until)\b"),
)
_SHELL = Syntax(
    kind="end",
    line_comments=("#",),
    quotes="\"'",
    definition=_rx(r"^(?:function\s+[\w-]+|[\w-]+\s*\(\)\s*\{?$)"),
    continuation=_rx(r"^(?:else|elif)\b|^;;"),
    opener=_rx(r"(?<![\w-])(?:then|do)\b|^\s*case\b"),
    closer=_rx(r"(?<![\w-])(?:fi|done|esac|elif)\b"),
    closing_line=_rx(r"^(?:fi|done|esac)\b"),
)
_ELIXIR = Syntax(
    kind="end",
    line_comments=("#",),
    quotes="\"'",
    definition=_rx(r"^(?:defp?\s|defmodule\s|defmacrop?\s|@doc\b|@spec\b|@moduledoc\b)"),
    continuation=_rx(r"^(?:else|rescue|catch|after)\b"),
    opener=_rx(r"(?<![\w.:])(?:do(?!:)|fn)\b"),
    closer=_rx(r"(?<![\w.:])end\b"),
    closing_line=_rx(r"^end\b"),
)
_JULIA = Syntax(
    kind="end",
    line_comments=("#",),
    quotes='"',
    definition=_rx(r"^(?:function\s|(?:mutable\s+)?struct\s|module\s|macro\s)"),
    continuation=_rx(r"^(?:else|elseif|catch|finally)\b"),
    opener=_rx(
        r"^\s*(?:function|if|for|while|begin|let|struct|mutable\s+struct|module|try|quote|macro)\b"
        r"|(?<![\w.])do\b"
    ),
    closer=_rx(r"^\s*end\b"),
    closing_line=_rx(r"^end\b"),
)
_SQL = Syntax(
    kind="sql",
    line_comments=("--",),
    block_comment=("/*", "*/"),
    quotes="'\"",
    definition=_rx(
        r"^(?:create|alter|drop|insert|update|delete|select|with|grant|truncate)\b", re.I
    ),
)
_HASKELL = Syntax(kind="indent", line_comments=("--",), block_comment=("{-", "-}"), quotes='"')
_YAML = Syntax(kind="indent", line_comments=("#",), quotes="\"'")
_HASH_INDENT = Syntax(kind="indent", line_comments=("#",), quotes="\"'")
_HASH_BRACE = Syntax(kind="brace", line_comments=("#",), quotes="\"'")
_POWERSHELL = Syntax(kind="brace", line_comments=("#",), block_comment=("<#", "#>"), quotes="\"'")
_HCL = Syntax(kind="brace", line_comments=("#", "//"), block_comment=("/*", "*/"), quotes='"')
_JSON = Syntax(kind="brace", line_comments=("//",), block_comment=("/*", "*/"), quotes='"')
_ZIG = Syntax(kind="brace", line_comments=("//",), quotes='"', char_literals=True)
_LISP = Syntax(kind="indent", line_comments=(";",), quotes='"')
_ML = Syntax(kind="indent", line_comments=("//",), block_comment=("(*", "*)"), quotes='"')
_INI = Syntax(kind="indent", line_comments=("#", ";"), quotes="\"'")
_LATEX = Syntax(
    kind="end",
    line_comments=("%",),
    quotes="",
    opener=_rx(r"\\begin\{"),
    closer=_rx(r"\\end\{"),
    closing_line=_rx(r"^\\end\b"),
)
_MATLAB = Syntax(
    kind="end",
    line_comments=("%",),
    quotes='"',
    definition=_rx(r"^function\b"),
    continuation=_rx(r"^(?:else|elseif|case|otherwise|catch)\b"),
    opener=_rx(r"^\s*(?:function|if|for|parfor|while|switch|try)\b"),
    closer=_rx(r"(?<![\w.(])end\b(?!\s*[)\]])"),
    closing_line=_rx(r"^end\b"),
)
_VB = Syntax(
    kind="end",
    line_comments=("'",),
    quotes='"',
    definition=_rx(
        r"^(?:(?:Public|Private|Protected|Friend|Shared|Overrides)\s+)*(?:Sub|Function|Class|Module|Property)\b",
        re.I,
    ),
    continuation=_rx(r"^(?:Else|ElseIf|Case|Catch|Finally)\b", re.I),
    opener=_rx(
        r"^\s*(?:(?:Public|Private|Protected|Friend|Shared|Overrides)\s+)*"
        r"(?:Sub|Function|Class|Module|Property|For|While|Do|Select|With|Try|Using)\b"
        r"|\bThen\s*$",
        re.I,
    ),
    closer=_rx(r"^\s*(?:End\b(?!\s*$)|Next\b|Loop\b|Wend\b)", re.I),
    closing_line=_rx(r"^(?:End\s+\w+|Next|Loop|Wend)\b", re.I),
)
_MARKUP = Syntax(kind="indent", block_comment=("<!--", "-->"), quotes="")
_TEXT = Syntax(kind="indent", quotes="")
_GENERIC = Syntax(
    kind="generic", line_comments=("//", "#"), block_comment=("/*", "*/"), quotes="\"'`"
)


def _family(ids: str, syntax: Syntax) -> dict[str, Syntax]:
    """Entries for space-separated ids sharing one syntax, to keep the table readable."""
    return dict.fromkeys(ids.split(), syntax)


# Keyed by canonical ids (`languages.canonical_language_id`): a key that is not one never
# matches.
SYNTAX: Mapping[str, Syntax] = {
    "python": _PYTHON,
    **_family("c cpp cuda-cpp arduino objective-c objective-cpp hlsl glsl proto3", _C),
    **_family("javascript javascriptreact typescript typescriptreact vue svelte solidity", _JS),
    **_family("java groovy jenkinsfile", _JAVA),
    "csharp": _CSHARP,
    "go": _GO,
    "rust": _RUST,
    "php": _PHP,
    "kotlin": _KOTLIN,
    "swift": _SWIFT,
    "scala": _SCALA,
    "dart": _DART,
    "css": _CSS,
    **_family("scss less", _SCSS),
    **_family("ruby crystal", _RUBY),
    "lua": _LUA,
    "shellscript": _SHELL,
    "elixir": _ELIXIR,
    "julia": _JULIA,
    "sql": _SQL,
    "haskell": _HASKELL,
    **_family("yaml dockercompose ansible github-actions-workflow", _YAML),
    **_family("html xml markdown", _MARKUP),
    "plaintext": _TEXT,
    **_family("json jsonc", _JSON),
    "zig": _ZIG,
    **_family("perl r graphql", _HASH_BRACE),
    "powershell": _POWERSHELL,
    **_family("terraform hcl", _HCL),
    **_family("nim coffeescript makefile dockerfile", _HASH_INDENT),
    **_family("toml ini", _INI),
    **_family("clojure scheme racket lisp commonlisp emacs-lisp", _LISP),
    **_family("fsharp ocaml sml", _ML),
    **_family("latex tex", _LATEX),
    **_family("matlab octave", _MATLAB),
    "vb": _VB,
}


def syntax_for(language_id: str) -> Syntax:
    """The syntax of a canonical language id, or the generic rules."""
    return SYNTAX.get(language_id, _GENERIC)
