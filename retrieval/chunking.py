"""Split a source file into search chunks at syntax boundaries (tree-sitter).

Functions, methods and classes become chunks with their symbol and enclosing scope
("Class.method"); a class chunk holds the class's lines outside its methods. The small
statements between definitions (imports, constants) are merged into module-level chunks.
Chunks longer than the encoder's window carry `blocks` split at statement boundaries, each
within the window, to be encoded and aggregated (SEA). Files without a grammar are cut into
line windows. Tree-sitter recovers from syntax errors, so a broken file still chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from completion.syntax import parser_for

from .types import Chunk

TokenCounter = Callable[[str], int]

_FUNCTIONS = frozenset({
    "function_definition", "function_declaration", "generator_function_declaration",
    "method_definition", "method_declaration", "constructor_declaration", "function_item",
    "function_signature_item",
})
_CLASSES = frozenset({
    "class_definition", "class_declaration", "abstract_class_declaration",
    "interface_declaration", "enum_declaration", "record_declaration", "struct_item",
    "enum_item", "trait_item", "union_item", "struct_specifier", "class_specifier",
    "union_specifier", "type_declaration",
})
# Containers that name a scope but are not chunks themselves.
_SCOPES = frozenset({"namespace_definition", "mod_item", "impl_item", "internal_module", "module"})
# Wrappers whose inner definition is the chunk, with the wrapper's lines.
_WRAPPERS = {"decorated_definition": "definition", "export_statement": "declaration",
             "template_declaration": None}
_VARIABLES = frozenset({"lexical_declaration", "variable_declaration"})
_FIELDS = frozenset({"public_field_definition", "field_definition"})
_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function",
                              "generator_function"})
# Nodes whose children are statements or members: chunks split into blocks at their starts.
_STATEMENT_LISTS = frozenset({
    "block", "statement_block", "compound_statement", "declaration_list", "class_body",
    "field_declaration_list", "statement_list", "constructor_body", "switch_body",
    "interface_body", "enum_body", "module",
})
_NAME_LEAVES = frozenset({"identifier", "field_identifier", "qualified_identifier",
                          "destructor_name", "operator_name", "type_identifier"})


def approximate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters per token), for tests and tools."""
    return len(text) // 4 + 1


@dataclass
class _Found:
    kind: str
    symbol: str
    scope: str
    start_row: int  # 0-based, including attached comments and decorators
    end_row: int
    node: object  # the definition node
    members: list  # (start_row, end_row) of nested definitions (classes only)


def chunk_file(path: str, text: str, language: str | None, max_tokens: int = 256,
               count_tokens: TokenCounter = approximate_tokens) -> list[Chunk]:
    """The chunks of `text` (the file at `path`, relative to the index root)."""
    if not text.strip():
        return []
    parser = parser_for(language) if language else None
    if parser is None:
        return line_windows(path, text, max_tokens, count_tokens)
    source = text.encode("utf-8")
    tree = parser.parse(source)
    lines = text.split("\n")
    found: list[_Found] = []
    rest: list[tuple[int, int]] = []
    _collect(tree.root_node, source, "", False, found, rest)
    chunks = [_definition_chunk(path, language, lines, f, max_tokens, count_tokens) for f in found]
    chunks += _module_chunks(path, language, lines, rest, max_tokens, count_tokens)
    return sorted(chunks, key=lambda c: (c.start_line, -c.end_line))


def line_windows(path: str, text: str, max_tokens: int = 256,
                 count_tokens: TokenCounter = approximate_tokens, language: str = "text") -> list[Chunk]:
    """Windows of whole lines, each within `max_tokens`."""
    lines = text.split("\n")
    rows = [r for r, line in enumerate(lines) if line.strip()]
    chunks = []
    for first, last in _pack(lines, rows, set(rows), max_tokens, count_tokens):
        body = "\n".join(lines[first : last + 1])
        chunks.append(Chunk(path, language, "lines", "", "", first + 1, last + 1, body, (body,)))
    return chunks


# --- finding definitions ------------------------------------------------------------------
def _collect(container, source: bytes, scope: str, in_class: bool, found: list[_Found],
             rest: list[tuple[int, int]]) -> None:
    """Definitions among `container`'s children (recursively through classes and scopes);
    the other children's row ranges go to `rest`."""
    comments: list = []
    for child in container.named_children:
        if child.type == "comment":
            comments.append(child)
            continue
        definition = _definition(child)
        if definition is None:
            rest.extend(_rows(c) for c in comments)
            rest.append(_rows(child))
            comments = []
            continue
        start_row = child.start_point.row
        # Comments right above a definition document it (Go, Rust, Java, JS doc comments).
        while comments and comments[-1].end_point.row >= start_row - 1:
            start_row = comments.pop().start_point.row
        rest.extend(_rows(c) for c in comments)
        comments = []
        _add(definition, child, start_row, source, scope, in_class, found, rest)
    rest.extend(_rows(c) for c in comments)


def _add(definition, outer, start_row: int, source: bytes, scope: str, in_class: bool,
         found: list[_Found], rest: list[tuple[int, int]]) -> None:
    kind, node = definition
    name = _name(node, source)
    end_row = _rows(outer)[1]
    if kind == "scope":
        body = node.child_by_field_name("body")
        if body is not None:
            inner = _join(scope, name)
            _collect(body, source, inner, node.type == "impl_item", found, rest)
        return
    if kind == "class":
        record = _Found("class", name, scope, start_row, end_row, node, [])
        found.append(record)
        body = node.child_by_field_name("body")
        if body is not None and node.type != "type_declaration":
            before = len(found)
            _collect(body, source, _join(scope, name), True, found, [])
            record.members = [(f.start_row, f.end_row) for f in found[before:]]
        return
    if "::" in name:  # C++ out-of-line definition: `ns::Class::method`
        qualifier, name = name.rsplit("::", 1)
        scope = _join(scope, qualifier.replace("::", "."))
    receiver = _go_receiver(node, source)
    if receiver:
        scope, in_class = _join(scope, receiver), True
    found.append(_Found("method" if in_class else "function", name, scope, start_row, end_row,
                        node, []))


def _definition(node):
    """(kind, definition node) for a chunk-worthy node, else None."""
    if node.type in _WRAPPERS:
        field = _WRAPPERS[node.type]
        inner = node.child_by_field_name(field) if field else None
        if inner is None:  # template_declaration: the declaration is its last named child
            inner = node.named_children[-1] if node.named_children else None
        return _definition(inner) if inner is not None else None
    if node.type in _FUNCTIONS:
        return "function", node
    if node.type in _CLASSES:
        # C/C++ `struct x;` and uses of `struct x` in declarations are not definitions.
        if node.type.endswith("_specifier") and node.child_by_field_name("body") is None:
            return None
        return "class", node
    if node.type in _SCOPES and node.child_by_field_name("body") is not None:
        return "scope", node
    if node.type in _VARIABLES | _FIELDS:
        declarator = node if node.type in _FIELDS else next(
            (c for c in node.named_children if c.type == "variable_declarator"), None)
        value = declarator.child_by_field_name("value") if declarator is not None else None
        if value is not None and value.type in _FUNCTION_VALUES:
            return "function", declarator
    return None


def _name(node, source: bytes) -> str:
    if node.type == "type_declaration":  # Go: `type X struct {...}`
        spec = next((c for c in node.named_children if c.child_by_field_name("name")), None)
        return _text(spec.child_by_field_name("name"), source) if spec else ""
    if node.type == "impl_item":
        return _text(node.child_by_field_name("type"), source).split("<", 1)[0]
    name = node.child_by_field_name("name")
    if name is not None:
        return _text(name, source)
    declarator = node.child_by_field_name("declarator")  # C/C++ functions
    while declarator is not None and declarator.type not in _NAME_LEAVES:
        inner = declarator.child_by_field_name("declarator")
        if inner is None:
            break
        declarator = inner
    return _text(declarator, source) if declarator is not None else ""


def _go_receiver(node, source: bytes) -> str:
    receiver = node.child_by_field_name("receiver") if node.type == "method_declaration" else None
    if receiver is None:
        return ""
    parameter = next((c for c in receiver.named_children if c.child_by_field_name("type")), None)
    if parameter is None:
        return ""
    text = _text(parameter.child_by_field_name("type"), source)
    return text.lstrip("*").split("[", 1)[0]


# --- building chunks ------------------------------------------------------------------
def _definition_chunk(path: str, language: str, lines: list[str], found: _Found,
                      max_tokens: int, count_tokens: TokenCounter) -> Chunk:
    rows = range(found.start_row, found.end_row + 1)
    if found.kind == "class":  # the class's own lines: header, fields, closing brace
        inside = {r for start, end in found.members for r in range(start, end + 1)}
        rows = [r for r in rows if r not in inside]
        splits = set(rows)
    else:
        splits = _statement_starts(found.node) | {found.start_row}
    rows = [r for r in rows if lines[r].strip()] or [found.start_row]
    text = "\n".join(lines[r] for r in rows)
    blocks = _blocks(lines, rows, splits, max_tokens, count_tokens)
    return Chunk(path, language, found.kind, found.symbol, found.scope, found.start_row + 1,
                 found.end_row + 1, text, blocks)


def _module_chunks(path: str, language: str, lines: list[str], rest: list[tuple[int, int]],
                   max_tokens: int, count_tokens: TokenCounter) -> list[Chunk]:
    """The statements outside definitions, merged into as few chunks as fit the window."""
    starts = {start for start, _ in rest}
    rows = sorted({r for start, end in rest for r in range(start, end + 1) if lines[r].strip()})
    chunks = []
    for first, last in _pack(lines, rows, starts, max_tokens, count_tokens):
        group = [r for r in rows if first <= r <= last]
        text = "\n".join(lines[r] for r in group)
        blocks = _blocks(lines, group, set(group), max_tokens, count_tokens)
        chunks.append(Chunk(path, language, "module", "", "", first + 1, last + 1, text, blocks))
    return chunks


def _blocks(lines: list[str], rows: list[int], splits: set[int], max_tokens: int,
            count_tokens: TokenCounter) -> tuple[str, ...]:
    """The chunk's text in pieces within `max_tokens`, cut only before rows in `splits` when
    possible; later pieces repeat the first line (the signature) for context."""
    pieces = _pack(lines, rows, splits, max_tokens, count_tokens)
    texts = ["\n".join(lines[r] for r in rows if first <= r <= last) for first, last in pieces]
    header = lines[rows[0]].strip()
    return tuple([texts[0]] + [f"{header}\n{t}" for t in texts[1:]])


def _pack(lines: list[str], rows: list[int], splits: set[int], max_tokens: int,
          count_tokens: TokenCounter) -> list[tuple[int, int]]:
    """Greedy (first row, last row) groups of `rows`, each within `max_tokens` when it can be:
    segments start at rows in `splits`; a segment too long alone is cut at any row."""
    segments: list[list[int]] = []
    for row in rows:
        if not segments or row in splits:
            segments.append([])
        segments[-1].append(row)
    pieces: list[list[int]] = []
    size = 0
    for segment in segments:
        cost = count_tokens("\n".join(lines[r] for r in segment))
        if cost > max_tokens:  # one statement larger than the window: cut it at lines
            for row in segment:
                line_cost = count_tokens(lines[row])
                if not pieces or size + line_cost > max_tokens:
                    pieces.append([])
                    size = 0
                pieces[-1].append(row)
                size += line_cost
            continue
        if not pieces or size + cost > max_tokens:
            pieces.append([])
            size = 0
        pieces[-1].extend(segment)
        size += cost
    return [(piece[0], piece[-1]) for piece in pieces if piece]


def _statement_starts(node) -> set[int]:
    """Rows where a statement or member inside `node` starts."""
    starts: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        for child in current.named_children:
            if current.type in _STATEMENT_LISTS:
                starts.add(child.start_point.row)
            if child.start_point.row != child.end_point.row:
                stack.append(child)
    return starts


def _rows(node) -> tuple[int, int]:
    """0-based first and last row of `node` (a node ending at column 0 ends the row before)."""
    end = node.end_point
    last = end.row - 1 if end.column == 0 and end.row > node.start_point.row else end.row
    return node.start_point.row, last


def _text(node, source: bytes) -> str:
    return source[node.start_byte : node.end_byte].decode("utf-8", "replace") if node else ""


def _join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope and name else scope or name
