"""Turn the model's raw text into what the editor should insert at the cursor.

CodeGeeX2 is a base model: it never stops by itself and never sees the code after the
cursor. So the decision of how much of its text to show is made here, from the text
before and after the cursor. The same scan that truncates the final text also tells the
decode loop, token by token, when nothing it could still generate would change the result
(`is_settled`), so generation stops as early as the answer is known.

The rules, in the order they apply:

- Scope. With code after the cursor on its line, one line, ending where the completion
  closes the bracket or string the cursor is in, minus any tail repeating that code. In an
  empty pair (`{█}`) the body may span lines and the closer moves to a line of its own.
  At the end of a line, finishing the line is one statement; a line that opens a block, and
  an empty line, get the block: the completion stops before a line that dedents out of the
  cursor's block, before a closing line the document already has (a closer it lacks is
  kept, and `} else {` goes on), at a blank-line pair, after a finished construct at the top
  level, before a new definition after a finished construct or a blank line, and in SQL
  after the statement's `;`.
- The document. Lines that repeat (or nearly repeat) the next lines after the cursor end
  it; a suggestion that only repeats them is nothing.
- Loops. A first line copying the line above, a line three times in a row, a block twice in
  a row, a line ending in a repeating pattern.
- Whitespace. Leading blank lines and the cursor's own indentation are not written again;
  no trailing whitespace; indentation follows the client's options or the document's style;
  CRLF documents get CRLF.
- Nothing useful (blank, under two visible characters, an empty comment) is "".

Languages come in families (indentation, braces, `end` keywords, SQL); each has its
comment and string syntax, block keywords and what starts a definition, in `_LANGS`.
Unknown ids get generic bracket-and-indentation rules.

Everything here is a pure function on strings; nothing reads files or touches the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from functools import cache, reduce
from itertools import pairwise
from math import gcd
from typing import Literal

Multiline = Literal["auto", "always", "never"]

_OPEN_TO_CLOSE = {"(": ")", "[": "]", "{": "}"}
_CLOSE_TO_OPEN = {")": "(", "]": "[", "}": "{"}

# How much of the document the rules look at: enough for indentation style and the next
# lines after the cursor, small enough that a large file costs nothing.
_PREFIX_WINDOW = 4096
_SUFFIX_WINDOW = 2048
_SUFFIX_LINES = 8


@dataclass(frozen=True)
class _Lang:
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

_C = _Lang(
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
_JS = _Lang(
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
_JAVA = _Lang(
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
_CSHARP = _Lang(
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
_GO = _Lang(
    kind="brace",
    line_comments=("//",),
    block_comment=("/*", "*/"),
    quotes='"`',
    char_literals=True,
    definition=_rx(r"^(?:func\b|type\s+\w|import\b|package\b|(?:var|const)\s*\($)"),
    continuation=_BRACE_CONTINUATION,
)
_RUST = _Lang(
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
_PHP = _Lang(
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
_KOTLIN = _Lang(
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
_SWIFT = _Lang(
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
_SCALA = _Lang(
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
_DART = _Lang(
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
_CSS = _Lang(kind="brace", block_comment=("/*", "*/"), quotes="\"'")
_SCSS = _Lang(kind="brace", line_comments=("//",), block_comment=("/*", "*/"), quotes="\"'")
_PYTHON = _Lang(
    kind="indent",
    line_comments=("#",),
    quotes="\"'",
    triple_quotes=True,
    definition=_rx(r"^(?:(?:async\s+)?def\s|class\s|@\w)"),
    continuation=_rx(r"^(?:elif|else|except|finally)\b"),
)
_RUBY = _Lang(
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
_LUA = _Lang(
    kind="end",
    line_comments=("--",),
    quotes="\"'",
    definition=_rx(r"^(?:local\s+)?function\b"),
    continuation=_rx(r"^(?:else|elseif)\b"),
    opener=_rx(r"(?<![\w.:])(?:function|do|then|repeat)\b"),
    closer=_rx(r"(?<![\w.:])(?:end|until|elseif)\b"),
    closing_line=_rx(r"^(?:end|until)\b"),
)
_SHELL = _Lang(
    kind="end",
    line_comments=("#",),
    quotes="\"'",
    definition=_rx(r"^(?:function\s+[\w-]+|[\w-]+\s*\(\)\s*\{?$)"),
    continuation=_rx(r"^(?:else|elif)\b|^;;"),
    opener=_rx(r"(?<![\w-])(?:then|do)\b|^\s*case\b"),
    closer=_rx(r"(?<![\w-])(?:fi|done|esac|elif)\b"),
    closing_line=_rx(r"^(?:fi|done|esac)\b"),
)
_ELIXIR = _Lang(
    kind="end",
    line_comments=("#",),
    quotes="\"'",
    definition=_rx(r"^(?:defp?\s|defmodule\s|defmacrop?\s|@doc\b|@spec\b|@moduledoc\b)"),
    continuation=_rx(r"^(?:else|rescue|catch|after)\b"),
    opener=_rx(r"(?<![\w.:])(?:do(?!:)|fn)\b"),
    closer=_rx(r"(?<![\w.:])end\b"),
    closing_line=_rx(r"^end\b"),
)
_JULIA = _Lang(
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
_SQL = _Lang(
    kind="sql",
    line_comments=("--",),
    block_comment=("/*", "*/"),
    quotes="'\"",
    definition=_rx(
        r"^(?:create|alter|drop|insert|update|delete|select|with|grant|truncate)\b", re.I
    ),
)
_HASKELL = _Lang(kind="indent", line_comments=("--",), block_comment=("{-", "-}"), quotes='"')
_YAML = _Lang(kind="indent", line_comments=("#",), quotes="\"'")
_HASH_INDENT = _Lang(kind="indent", line_comments=("#",), quotes="\"'")
_HASH_BRACE = _Lang(kind="brace", line_comments=("#",), quotes="\"'")
_POWERSHELL = _Lang(kind="brace", line_comments=("#",), block_comment=("<#", "#>"), quotes="\"'")
_HCL = _Lang(kind="brace", line_comments=("#", "//"), block_comment=("/*", "*/"), quotes='"')
_JSON = _Lang(kind="brace", line_comments=("//",), block_comment=("/*", "*/"), quotes='"')
_ZIG = _Lang(kind="brace", line_comments=("//",), quotes='"', char_literals=True)
_LISP = _Lang(kind="indent", line_comments=(";",), quotes='"')
_ML = _Lang(kind="indent", line_comments=("//",), block_comment=("(*", "*)"), quotes='"')
_INI = _Lang(kind="indent", line_comments=("#", ";"), quotes="\"'")
_LATEX = _Lang(
    kind="end",
    line_comments=("%",),
    quotes="",
    opener=_rx(r"\\begin\{"),
    closer=_rx(r"\\end\{"),
    closing_line=_rx(r"^\\end\b"),
)
_MATLAB = _Lang(
    kind="end",
    line_comments=("%",),
    quotes='"',
    definition=_rx(r"^function\b"),
    continuation=_rx(r"^(?:else|elseif|case|otherwise|catch)\b"),
    opener=_rx(r"^\s*(?:function|if|for|parfor|while|switch|try)\b"),
    closer=_rx(r"(?<![\w.(])end\b(?!\s*[)\]])"),
    closing_line=_rx(r"^end\b"),
)
_VB = _Lang(
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
_MARKUP = _Lang(kind="indent", block_comment=("<!--", "-->"), quotes="")
_TEXT = _Lang(kind="indent", quotes="")
_GENERIC = _Lang(
    kind="generic", line_comments=("//", "#"), block_comment=("/*", "*/"), quotes="\"'`"
)

_LANGS: dict[str, _Lang] = {
    "python": _PYTHON,
    "c": _C,
    "cpp": _C,
    "cuda-cpp": _C,
    "objective-c": _C,
    "objective-cpp": _C,
    "hlsl": _C,
    "glsl": _C,
    "javascript": _JS,
    "javascriptreact": _JS,
    "typescript": _JS,
    "typescriptreact": _JS,
    "vue": _JS,
    "svelte": _JS,
    "java": _JAVA,
    "groovy": _JAVA,
    "csharp": _CSHARP,
    "go": _GO,
    "rust": _RUST,
    "php": _PHP,
    "kotlin": _KOTLIN,
    "swift": _SWIFT,
    "scala": _SCALA,
    "dart": _DART,
    "css": _CSS,
    "scss": _SCSS,
    "less": _SCSS,
    "ruby": _RUBY,
    "lua": _LUA,
    "shellscript": _SHELL,
    "elixir": _ELIXIR,
    "julia": _JULIA,
    "sql": _SQL,
    "haskell": _HASKELL,
    "yaml": _YAML,
    "html": _MARKUP,
    "xml": _MARKUP,
    "markdown": _MARKUP,
    "plaintext": _TEXT,
    "json": _JSON,
    "jsonc": _JSON,
    "proto": _C,
    "solidity": _JS,
    "zig": _ZIG,
    "perl": _HASH_BRACE,
    "r": _HASH_BRACE,
    "graphql": _HASH_BRACE,
    "powershell": _POWERSHELL,
    "terraform": _HCL,
    "hcl": _HCL,
    "crystal": _RUBY,
    "nim": _HASH_INDENT,
    "coffeescript": _HASH_INDENT,
    "makefile": _HASH_INDENT,
    "dockerfile": _HASH_INDENT,
    "toml": _INI,
    "ini": _INI,
    "clojure": _LISP,
    "scheme": _LISP,
    "racket": _LISP,
    "lisp": _LISP,
    "fsharp": _ML,
    "ocaml": _ML,
    "latex": _LATEX,
    "tex": _LATEX,
    "matlab": _MATLAB,
    "octave": _MATLAB,
    "vb": _VB,
}

# Lexer states carried across lines: None (code), a string delimiter, or a block comment's
# closing delimiter wrapped in a one-element tuple.
_State = str | tuple[str] | None


_CHAR_LITERAL = re.compile(r"'(?:\\.[^']*|[^'\\])'")
_BRACKETS = "()[]{}"


@cache
def _string_end(delimiter: str) -> re.Pattern[str]:
    return re.compile(r"(?:\\.|[^\\])*?" + re.escape(delimiter), re.S)


def _lex(
    line: str, lang: _Lang, state: _State, *, line_ends: bool = True
) -> tuple[str, list[tuple[int, str]], _State]:
    """Code text of a line (strings emptied, comments removed), its structural events, end state.

    Events are brackets in code, and the closing quote of a string that was already open
    when the line began (index, quote): both can close something opened before the cursor.
    With `line_ends` False the text stops at the cursor, so a string open there stays open.
    """
    code: list[str] = []
    events: list[tuple[int, str]] = []
    i = start = 0
    inherited = isinstance(state, str)
    special = lang.special
    while True:
        if isinstance(state, tuple):
            end = line.find(state[0], i)
            if end < 0:
                return "".join(code), events, state
            i = start = end + len(state[0])
            state = None
        elif state is not None:
            m = _string_end(state).match(line, i)
            if m is None:
                # Only triple-quoted and template strings go on past the end of a line.
                keeps = len(state) == 3 or state == "`" or not line_ends
                return "".join(code), events, state if keeps else None
            if inherited:
                events.append((m.end() - len(state), state[0]))
            inherited = False
            code.append(state[0] * 2)
            i = start = m.end()
            state = None
        m = special.search(line, i)
        if m is None:
            break
        token = m.group()
        i = m.start()
        if token in _BRACKETS:
            events.append((i, token))
            i += 1
        elif lang.block_comment is not None and token == lang.block_comment[0]:
            code.append(line[start:i])
            state = (lang.block_comment[1],)
            i += len(token)
        elif token in lang.line_comments:
            code.append(line[start:i])
            return "".join(code), events, None
        elif token == "'" and lang.char_literals:
            literal = _CHAR_LITERAL.match(line, i)
            at_cursor = not line_ends and len(line) - i <= 3 and "'" not in line[i + 1 :]
            if literal is None and at_cursor:
                code.append(line[start:i])
                state = "'"  # the cursor is inside a character literal
                i += 1
            elif literal is None:
                i += 1
            else:
                code.append(line[start:i] + "' '")
                i = start = literal.end()
        else:
            code.append(line[start:i])
            triple = lang.triple_quotes and line.startswith(token * 3, i)
            state = token * 3 if triple else token
            i += len(state)
    code.append(line[start:])
    return "".join(code), events, state


def _state_before(prefix: str, lang: _Lang) -> _State:
    """Whether the line the cursor is on begins inside a docstring or a block comment."""
    if lang.triple_quotes:
        # A top-level `def`/`class` line is code, so counting quotes can start there.
        start = max(prefix.rfind("\ndef "), prefix.rfind("\nclass "), 0)
        for quote in ('"""', "'''"):
            if prefix.count(quote, start) % 2:
                return quote
    if lang.block_comment is not None:
        open_mark, close_mark = lang.block_comment
        at = prefix.rfind(open_mark)
        if at >= 0 and prefix.find(close_mark, at + len(open_mark)) < 0:
            line_start = prefix.rfind("\n", 0, at) + 1
            line_end = prefix.find("\n", at)
            line = prefix[line_start : len(prefix) if line_end < 0 else line_end]
            if isinstance(_lex(line, lang, None)[2], tuple):
                return (close_mark,)
    return None


def _width(line: str, tab: int) -> int:
    """Visual width of a line's leading whitespace."""
    width = 0
    for c in line:
        if c == " ":
            width += 1
        elif c == "\t":
            width += tab - width % tab
        else:
            break
    return width


def _leading(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


@dataclass
class _Context:
    """Everything the rules derive from the document around the cursor, computed once."""

    lang: _Lang
    line_prefix: str
    line_suffix: str
    next_lines: list[str]
    previous: list[str]
    tab: int
    start_state: _State
    cursor_opens: bool  # the cursor's line opened a bracket or block it has not closed
    cursor_brackets: int  # how many brackets that line left open
    in_comment: bool  # the cursor is in a comment
    line_code: str  # the code text of the cursor's line before the cursor


def _context(prefix: str, suffix: str, language_id: str, tab_size: int | None) -> _Context:
    lang = _LANGS.get(language_id, _GENERIC)
    head = prefix[-_PREFIX_WINDOW:].replace("\r", "")
    cut = head.rfind("\n")
    line_prefix = head[cut + 1 :]
    tail = suffix[:_SUFFIX_WINDOW].replace("\r", "").split("\n")
    next_lines: list[str] = []
    for line in tail[1:]:
        if line.strip():
            next_lines.append(line.rstrip())
            if len(next_lines) == _SUFFIX_LINES:
                break
    before = prefix[: len(prefix) - len(line_prefix)]
    start = _state_before(before, lang) if before else None
    code, events, state = _lex(line_prefix, lang, start, line_ends=False)
    opened: list[str] = []
    _outer_close(events, opened)
    if lang.opener is not None and lang.closer is not None:
        opens = len(lang.opener.findall(code)) > len(lang.closer.findall(code))
    else:
        opens = False
    return _Context(
        lang=lang,
        line_prefix=line_prefix,
        line_suffix=tail[0],
        next_lines=next_lines,
        previous=[line.rstrip() for line in head[:cut].rsplit("\n", 8)[-8:]] if cut >= 0 else [],
        tab=tab_size or 4,
        start_state=state,
        cursor_opens=bool(opened) or opens,
        cursor_brackets=len(opened),
        in_comment=_in_comment(line_prefix, lang, start, state),
        line_code=code,
    )


def _in_comment(line_prefix: str, lang: _Lang, start: _State, state: _State) -> bool:
    """Whether the cursor is in a comment or docstring: text that leads into the code below."""
    if isinstance(state, str):
        return len(state) == 3
    return state is not None or "\0" not in _lex(line_prefix + "\0", lang, start)[0]


def _normalise(completion: str, ctx: _Context) -> str:
    """Drop leading newline noise and the indentation the cursor line already has."""
    text = completion.replace("\r", "")
    if ctx.line_prefix.strip():
        if text.startswith("\n"):
            body = text.lstrip(" \t\n")
            rest = text[: len(text) - len(body)]
            return "\n" + rest[rest.rfind("\n") + 1 :] + body
        return text
    dropped = False
    while "\n" in text and not text[: text.index("\n")].strip():
        text = text[text.index("\n") + 1 :]
        dropped = True
    if ctx.line_prefix:
        first = _leading(text)
        if dropped and first.startswith(ctx.line_prefix):
            return text[len(ctx.line_prefix) :]
        return text[len(first) :]
    return text


def _outer_close(events: list[tuple[int, str]], stack: list[str]) -> int:
    """Index of the first event closing something opened before the text, or -1.

    Updates `stack` with the brackets the text opened and left open; a closer that matches
    nothing the text opened is not counted again.
    """
    first = -1
    for index, char in events:
        if char in _OPEN_TO_CLOSE:
            stack.append(char)
        elif char in _CLOSE_TO_OPEN and stack and stack[-1] == _CLOSE_TO_OPEN[char]:
            stack.pop()
        elif first < 0 and not stack:
            first = index
    return first


def _first_close_in(text: str, ctx: _Context) -> int:
    """Where text after the cursor first closes a bracket or string opened before it, or -1."""
    return _outer_close(_lex(text, ctx.lang, ctx.start_state)[1], [])


def _squash(text: str) -> str:
    return "".join(text.split())


def _similar(mine: str, theirs: str) -> bool:
    """Equal, or the same line with a slip (a base model rewriting the next line)."""
    if mine == theirs:
        return True
    longest = max(len(mine), len(theirs))
    if longest < 12 or abs(len(mine) - len(theirs)) > longest // 10:
        return False
    return SequenceMatcher(None, mine, theirs, autojunk=False).ratio() >= 0.9


def _single_line(first: str, ctx: _Context) -> tuple[str, bool]:
    """The part of the first line to insert before the text already after the cursor.

    The line ends where the completion closes a bracket or string opened before the cursor
    (the editor already shows that closer, usually auto-inserted). Text after the cursor up
    to its own first such closer (`, 0` in `, 0);`) is dropped from the end when repeated.
    Brackets the completion opened itself are never cut in half: without an outer closer,
    only the suffix's text before its first closer can be repeated.
    """
    at = _first_close_in(first, ctx)
    settled = at >= 0
    line = first[:at] if settled else first
    suffix_at = _first_close_in(ctx.line_suffix, ctx)
    head = ctx.line_suffix[:suffix_at] if suffix_at >= 0 else ctx.line_suffix
    squashed = _squash(head)
    body = line.rstrip()
    if squashed and _squash(body).endswith(squashed):
        k = len(body)
        need = len(squashed)
        while need and k:
            k -= 1
            if not body[k].isspace():
                need -= 1
        line = body[:k]
    elif _is_word(ctx.line_prefix[-1:]) and _is_word(ctx.line_suffix[:1]):
        # Inside a word, text that does not end by rejoining the rest of it garbles it.
        return "", settled
    if ctx.line_suffix[:1].isspace() or not ctx.line_suffix.strip():
        line = line.rstrip()
    return line, settled


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


@dataclass
class _Scan:
    """How many lines of the completion to keep, and whether that number is final."""

    keep: int
    settled: bool


def _is_closing_line(stripped: str, lang: _Lang) -> str:
    """The closing token a line starts with ('}' or 'end'…), or ''."""
    if stripped[:1] in _CLOSE_TO_OPEN:
        return stripped[0]
    if lang.closing_line is not None:
        m = lang.closing_line.match(stripped)
        if m:
            return m.group(0)
    return ""


def _repeats(lines: list[str], j: int, floor: int) -> int:
    """Where to cut when line j completes a repetition, or -1: a loop the model fell into.

    `lines` starts with the document's lines before the completion (`floor` of them), so
    copying the lines just above the cursor counts too; the cut never reaches back into
    them. A line seen three times in a row keeps one copy; a block of lines written twice in
    a row keeps the first.
    """
    line = lines[j]
    if _is_trivial(line):
        return -1
    if j >= 2 and lines[j - 1] == line and lines[j - 2] == line:
        run = j - 2
        while run > 0 and lines[run - 1] == line:
            run -= 1
        return max(run, floor) + 1
    for size in range(2, min(8, (j + 1) // 2) + 1):
        second = j - size + 1
        if second < floor:
            break
        block = lines[second : j + 1]
        if lines[second - size : second] == block and any(not _is_trivial(s) for s in block):
            return second
    return -1


def _last_written(lines: list[str]) -> str:
    return next((line for line in reversed(lines) if line.strip()), "")


def _is_trivial(line: str) -> bool:
    """Too short to call a repetition a loop (`}`, `end`, a blank line)."""
    return len(_squash(line)) < 4


def _ends_in_loop(line: str, complete: bool) -> bool:
    """A line that ends by repeating one short pattern (a degenerate generation).

    A line cut off by the token limit needs only a dozen characters of it; a finished line
    has to repeat the pattern a dozen times, so `0, 0, 0, 0` initialisers stay.
    """
    tail = line.rstrip()
    n = len(tail)
    for size in range(1, min(16, n // (12 if complete else 4)) + 1):
        unit = tail[n - size :]
        count = 1
        while n - (count + 1) * size >= 0 and tail.startswith(unit, n - (count + 1) * size):
            count += 1
        long_enough = count >= 12 if complete else count * size >= 12
        if count >= 4 and long_enough and any(c.isalnum() for c in unit):
            return True
    return False


class _Scanner:
    """Walks the completion line by line and finds the first line it should stop at.

    Multi-line mode only. Only the first `complete` lines are known to be whole; a rule
    fires only on them, so the result never depends on text still being generated. With
    `final`, the last line is whole too (generation ended).
    """

    def __init__(self, lines: list[str], ctx: _Context, one_statement: bool = True) -> None:
        self.lines = lines
        self.one_statement = one_statement
        self.ctx = ctx
        self.lang = ctx.lang
        self.base: int | None = _width(ctx.line_prefix, ctx.tab) if ctx.line_prefix else None
        self.next_line = ctx.next_lines[0] if ctx.next_lines else None
        self.next_indent = _width(self.next_line, ctx.tab) if self.next_line is not None else 0
        self.next_squashed = _squash(self.next_line or "")
        self.stack: list[str] = []  # brackets the completion opened and has not closed
        self.end_depth = 0  # the same for block keywords (do … end)
        self.opened = False  # the completion is inside a block it opened
        self.closed = False  # … and has closed it again: a construct is complete
        self.deeper = False  # some line went deeper than the cursor's block
        self.content = False
        self.blank_run = 0
        self.state = ctx.start_state
        self.full = [ctx.line_prefix + lines[0], *lines[1:]]
        self.history = [*ctx.previous, *(line.rstrip() for line in self.full)]
        self.floor = len(ctx.previous)

    def scan(self, complete: int, final: bool) -> _Scan:
        limit = len(self.lines) if final else complete
        for j in range(limit):
            keep = self.step(j, complete=j < complete)
            if keep is not None:
                return _Scan(keep, True)
        if not final and complete < len(self.lines) and self.dedents(complete):
            return _Scan(complete, True)
        return _Scan(limit, False)

    def dedents(self, j: int) -> bool:
        """Whether line j, still being written, already ends the completion before it.

        Its first visible character fixes its indentation; a line left of the cursor's block
        that cannot be a closing line ends the completion whatever follows on it, so decoding
        can stop there instead of finishing a line that is thrown away.
        """
        line = self.full[j]
        stripped = line.strip()
        if j == 0 or not stripped or self.base is None or self.state is not None:
            return False
        if self.stack or self.end_depth or self.lang.closing_line is not None:
            return False
        return stripped[0] not in _CLOSE_TO_OPEN and _width(line, self.ctx.tab) < self.base

    def step(self, j: int, complete: bool) -> int | None:
        """Account for line j; the number of lines to keep when the completion ends here."""
        line = self.full[j]
        stripped = line.strip()
        if not stripped:
            if self.content:
                self.blank_run += 1
                if self.blank_run >= 2:
                    return j - 1
            return None
        indent = _width(line, self.ctx.tab)
        if self.base is None:
            self.base = indent
        in_string = self.state is not None
        code, events, state = _lex(line if j else self.lines[0], self.lang, self.state)
        starts_line = j > 0 or not self.ctx.line_prefix.strip()
        closing = ""
        if starts_line and not in_string and not self.stack and not self.end_depth:
            closing = _is_closing_line(stripped, self.lang)
            if closing in ")]" and self.lang.kind == "end":
                closing = ""
        stack = list(self.stack)
        outer = _outer_close(events, stack)
        end_depth = self.end_depth
        if self.lang.opener is not None and self.lang.closer is not None:
            end_depth += len(self.lang.opener.findall(code)) - len(self.lang.closer.findall(code))
            end_depth = max(end_depth, 0)
        reopens = bool(closing) and (bool(stack) or end_depth > 0)
        if starts_line and not in_string:
            verdict = self.verdict(j, stripped, indent, closing, reopens)
            if verdict == "before":
                return j
            if verdict == "after":
                return j + 1
        if j == 0 and self.rewrites_line_above():
            return 0
        repeat = _repeats(self.history, self.floor + j, self.floor)
        if repeat >= 0:
            return repeat - self.floor
        if _ends_in_loop(line, complete):
            return j
        self.state = state
        if reopens:
            # `} else {`: the block it opens continues the one it closed, which was opened
            # before the cursor, so its closer is again one the document may already have.
            stack, end_depth = [], 0
        self.stack, self.end_depth = stack, end_depth
        depth = len(stack) + end_depth
        if j > 0 and indent > self.base:
            self.deeper = True
        if depth > 0:
            self.opened = True
        elif (self.opened or outer >= 0) and j > 0 and indent <= self.base:
            self.closed = True
            self.opened = False
        self.content = True
        self.blank_run = 0
        if (
            j == 0
            and self.one_statement
            and not starts_line
            and self.lines[0].strip()
            and self.finishes_line(code, events)
        ):
            return 1
        if self.lang.kind == "sql" and depth == 0 and code.rstrip().endswith(";"):
            return j + 1
        return None

    def rewrites_line_above(self) -> bool:
        """Whether the completion's first line only makes the cursor's line a copy of the
        line above, the way a base model starts looping."""
        line = self.history[self.floor]
        if not self.lines[0].strip() or _is_trivial(line):
            return False
        return _squash(line) == _squash(_last_written(self.ctx.previous))

    def finishes_line(self, code: str, events: list[tuple[int, str]]) -> bool:
        """Whether the completion's first line ends the statement the cursor was typing.

        Completing a line is a request for that line: further statements are a guess the
        user did not ask for. A line that opens a block, leaves a bracket open or ends in an
        operator goes on.
        """
        if self.stack or self.end_depth or self.state is not None or self.ctx.in_comment:
            return False
        if self.full[0].lstrip().startswith(("@", "#[")):
            return False  # a decorator or attribute belongs to the definition below it
        outer = 0
        own = 0
        for _, char in events:
            if char in _OPEN_TO_CLOSE:
                own += 1
            elif own:
                own -= 1
            elif char in _CLOSE_TO_OPEN:
                outer += 1
        if outer < self.ctx.cursor_brackets:
            return False
        lang = self.lang
        if lang.opener is not None and lang.closer is not None:
            line = self.ctx.line_code + code
            if len(lang.opener.findall(line)) > len(lang.closer.findall(line)):
                return False
        last = code.rstrip()[-1:]
        return not last or last not in ",+-*/%\\&|=<>([{:.?"

    def closer_is_theirs(self, closing: str) -> bool:
        """Whether the document's next line already closes the block a closing line closes."""
        if self.next_line is None or not self.next_line.strip().startswith(closing):
            return False
        # When the cursor's own line opened the block, a closer further out belongs to an
        # enclosing block; the indentation tells which.
        return not self.ctx.cursor_opens or self.next_indent == self.base

    def verdict(self, j: int, stripped: str, indent: int, closing: str, reopens: bool) -> str:
        """Whether a new line ends the completion: 'before' it, 'after' it, or '' (go on)."""
        base = self.base if self.base is not None else indent
        if closing:
            if self.closer_is_theirs(closing):
                return "" if reopens else "before"
            if self.next_line is not None and self.next_indent > indent:
                return "before"
            if reopens:
                return ""
            return "after" if self.content else "before"
        next_line = self.next_line
        if (
            next_line is not None
            and (indent == self.next_indent or not (self.stack or self.end_depth))
            and _similar(_squash(stripped), self.next_squashed)
        ):
            return "before"
        if indent < base and not self.stack:
            return "before"
        if indent > base or j == 0:
            return ""
        lang = self.lang
        if lang.continuation is not None and lang.continuation.match(stripped):
            return ""
        finished = self.closed or (
            self.deeper and lang.kind in ("indent", "generic") and not self.stack
        )
        if finished and (base == 0 or self.blank_run):
            return "before"
        if base == 0 and self.blank_run and self.content:
            # At the top level a blank line ends a group (imports, a statement run).
            return "before"
        defines = lang.definition is not None and lang.definition.match(stripped)
        if defines and self.content and (finished or self.blank_run):
            return "before"
        return ""


def _apply_indent_style(
    lines: list[str],
    prefix: str,
    insert_spaces: bool | None,
    tab_size: int | None,
    first_is_line_start: bool,
) -> list[str]:
    """Re-indent the lines whose leading whitespace is not in the document's style.

    The client's formatting options decide when sent; otherwise the indented lines just
    before the cursor do. Mixed styles are left alone.
    """
    start = 0 if first_is_line_start else 1
    leads = [_leading(line) for line in lines[start:]]
    tabbed = any("\t" in lead for lead in leads)
    spaced = any(" " in lead for lead in leads)
    if not (tabbed or spaced):
        return lines
    spaces = insert_spaces
    window = prefix[-_PREFIX_WINDOW:]
    if spaces is None:
        tabs = window.count("\n\t")
        sp = window.count("\n ")
        if tabs == sp:
            return lines
        spaces = sp > tabs
    if (spaces and not tabbed) or (not spaces and not spaced):
        return lines
    if tab_size:
        unit = tab_size
    elif spaces:
        unit = _space_unit(window.replace("\r", "").split("\n")) or 4
    else:
        widths = [len(lead) for lead in leads if lead and "\t" not in lead]
        unit = min(max(reduce(gcd, widths, 0), 2), 8) if widths else 4
    out = lines[:start]
    for line, lead in zip(lines[start:], leads, strict=True):
        if spaces:
            new = lead.replace("\t", " " * unit)
        else:
            width = _width(lead, unit)
            new = "\t" * (width // unit) + " " * (width % unit)
        out.append(new + line[len(lead) :])
    return out


def _space_unit(doc: list[str]) -> int:
    """The document's indentation step in spaces (the smallest indentation change seen)."""
    widths = [len(_leading(line)) for line in doc if line.strip() and not line.startswith("\t")]
    steps = {abs(a - b) for a, b in pairwise(widths) if a != b}
    return min(steps) if steps else 0


_AUTO_CLOSED = re.compile(r"^[\)\]\}]+[;,]?$")


def _pair_closer(ctx: _Context) -> str:
    """The closer after the cursor when it sits inside an empty pair, `{█}`, or ''.

    There the model usually breaks the line and writes the body; the closer the editor
    inserted then belongs on its own line after it, so multi-line text is allowed.
    """
    before = ctx.line_prefix.rstrip()
    after = ctx.line_suffix.strip()
    opener = before[-1:]
    if (
        opener in _OPEN_TO_CLOSE
        and _AUTO_CLOSED.match(after)
        and after[0] == _OPEN_TO_CLOSE[opener]
    ):
        return after
    return ""


def _truncate(
    completion: str, ctx: _Context, multiline: Multiline, final: bool
) -> tuple[str, bool, str | None]:
    """The kept text (before whitespace and style clean-up), whether it is settled, and the
    indentation of a last line to add so a closer after the cursor lands on a line of its own.
    """
    text = _normalise(completion, ctx)
    has_tail = bool(ctx.line_suffix.strip())
    if has_tail and not ctx.line_prefix.strip():
        # The cursor is in the indentation before code: nothing sensible fits there.
        return "", True, None
    newline = text.find("\n")
    first = text if newline < 0 else text[:newline]
    closer = _pair_closer(ctx) if multiline != "never" and has_tail else ""
    if closer and newline == 0:
        inner = replace(
            ctx,
            line_suffix="",
            next_lines=[_leading(ctx.line_prefix) + closer, *ctx.next_lines],
            cursor_opens=True,
        )
        lines = text.split("\n")
        scan = _Scanner(lines, inner).scan(len(lines) - 1, final)
        return "\n".join(lines[: scan.keep]), scan.settled, _leading(ctx.line_prefix)
    if multiline == "never" or (has_tail and multiline == "auto"):
        line, settled = _single_line(first, ctx)
        return line, settled or newline >= 0, None
    if has_tail:
        at = _first_close_in(first, ctx)
        if at >= 0:
            return _single_line(first, ctx)[0], True, None
    lines = text.split("\n")
    scan = _Scanner(lines, ctx, one_statement=multiline == "auto").scan(len(lines) - 1, final)
    return "\n".join(lines[: scan.keep]), scan.settled, None


def _only_repeats_suffix(lines: list[str], ctx: _Context) -> bool:
    """True when the kept lines are just the next lines of the document again."""
    mine = [line.strip() for line in lines if line.strip()]
    if ctx.line_prefix.strip() and lines and lines[0].strip():
        return False
    theirs = [line.strip() for line in ctx.next_lines]
    if ctx.line_suffix.strip():
        theirs = [ctx.line_suffix.strip(), *theirs]
    return bool(mine) and mine == theirs[: len(mine)]


# Whole lines made of nothing but these are an empty comment.
_COMMENT_MARKS = "/#*-%"


def postprocess(
    completion: str,
    *,
    prefix: str,
    suffix: str,
    language_id: str,
    multiline: Multiline = "auto",
    insert_spaces: bool | None = None,
    tab_size: int | None = None,
) -> str:
    """The text to insert at the cursor for the model's raw `completion` ("" for nothing).

    `prefix`/`suffix` are the document before/after the cursor; `insert_spaces`/`tab_size`
    are the request's formatting options, when the client sent them.
    """
    ctx = _context(prefix, suffix, language_id, tab_size)
    kept, _, tail = _truncate(completion, ctx, multiline, final=True)
    lines = kept.split("\n")
    mid_line = len(lines) == 1 and bool(ctx.line_suffix.strip())
    if not mid_line:
        lines = [line.rstrip() for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or _only_repeats_suffix(lines, ctx):
        return ""
    visible = _squash("".join(lines))
    if len(visible) < 2:
        return ""
    empty_comment = not visible.strip(_COMMENT_MARKS)
    if empty_comment and not ctx.line_prefix.strip() and ctx.start_state is None:
        return ""
    lines = _apply_indent_style(
        lines, prefix, insert_spaces, tab_size, first_is_line_start=not ctx.line_prefix
    )
    if tail is not None:
        lines.append(tail)
    eol = (
        "\r\n" if "\r\n" in prefix[-_PREFIX_WINDOW:] or "\r\n" in suffix[:_SUFFIX_WINDOW] else "\n"
    )
    return eol.join(lines)


def is_settled(
    completion: str,
    *,
    prefix: str,
    suffix: str,
    language_id: str,
    multiline: Multiline = "auto",
) -> bool:
    """Whether more generated text could no longer change `postprocess`'s result.

    The decode loop asks after tokens that end a line or close a bracket, and stops when
    this is True: the rules below fire only on whole lines (or, on a single line, on the
    bracket that closes the cursor's context), so the answer can only go from False to True.
    """
    ctx = _context(prefix, suffix, language_id, None)
    return _truncate(completion, ctx, multiline, final=False)[1]
