"""What a source file defines and imports, read with tree-sitter.

One generic walk serves every language: the tables below name, per grammar, the nodes that
define something, the nodes that only wrap definitions (``export``, decorators, templates,
namespaces), and the nodes that import. Grammars are the individual ``tree-sitter-*`` wheels,
loaded on first use: they are compiled in, so nothing is fetched at run time.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tree_sitter import Language, Node, Parser

from codegeex2_lsp.completion.prompt import printable

log = logging.getLogger(__name__)

SHORT_LINES = 12
"""A definition this short is kept whole; a longer one by its header and its members' headers."""

SUMMARY_LINES = 24
"""At most this many lines of a long definition's summary are kept."""

HEADER_LINES = 4
"""A header (the text before a definition's body) is cut to this many lines."""


@dataclass(frozen=True)
class Grammar:
    """How one tree-sitter grammar marks definitions and imports."""

    module: str
    function: str = "language"
    definitions: frozenset[str] = frozenset()
    containers: frozenset[str] = frozenset()
    """Definitions whose members are definitions too (classes, impls, interfaces)."""
    wrappers: frozenset[str] = frozenset()
    """Nodes looked through at the same level: they hold definitions but define nothing."""
    imports: frozenset[str] = frozenset()


_PYTHON = Grammar(
    "tree_sitter_python",
    definitions=frozenset({"function_definition", "class_definition", "assignment"}),
    containers=frozenset({"class_definition"}),
    wrappers=frozenset({"decorated_definition", "expression_statement", "block"}),
    imports=frozenset({"import_statement", "import_from_statement"}),
)

_JS_DEFINITIONS = frozenset(
    {
        "function_declaration",
        "generator_function_declaration",
        "class_declaration",
        "variable_declarator",
        "method_definition",
    }
)
_JS_WRAPPERS = frozenset({"export_statement", "lexical_declaration", "variable_declaration"})
_TS_DEFINITIONS = _JS_DEFINITIONS | frozenset(
    {
        "abstract_class_declaration",
        "interface_declaration",
        "type_alias_declaration",
        "enum_declaration",
        "function_signature",
        "method_signature",
        "property_signature",
        "public_field_definition",
    }
)
_TS_CONTAINERS = frozenset(
    {"class_declaration", "abstract_class_declaration", "interface_declaration"}
)
_JAVASCRIPT = Grammar(
    "tree_sitter_javascript",
    definitions=_JS_DEFINITIONS | frozenset({"field_definition"}),
    containers=frozenset({"class_declaration"}),
    wrappers=_JS_WRAPPERS | frozenset({"class_body"}),
    imports=frozenset({"import_statement", "export_statement"}),
)
_TS_WRAPPERS = _JS_WRAPPERS | frozenset({"class_body", "interface_body", "object_type"})
_TYPESCRIPT = Grammar(
    "tree_sitter_typescript",
    "language_typescript",
    definitions=_TS_DEFINITIONS,
    containers=_TS_CONTAINERS,
    wrappers=_TS_WRAPPERS,
    imports=frozenset({"import_statement", "export_statement"}),
)
_TSX = Grammar(
    "tree_sitter_typescript",
    "language_tsx",
    definitions=_TS_DEFINITIONS,
    containers=_TS_CONTAINERS,
    wrappers=_TS_WRAPPERS,
    imports=frozenset({"import_statement", "export_statement"}),
)
_GO = Grammar(
    "tree_sitter_go",
    definitions=frozenset(
        {
            "function_declaration",
            "method_declaration",
            "type_spec",
            "type_alias",
            "const_spec",
            "var_spec",
            "field_declaration",
            "method_elem",
        }
    ),
    containers=frozenset({"type_spec"}),
    wrappers=frozenset(
        {
            "type_declaration",
            "const_declaration",
            "var_declaration",
            "struct_type",
            "interface_type",
            "field_declaration_list",
            "import_declaration",
            "import_spec_list",
        }
    ),
    imports=frozenset({"import_spec"}),
)
_RUST = Grammar(
    "tree_sitter_rust",
    definitions=frozenset(
        {
            "function_item",
            "function_signature_item",
            "struct_item",
            "enum_item",
            "union_item",
            "trait_item",
            "type_item",
            "const_item",
            "static_item",
            "macro_definition",
            "impl_item",
            "mod_item",
        }
    ),
    containers=frozenset({"trait_item", "impl_item", "mod_item"}),
    wrappers=frozenset({"declaration_list"}),
    imports=frozenset({"use_declaration", "mod_item"}),
)
_JAVA = Grammar(
    "tree_sitter_java",
    definitions=frozenset(
        {
            "class_declaration",
            "interface_declaration",
            "enum_declaration",
            "record_declaration",
            "annotation_type_declaration",
            "method_declaration",
            "constructor_declaration",
            "field_declaration",
            "constant_declaration",
        }
    ),
    containers=frozenset(
        {"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"}
    ),
    wrappers=frozenset({"class_body", "interface_body", "enum_body", "enum_body_declarations"}),
    imports=frozenset({"import_declaration"}),
)
_C_DEFINITIONS = frozenset(
    {
        "function_definition",
        "declaration",
        "type_definition",
        "struct_specifier",
        "union_specifier",
        "enum_specifier",
        "preproc_def",
        "preproc_function_def",
        "field_declaration",
    }
)
_C_WRAPPERS = frozenset(
    {
        "preproc_ifdef",
        "preproc_if",
        "preproc_else",
        "preproc_elif",
        "linkage_specification",
        "declaration_list",
        "field_declaration_list",
    }
)
_C = Grammar(
    "tree_sitter_c",
    definitions=_C_DEFINITIONS,
    containers=frozenset({"struct_specifier", "union_specifier"}),
    wrappers=_C_WRAPPERS,
    imports=frozenset({"preproc_include"}),
)
_CPP = Grammar(
    "tree_sitter_cpp",
    definitions=_C_DEFINITIONS | frozenset({"class_specifier", "alias_declaration"}),
    containers=frozenset({"struct_specifier", "union_specifier", "class_specifier"}),
    wrappers=_C_WRAPPERS | frozenset({"template_declaration", "namespace_definition"}),
    imports=frozenset({"preproc_include"}),
)

GRAMMARS: dict[str, Grammar] = {
    "python": _PYTHON,
    "javascript": _JAVASCRIPT,
    "javascriptreact": _JAVASCRIPT,
    "typescript": _TYPESCRIPT,
    "typescriptreact": _TSX,
    "go": _GO,
    "rust": _RUST,
    "java": _JAVA,
    "c": _C,
    "cpp": _CPP,
}
"""Grammars by canonical language id (as ``completion.languages`` names languages)."""

FAMILIES: dict[str, str] = {
    "javascriptreact": "javascript",
    "typescript": "javascript",
    "typescriptreact": "javascript",
    "c": "c",
    "cpp": "c",
}
"""Languages whose files import each other share a family; the rest are their own."""


def family(language: str) -> str:
    return FAMILIES.get(language, language)


@dataclass(frozen=True)
class Definition:
    """One named definition: where it is and the text a prompt shows of it."""

    name: str
    line: int
    end_line: int
    header: str
    snippet: str
    member_of: str | None = None


@dataclass(frozen=True)
class Import:
    """One import as written: the module or path it names, and the local names it binds to the
    names they have in that module (a module alias binds to the empty string)."""

    source: str
    names: tuple[tuple[str, str], ...] = ()
    relative: bool = False


@dataclass(frozen=True)
class FileSymbols:
    language: str
    definitions: tuple[Definition, ...] = ()
    imports: tuple[Import, ...] = field(default_factory=tuple)


_languages: dict[str, Language] = {}
_lock = threading.Lock()
_parsers = threading.local()


def _language(grammar: Grammar) -> Language:
    key = f"{grammar.module}.{grammar.function}"
    with _lock:
        found = _languages.get(key)
        if found is None:
            module = importlib.import_module(grammar.module)
            found = _languages[key] = Language(getattr(module, grammar.function)())
        return found


def _parser(grammar: Grammar) -> Parser:
    """A parser per thread and grammar: parsers hold state and are not shared across threads."""
    parsers: dict[str, Parser] = _parsers.__dict__.setdefault("by_grammar", {})
    key = f"{grammar.module}.{grammar.function}"
    parser = parsers.get(key)
    if parser is None:
        parser = parsers[key] = Parser(_language(grammar))
    return parser


def parse(text: str, language: str) -> FileSymbols | None:
    """The definitions and imports of ``text``, or None for a language without a grammar."""
    grammar = GRAMMARS.get(language)
    if grammar is None:
        return None
    # An open document can hold lone surrogates, which UTF-8 cannot; each becomes one U+FFFD,
    # so lines and columns stay where they were.
    text = printable(text)
    source = text.encode("utf-8")
    tree = _parser(grammar).parse(source)
    lines = text.split("\n")
    definitions: list[Definition] = []
    imports: list[Import] = []
    _walk(tree.root_node, grammar, lines, None, 0, definitions, imports)
    return FileSymbols(language, tuple(definitions), tuple(imports))


def _walk(
    node: Node,
    grammar: Grammar,
    lines: list[str],
    member_of: str | None,
    depth: int,
    definitions: list[Definition],
    imports: list[Import],
) -> None:
    for child in node.named_children:
        kind = child.type
        if member_of is None and kind in grammar.imports:
            found = _import(child, grammar)
            if found is not None:
                imports.append(found)
        if kind in grammar.definitions:
            name = _name(child)
            if name:
                definitions.append(_definition(child, name, grammar, lines, member_of))
                if kind in grammar.containers and depth == 0:
                    body = child.child_by_field_name("body") or child.child_by_field_name("type")
                    if body is not None:
                        _walk(body, grammar, lines, name, 1, definitions, imports)
            elif kind in grammar.containers or kind == "declaration":
                _walk(child, grammar, lines, member_of, depth, definitions, imports)
        elif kind in grammar.wrappers:
            _walk(child, grammar, lines, member_of, depth, definitions, imports)


_NAME_TYPES = frozenset(
    {
        "identifier",
        "type_identifier",
        "field_identifier",
        "property_identifier",
        "private_property_identifier",
        "primitive_type",
    }
)


def _name(node: Node) -> str | None:
    """The name a definition binds, looking through declarators (C's ``*f(int)``) and
    assignments; None where it binds none or several (``a, b = ...``)."""
    for field_name in ("name", "left", "declarator", "type"):
        child = node.child_by_field_name(field_name)
        if child is None:
            continue
        while child is not None and child.type not in _NAME_TYPES:
            if child.type in (
                "qualified_identifier",
                "scoped_identifier",
                "scoped_type_identifier",
            ):
                child = child.child_by_field_name("name")
            elif child.type == "generic_type":
                child = child.named_children[0] if child.named_children else None
            else:
                child = child.child_by_field_name("declarator") or child.child_by_field_name("name")
        if child is not None and child.text:
            return child.text.decode("utf-8", errors="replace")
        return None
    return None


def _body(node: Node) -> Node | None:
    """The block a definition's header introduces, an arrow function's included."""
    body = node.child_by_field_name("body")
    if body is not None:
        return body
    value = node.child_by_field_name("value")
    return value.child_by_field_name("body") if value is not None else None


def _outer(node: Node) -> Node:
    """The node with what belongs to it in front: decorators, ``export``, a template."""
    parent = node.parent
    while parent is not None and parent.type in (
        "decorated_definition",
        "export_statement",
        "lexical_declaration",
        "variable_declaration",
        "template_declaration",
    ):
        if (
            parent.type in ("lexical_declaration", "variable_declaration")
            and len(parent.named_children) > 1
        ):
            break
        node, parent = parent, parent.parent
    return node


def _definition(
    node: Node, name: str, grammar: Grammar, lines: list[str], member_of: str | None
) -> Definition:
    outer = _outer(node)
    first, last = outer.start_point[0], outer.end_point[0]
    if last > first and outer.end_point[1] == 0:
        # Preprocessor lines end with their line break: the next line is not theirs.
        last -= 1
    body = _body(node)
    if body is None:
        header_end = last
    else:
        row = body.start_point[0]
        indent = len(lines[row]) - len(lines[row].lstrip())
        # A body that starts its own line (Python's block) is not part of the header; one that
        # opens on the header's last line (a brace) is.
        header_end = max(first, row - 1) if body.start_point[1] <= indent else row
    header_end = min(header_end, first + HEADER_LINES - 1)
    header = "\n".join(lines[first : header_end + 1])
    if last - first < SHORT_LINES or body is None:
        snippet = "\n".join(lines[first : min(last, first + SUMMARY_LINES - 1) + 1])
    else:
        snippet = _summary(node, grammar, lines, header, first, header_end)
    return Definition(name, first, last, header, snippet, member_of)


def _summary(
    node: Node, grammar: Grammar, lines: list[str], header: str, first: int, header_end: int
) -> str:
    """A long definition as its header and its members' first lines: what a caller needs."""
    kept = [header]
    seen = set(range(first, header_end + 1))
    if node.type in grammar.containers:
        for member in _members(node, grammar):
            row = _outer(member).start_point[0]
            if row not in seen and len(kept) < SUMMARY_LINES:
                seen.add(row)
                kept.append(lines[row])
    return "\n".join(kept)


def _members(node: Node, grammar: Grammar) -> Iterator[Node]:
    body = node.child_by_field_name("body") or node.child_by_field_name("type")
    if body is None:
        return
    stack = list(reversed(body.named_children))
    while stack:
        child = stack.pop()
        if child.type in grammar.definitions:
            yield child
        elif child.type in grammar.wrappers:
            stack.extend(reversed(child.named_children))


def _text(node: Node | None) -> str:
    return node.text.decode("utf-8", errors="replace") if node is not None and node.text else ""


def _unquote(text: str) -> str:
    return text.strip().strip("\"'`<>")


def _import(node: Node, grammar: Grammar) -> Import | None:
    """The import ``node`` states, or None where it imports nothing this index resolves."""
    reader = _IMPORT_READERS.get(grammar.module)
    return reader(node) if reader is not None else None


def _python_import(node: Node) -> Import | None:
    if node.type == "import_statement":
        names = []
        source = ""
        for child in node.named_children:
            if child.type == "aliased_import":
                source = _text(child.child_by_field_name("name"))
                names.append((_text(child.child_by_field_name("alias")), ""))
            else:
                source = _text(child)
                names.append((source.split(".")[0], ""))
        return Import(source, tuple(names)) if source else None
    module = node.child_by_field_name("module_name")
    source = _text(module)
    relative = module is not None and module.type == "relative_import"
    names = []
    for child in node.children_by_field_name("name"):
        if child.type == "aliased_import":
            original = _text(child.child_by_field_name("name"))
            names.append((_text(child.child_by_field_name("alias")), original))
        else:
            names.append((_text(child), _text(child)))
    return Import(source, tuple(names), relative) if source else None


def _js_import(node: Node) -> Import | None:
    source_node = node.child_by_field_name("source")
    if source_node is None:
        return None
    source = _unquote(_text(source_node))
    names: list[tuple[str, str]] = []
    stack = list(node.named_children)
    while stack:
        child = stack.pop()
        if child.type in ("import_specifier", "export_specifier"):
            original = _text(child.child_by_field_name("name"))
            alias = _text(child.child_by_field_name("alias")) or original
            names.append((alias, original))
        elif child.type == "namespace_import":
            names.extend((_text(part), "") for part in child.named_children)
        elif (
            child.type == "identifier"
            and child.parent is not None
            and (child.parent.type == "import_clause")
        ):
            names.append((_text(child), "default"))
        elif child.type in ("import_clause", "named_imports", "export_clause"):
            stack.extend(child.named_children)
    return Import(source, tuple(names), source.startswith("."))


def _go_import(node: Node) -> Import | None:
    source = _unquote(_text(node.child_by_field_name("path")))
    alias = _text(node.child_by_field_name("name")) or source.rsplit("/", 1)[-1]
    return Import(source, ((alias, ""),)) if source else None


def _rust_import(node: Node) -> Import | None:
    if node.type == "mod_item":
        if node.child_by_field_name("body") is not None:
            return None
        name = _text(node.child_by_field_name("name"))
        return Import(name, ((name, ""),), relative=True) if name else None
    argument = node.child_by_field_name("argument")
    if argument is None:
        return None
    names: list[tuple[str, str]] = []
    path = ""
    stack = [argument]
    while stack:
        child = stack.pop()
        if child.type == "scoped_identifier":
            path = path or _text(child.child_by_field_name("path"))
            name = _text(child.child_by_field_name("name"))
            names.append((name, name))
        elif child.type == "use_as_clause":
            original = _text(child.child_by_field_name("path")).rsplit("::", 1)[-1]
            names.append((_text(child.child_by_field_name("alias")), original))
        elif child.type == "scoped_use_list":
            path = path or _text(child.child_by_field_name("path"))
            listed = child.child_by_field_name("list")
            if listed is not None:
                stack.append(listed)
        elif child.type == "use_list":
            stack.extend(child.named_children)
        elif child.type == "identifier":
            names.append((_text(child), _text(child)))
    return Import(path, tuple(names))


def _java_import(node: Node) -> Import | None:
    target = next(
        (c for c in node.named_children if c.type in ("scoped_identifier", "identifier")), None
    )
    source = _text(target)
    if not source:
        return None
    wildcard = any(child.type == "asterisk" for child in node.named_children)
    name = source.rsplit(".", 1)[-1]
    return Import(source + (".*" if wildcard else ""), () if wildcard else ((name, name),))


def _c_include(node: Node) -> Import | None:
    path = node.child_by_field_name("path")
    if path is None or path.type != "string_literal":
        return None
    return Import(_unquote(_text(path)), relative=True)


_IMPORT_READERS: dict[str, Callable[[Node], Import | None]] = {
    "tree_sitter_python": _python_import,
    "tree_sitter_javascript": _js_import,
    "tree_sitter_typescript": _js_import,
    "tree_sitter_go": _go_import,
    "tree_sitter_rust": _rust_import,
    "tree_sitter_java": _java_import,
    "tree_sitter_c": _c_include,
    "tree_sitter_cpp": _c_include,
}
