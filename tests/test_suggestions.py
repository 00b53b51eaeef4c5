"""End to end: the server's suggestions are the model's text post-processed, and decoding stops
as soon as that text is settled.

One server runs for the whole module (a start costs seconds); the settings these tests vary
(``multiline``, ``candidates``) change without a reload, so each test sets the ones it needs.
The expected texts come from the reference greedy continuation (no KV cache, no stop rule) run
through ``postprocess``, so they share nothing with the server's decode loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import LanguageClient

from codegeex2_lsp.postprocess import make_context, postprocess
from tests.lsp_support import (
    Reference,
    inline,
    open_document,
    running_server,
    status,
    wait_for_state,
)
from tests.support import local_flags

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CURSOR = "█"
MAX_NEW_TOKENS = 64
TAGS = {
    "python": "# language: Python",
    "javascript": "// language: JavaScript",
    "go": "// language: Go",
    "rust": "// language: Rust",
    "java": "// language: Java",
}


@dataclass(frozen=True)
class Doc:
    """A document as an editor would hold it, with the cursor marked by █."""

    name: str
    language_id: str
    text: str

    @property
    def uri(self) -> str:
        return f"file:///project/{self.name}"

    @property
    def prefix(self) -> str:
        return self.text.split(CURSOR)[0]

    @property
    def suffix(self) -> str:
        return self.text.split(CURSOR)[1]

    @property
    def position(self) -> tuple[int, int]:
        before = self.prefix.split("\n")
        return len(before) - 1, len(before[-1])

    @property
    def source(self) -> str:
        return self.text.replace(CURSOR, "")

    def expected(self, raw: str, multiline: str = "auto") -> str:
        ctx = make_context(self.prefix, self.suffix, self.language_id, multiline)  # type: ignore[arg-type]
        return postprocess(raw, ctx)


PY_BLOCK = Doc(
    "store.py",
    "python",
    "import json\n\n\ndef load(path):\n    with open(path) as f:\n        █\n\n\n"
    "def save(path, data):\n    pass\n",
)
PY_PAREN = Doc(
    "stack.py",
    "python",
    "class Stack:\n    def __init__(█)\n        self.items = []\n\n    def push(self, item):\n"
    "        self.items.append(item)\n",
)
PY_CRLF = Doc(
    "main.py",
    "python",
    'import os\r\nimport sys\r\n\r\n\r\n█\r\n\r\n\r\nif __name__ == "__main__":\r\n    main()\r\n',
)
JS_ARROW = Doc(
    "sort.js",
    "javascript",
    "const items = [3, 1, 2];\nconst sorted = items.sort((a, b) => █);\nconsole.log(sorted);\n",
)
JS_BODY_CRLF = Doc(
    "sum.js",
    "javascript",
    "function sum(items) {█}\r\n\r\nmodule.exports = { sum };\r\n",
)
GO_TABS = Doc(
    "main.go",
    "go",
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfor i := 0; i < 10; i++ {\n\t\t█\n\t}\n'
    '\tfmt.Println("done")\n}\n',
)
RUST_MATCH = Doc(
    "describe.rs",
    "rust",
    'fn describe(n: i32) -> &\'static str {\n    match n {\n        0 => "zero",\n        █\n'
    "    }\n}\n",
)
JAVA_METHOD = Doc(
    "Greeter.java",
    "java",
    "public class Greeter {\n    public String greet(String name) {\n        █\n    }\n}\n",
)
DOCS = [PY_BLOCK, PY_PAREN, PY_CRLF, JS_ARROW, JS_BODY_CRLF, GO_TABS, RUST_MATCH, JAVA_METHOD]
SETTLING = [PY_BLOCK, PY_PAREN, JS_ARROW, GO_TABS, RUST_MATCH, JAVA_METHOD]
"""Positions where the suggestion is settled long before the raw greedy run ends."""


def flags(model_dir: Path) -> tuple[str, ...]:
    # The reference sees each file alone; snippets of the other open files would change the
    # prompt (context has tests of its own).
    return local_flags(model_dir, "--max-new-tokens", str(MAX_NEW_TOKENS), "--context-tokens", "0")


@pytest.fixture(scope="module")
def greedy(tiny_model_dir: Path) -> Callable[[Doc, int], str]:
    """The reference's raw greedy text for a document, remembered per (document, length)."""
    reference = Reference(tiny_model_dir)
    seen: dict[tuple[Doc, int], str] = {}

    def raw(doc: Doc, tokens: int = MAX_NEW_TOKENS) -> str:
        if (doc, tokens) not in seen:
            prompt = TAGS[doc.language_id] + "\n" + doc.prefix
            seen[doc, tokens] = reference.greedy(prompt, tokens)
        return seen[doc, tokens]

    return raw


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_model_dir: Path) -> AsyncIterator[LanguageClient]:
    async with running_server(*flags(tiny_model_dir)) as client:
        await wait_for_state(client, "ready")
        for doc in DOCS:
            open_document(client, doc.uri, doc.source, doc.language_id)
        yield client


async def configure(client: LanguageClient, multiline: str = "auto", candidates: int = 3) -> None:
    """Change settings the way an editor does, and wait until the server has applied them."""
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"codegeex2": {"multiline": multiline, "candidates": candidates}}
        )
    )
    current: dict[str, Any] = await status(client)
    assert current["settings"]["multiline"] == multiline
    assert current["settings"]["candidates"] == candidates


async def suggest(
    client: LanguageClient, doc: Doc, *, invoked: bool = False, uri: str | None = None
) -> list[str]:
    return await inline(client, uri or doc.uri, *doc.position, invoked=invoked)


def open_copy(client: LanguageClient, doc: Doc, folder: str) -> str:
    """Open ``doc`` again under a new URI: a document the server has answered nothing for."""
    uri = f"file:///project/{folder}/{doc.name}"
    open_document(client, uri, doc.source, doc.language_id)
    return uri


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
async def test_the_item_is_the_postprocessed_greedy_text(
    client: LanguageClient, greedy: Callable[[Doc, int], str], doc: Doc
) -> None:
    await configure(client)
    expected = doc.expected(greedy(doc, MAX_NEW_TOKENS))
    assert expected, "a case that says nothing about the text"
    assert await suggest(client, doc) == [expected]


async def test_a_closer_after_the_cursor_is_not_doubled(
    client: LanguageClient, greedy: Callable[[Doc, int], str]
) -> None:
    await configure(client)
    raw = greedy(PY_PAREN, MAX_NEW_TOKENS)
    first_line = raw.split("\n")[0]
    assert ")" in first_line, "the model should close the parenthesis itself here"
    (item,) = await suggest(client, PY_PAREN)
    assert item == first_line[: first_line.index(")")]
    assert "\n" not in item


async def test_crlf_documents_get_crlf_lines(client: LanguageClient) -> None:
    await configure(client)
    for doc in (PY_CRLF, JS_BODY_CRLF):
        (item,) = await suggest(client, doc)
        assert "\r\n" in item, doc.name
        assert "\n" not in item.replace("\r\n", ""), doc.name
        assert "\r" not in item.replace("\r\n", ""), doc.name


async def test_the_cursors_tab_indentation_is_not_written_again(client: LanguageClient) -> None:
    await configure(client)
    (item,) = await suggest(client, GO_TABS)
    assert item.strip()
    assert not item.startswith(("\t", " "))


async def test_multiline_never_gives_one_line(
    client: LanguageClient, greedy: Callable[[Doc, int], str]
) -> None:
    await configure(client, multiline="never")
    for doc in DOCS:
        if doc is JS_BODY_CRLF:
            continue  # its one line is empty, which the next test shows
        expected = doc.expected(greedy(doc, MAX_NEW_TOKENS), "never")
        assert expected, doc.name
        assert "\n" not in expected
        assert await suggest(client, doc) == [expected], doc.name
    for doc in (PY_CRLF, JS_BODY_CRLF):
        auto = doc.expected(greedy(doc, MAX_NEW_TOKENS), "auto")
        assert "\n" in auto, f"{doc.name}: auto should give several lines here"


async def test_multiline_never_offers_nothing_where_the_model_breaks_the_line(
    client: LanguageClient, greedy: Callable[[Doc, int], str]
) -> None:
    """In `{█}` the model starts a body on a new line: one line of it is an empty line."""
    raw = greedy(JS_BODY_CRLF, MAX_NEW_TOKENS)
    assert raw.startswith("\n")
    assert JS_BODY_CRLF.expected(raw, "never") == ""
    await configure(client, multiline="never")
    assert await suggest(client, JS_BODY_CRLF) == []
    await configure(client, multiline="auto")
    assert await suggest(client, JS_BODY_CRLF) == [JS_BODY_CRLF.expected(raw, "auto")]


async def test_multiline_always_goes_past_the_line_where_auto_stops(
    client: LanguageClient, greedy: Callable[[Doc, int], str]
) -> None:
    raw = greedy(JS_ARROW, MAX_NEW_TOKENS)
    auto, always = JS_ARROW.expected(raw, "auto"), JS_ARROW.expected(raw, "always")
    assert "\n" not in auto
    assert always.startswith(auto + "\n")
    await configure(client, multiline="always")
    assert await suggest(client, JS_ARROW) == [always]
    await configure(client, multiline="auto")
    assert await suggest(client, JS_ARROW) == [auto]


@pytest.mark.parametrize("candidates", [1, 3])
async def test_invoked_requests_offer_distinct_candidates(
    client: LanguageClient, greedy: Callable[[Doc, int], str], candidates: int
) -> None:
    await configure(client, candidates=candidates)
    for doc in (PY_BLOCK, JS_ARROW, RUST_MATCH):
        expected = doc.expected(greedy(doc, MAX_NEW_TOKENS))
        items = await suggest(client, doc, invoked=True)
        assert items[0] == expected, doc.name
        assert len(set(items)) == len(items) <= candidates
        assert all(items)
        if candidates > 1:
            assert len(items) > 1, "hotter sampling should find another suggestion"
        uri = open_copy(client, doc, f"automatic-{candidates}")
        assert await suggest(client, doc, uri=uri, invoked=False) == [expected]


async def test_an_automatic_request_right_after_an_invoked_one_gets_one_item(
    client: LanguageClient, greedy: Callable[[Doc, int], str]
) -> None:
    await configure(client, candidates=3)
    uri = open_copy(client, PY_BLOCK, "invoked-then-automatic")
    expected = PY_BLOCK.expected(greedy(PY_BLOCK, MAX_NEW_TOKENS))
    assert len(await suggest(client, PY_BLOCK, uri=uri, invoked=True)) > 1
    assert await suggest(client, PY_BLOCK, uri=uri, invoked=False) == [expected]


@pytest.mark.parametrize("doc", SETTLING, ids=lambda doc: doc.name)
async def test_early_stopping_generates_fewer_tokens(
    client: LanguageClient, greedy: Callable[[Doc, int], str], doc: Doc
) -> None:
    """The server stops after k tokens where the raw run goes on, with the same suggestion."""
    await configure(client)
    uri = open_copy(client, doc, "early")
    before = (await status(client))["tokens"]["generated"]
    items = await suggest(client, doc, uri=uri)
    generated = (await status(client))["tokens"]["generated"] - before
    raw = greedy(doc, MAX_NEW_TOKENS)
    expected = doc.expected(raw)
    assert expected
    assert items == [expected]
    assert 0 < generated < MAX_NEW_TOKENS
    assert greedy(doc, generated) != raw, "the raw run should decode more tokens than the server"
