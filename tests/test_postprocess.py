"""Post-processing decides what the editor shows: each case is a document with the cursor
marked by █, the model's raw text, and the text that should be inserted."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from codegeex2_lsp.postprocess import is_settled, postprocess

CURSOR = "█"


@dataclass(frozen=True)
class Case:
    name: str
    language_id: str
    document: str
    raw: str
    expected: str
    options: dict = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return self.document.split(CURSOR)[0]

    @property
    def suffix(self) -> str:
        return self.document.split(CURSOR)[1]


CASES = [
    Case(
        "python function body stops at the next top-level def",
        "python",
        "def add(a, b):\n█\n",
        "    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
        "    return a + b",
    ),
    Case(
        "python cursor after indentation is not indented twice",
        "python",
        "def add(a, b):\n    █\n",
        "    return a + b\n\ndef sub(a, b):\n",
        "return a + b",
    ),
    Case(
        "python call argument before an auto-closed paren",
        "python",
        "print(█)\n",
        '"hello")\nprint("x")',
        '"hello"',
    ),
    Case(
        "javascript body stops before the closing brace the suffix has",
        "javascript",
        "function f(x) {\n  █\n}\n",
        "return x * 2;\n}\n\nfunction g() {",
        "return x * 2;",
    ),
    Case(
        "c function closed by the completion when the document has no brace yet",
        "c",
        "int main(void) {\n█",
        '    printf("hi\\n");\n    return 0;\n}\n\nint foo() {',
        '    printf("hi\\n");\n    return 0;\n}',
    ),
    Case(
        "c call arguments drop the tail the line already has",
        "c",
        "    send(sock, █, 0);\n",
        "buf, sizeof(buf), 0);\n",
        "buf, sizeof(buf)",
    ),
    Case(
        "python only whitespace is nothing",
        "python",
        "x = 1\n█",
        "   \n  ",
        "",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_postprocess(case: Case) -> None:
    got = postprocess(
        case.raw,
        prefix=case.prefix,
        suffix=case.suffix,
        language_id=case.language_id,
        **case.options,
    )
    assert got == case.expected


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_settled_never_changes_the_result(case: Case) -> None:
    kwargs = {"prefix": case.prefix, "suffix": case.suffix, "language_id": case.language_id}
    if "multiline" in case.options:
        kwargs["multiline"] = case.options["multiline"]
    full = postprocess(case.raw, **kwargs)
    for k in range(len(case.raw) + 1):
        if is_settled(case.raw[:k], **kwargs):
            assert postprocess(case.raw[:k], **kwargs) == full, k
            break
