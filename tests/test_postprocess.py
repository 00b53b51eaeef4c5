"""Post-processing decides what the editor shows, so it is tested as a table of realistic
situations: a document with the cursor in it, the model's raw text, and what should be
inserted. The cases live in tests/postprocess_cases/*.txt, one language family a file:

    === <language id> | <what the case shows>
    --- options            (optional: `key: value` lines, passed to make_context; `crlf: true`
                            turns the document's line ends into CRLF, and the expected text's)
    --- document           (the text around the cursor, which is marked with █)
    --- raw                (the model's text)
    --- expected           (the text to insert)

A section is the text between its header and the next header, without its final newline.
␣ stands for a space and ␉ for a tab where they would otherwise be invisible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from codegeex2_lsp.completion.languages import canonical_language_id, language_id_for_path
from codegeex2_lsp.postprocess import (
    PostContext,
    is_settled,
    make_context,
    offers_nothing,
    postprocess,
)
from codegeex2_lsp.postprocess.syntax import SYNTAX, syntax_for

CASES_DIR = Path(__file__).parent / "postprocess_cases"
CURSOR = "█"
_HEADER = re.compile(r"^=== (\S+) \| (.+)$", re.M)
_SECTION = re.compile(r"^--- (options|document|raw|expected)$", re.M)


@dataclass(frozen=True)
class Case:
    name: str
    language_id: str
    prefix: str
    suffix: str
    raw: str
    expected: str
    options: dict = field(default_factory=dict)

    def context(self, multiline: str | None = None) -> PostContext:
        options = {**self.options, **({"multiline": multiline} if multiline else {})}
        return make_context(self.prefix, self.suffix, self.language_id, **options)


def _visible(text: str) -> str:
    return text.replace("␣", " ").replace("␉", "\t")


def _option(value: str) -> object:
    if value in ("true", "false"):
        return value == "true"
    return int(value) if value.isdigit() else value


def _parse(path: Path) -> list[Case]:
    text = path.read_text(encoding="utf-8")
    headers = list(_HEADER.finditer(text))
    cases = []
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = text[header.end() + 1 : end]
        marks = list(_SECTION.finditer(body))
        sections = {}
        for k, mark in enumerate(marks):
            stop = marks[k + 1].start() if k + 1 < len(marks) else len(body)
            sections[mark.group(1)] = _visible(body[mark.end() + 1 : stop][:-1])
        options = {}
        for line in sections.get("options", "").splitlines():
            key, _, value = line.partition(":")
            options[key.strip()] = _option(value.strip())
        document, expected = sections["document"], sections["expected"]
        if options.pop("crlf", False):
            document = document.replace("\n", "\r\n")
            expected = expected.replace("\n", "\r\n")
        assert document.count(CURSOR) == 1, header.group(0)
        prefix, suffix = document.split(CURSOR)
        cases.append(
            Case(
                name=f"{path.stem}: {header.group(2)}",
                language_id=header.group(1),
                prefix=prefix,
                suffix=suffix,
                raw=sections["raw"],
                expected=expected,
                options=options,
            )
        )
    return cases


CASES = [case for path in sorted(CASES_DIR.glob("*.txt")) for case in _parse(path)]


def test_the_table_is_wide() -> None:
    assert len(CASES) >= 80
    assert len({case.language_id for case in CASES}) >= 12
    assert any(case.language_id not in SYNTAX for case in CASES), "the generic rules"


@pytest.mark.parametrize("language_id", sorted({case.language_id for case in CASES}))
def test_cases_use_canonical_ids(language_id: str) -> None:
    assert canonical_language_id(language_id) == language_id


@pytest.mark.parametrize("language_id", sorted(SYNTAX))
def test_every_syntax_key_is_a_canonical_language_id(language_id: str) -> None:
    """The server looks syntax up by canonical id only; any other key would never match."""
    assert canonical_language_id(language_id) == language_id


@pytest.mark.parametrize("sent", ["proto", "proto3", "protobuf", "protocol-buffer"])
def test_protocol_buffers_get_the_brace_rules(sent: str) -> None:
    by_name = language_id_for_path("shop.proto")
    assert by_name is not None
    assert syntax_for(canonical_language_id(sent) or "") is syntax_for(by_name)
    assert syntax_for(by_name) is syntax_for("c")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_postprocess(case: Case) -> None:
    assert postprocess(case.raw, case.context()) == case.expected


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stopping_early_never_changes_the_result(case: Case) -> None:
    """Once is_settled says so, no more text changes the answer (and it stays settled)."""
    ctx = case.context()
    full = postprocess(case.raw, ctx)
    first = next((k for k in range(len(case.raw) + 1) if is_settled(case.raw[:k], ctx)), None)
    if first is None:
        return
    assert postprocess(case.raw[:first], ctx) == full, case.raw[:first]
    assert all(is_settled(case.raw[:k], ctx) for k in range(first, len(case.raw) + 1))


@pytest.mark.parametrize("multiline", ["auto", "always", "never"])
def test_any_partial_text_is_handled(multiline: str) -> None:
    """Whatever the model has written so far, in any mode: no error, clean line ends."""
    for case in CASES:
        ctx = case.context(multiline)
        crlf = "\r\n" in case.prefix or "\r\n" in case.suffix
        for k in range(0, len(case.raw) + 1, 3):
            got = postprocess(case.raw[:k], ctx)
            is_settled(case.raw[:k], ctx)
            lines = got.split("\r\n" if crlf else "\n")
            assert "\r" not in "".join(lines), (case.name, k)
            if len(lines) > 1:
                assert all(line == line.rstrip() for line in lines[:-1]), (case.name, k)


def test_formatting_options_convert_only_leading_whitespace() -> None:
    ctx = make_context("def f(x):\n  ", "", "python", insert_spaces=True, tab_size=2)
    got = postprocess("if x:\n\t\treturn '\\t'\n\treturn 0", ctx)
    assert got == "if x:\n    return '\\t'\n  return 0"


# Text a model might go on with after the point where generation stopped.
_CONTINUATIONS = [
    "",
    "\n",
    "x",
    "'",
    '"\n',
    ")\n",
    "}\n",
    "end\n",
    "\n\n\n",
    "    foo()\n",
    "\tbaz\n",
    "  }\n  bar();\n",
    " + 1;\n",
    "def g():\n    pass\n",
    "else:\n    y = 2\n",
    "} else {\n  z();\n}\n",
]


@pytest.mark.parametrize("multiline", ["auto", "always", "never"])
def test_nothing_generated_after_settling_changes_the_result(multiline: str) -> None:
    for case in CASES:
        ctx = case.context(multiline)
        first = next((k for k in range(len(case.raw) + 1) if is_settled(case.raw[:k], ctx)), None)
        if first is None:
            continue
        settled = postprocess(case.raw[:first], ctx)
        for more in [*_CONTINUATIONS, *(other.raw for other in CASES[::7])]:
            got = postprocess(case.raw[:first] + more, ctx)
            assert got == settled, (case.name, more)


def test_a_line_left_of_the_block_settles_at_its_first_character() -> None:
    """Decoding can stop as soon as a dedented line shows itself, before it is finished."""
    prefix = "def total(items):\n    s = 0\n    for it in items:\n        "
    python = make_context(prefix, "", "python")
    assert not is_settled("s += it\n    ", python)
    assert is_settled("s += it\n    r", python)
    assert postprocess("s += it\n    r", python) == "s += it"
    assert postprocess("s += it\n    return s\n", python) == "s += it"
    # A line that may turn out to close a block is only judged once it is whole.
    assert not is_settled("s += it;\n  }", make_context(prefix, "", "javascript"))
    assert not is_settled("s += it\n  en", make_context(prefix, "", "ruby"))


_GATE = [
    # (document with the cursor, whether nothing is offered there)
    ("def f():\n    █return 1\n", True),
    ("def f():\n█    return 1\n", True),
    ("def f():\n  █  return 1\n", True),
    ("\t█x = 1", True),
    ("def f():\n    █\n", False),
    ("def f():\n    █   \n", False),
    ("x = █1\n", False),
    ("█", False),
    ("if (x) {█}", False),
]


@pytest.mark.parametrize(("document", "nothing"), _GATE)
def test_the_indentation_before_code_offers_nothing(document: str, nothing: bool) -> None:
    prefix, suffix = document.split(CURSOR)
    for multiline in ("auto", "always", "never"):
        ctx = make_context(prefix, suffix, "python", multiline)  # type: ignore[arg-type]
        assert offers_nothing(ctx) is nothing
        if nothing:
            # The gate agrees with the rules: whatever the model wrote, nothing is inserted,
            # and it is settled before the first token.
            assert is_settled("", ctx)
            assert postprocess("x = compute(1)\n    y = 2", ctx) == ""


def test_a_gated_case_would_otherwise_get_text() -> None:
    """The same text is offered at the end of the line, so the gate is what empties it."""
    ctx = make_context("def f():\n    ", "\n", "python")
    assert not offers_nothing(ctx)
    assert postprocess("x = compute(1)", ctx) == "x = compute(1)"


def test_the_context_is_frozen() -> None:
    ctx = make_context("x = ", "", "python")
    with pytest.raises(AttributeError):
        ctx.line_prefix = "y = "  # type: ignore[misc]


def test_the_surroundings_break_lines_where_lsp_does() -> None:
    """``\\r``, ``\\n`` and ``\\r\\n`` each end a line, as in the document the editor sees."""
    for eol in ("\n", "\r\n", "\r"):
        ctx = make_context(f"x = 1{eol}y = ", f" + 1{eol}z = 2{eol}", "python")
        assert (ctx.line_prefix, ctx.line_suffix) == ("y = ", " + 1"), repr(eol)
        assert ctx.previous == ("x = 1",)
        assert ctx.next_lines == ("z = 2",)
