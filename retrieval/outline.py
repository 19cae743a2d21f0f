"""Tree-sitter facts about definitions in one file: where functions and classes are, their
signatures and docstrings, what a position names, what a stretch of code calls, and
(Python) what the file imports. Used by hover summaries and repository context.

Lines are 1-based and inclusive, like `Chunk`. Files without a grammar have no definitions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from completion.syntax import parser_for

_FUNCTIONS = frozenset({
    "function_definition", "function_declaration", "method_definition", "method_declaration",
    "constructor_declaration", "function_item", "generator_function_declaration",
})
_CLASSES = frozenset({
    "class_definition", "class_declaration", "interface_declaration", "struct_item",
    "trait_item", "enum_item", "impl_item",
})
_CALLS = frozenset({"call", "call_expression", "method_invocation"})
_IDENTIFIERS = frozenset({"identifier", "property_identifier", "field_identifier",
                          "type_identifier"})
_DOC_LINES = 12  # longest docstring kept


@dataclass(frozen=True)
class Definition:
    """A function, method or class found in a file."""

    path: str
    kind: str  # function | method | class
    name: str
    scope: str  # enclosing classes joined with "."
    start_line: int  # the definition's first line (decorators included)
    end_line: int
    name_line: int  # where its name is
    signature: str  # the header without the body, e.g. "def f(a, b=1) -> int"
    docstring: str
    code: str  # the whole definition

    @property
    def qualified_name(self) -> str:
        return ".".join(part for part in (self.scope, self.name) if part)


@dataclass(frozen=True)
class Import:
    """`from MODULE import NAME as ALIAS` / `import MODULE as ALIAS` (Python)."""

    alias: str  # the name bound in this file
    module: str  # dotted module, without the leading dots
    name: str | None  # the imported name (None for `import module`)
    level: int  # leading dots of a relative import


def _parse(text: str, language: str | None):
    parser = parser_for(language) if language else None
    if parser is None:
        return None, b""
    source = text.encode("utf-8")
    return parser.parse(source), source


def _text(node, source: bytes) -> str:
    return source[node.start_byte : node.end_byte].decode("utf-8", "replace") if node else ""


def definitions(path: str, text: str, language: str | None) -> list[Definition]:
    """Every function, method and class of the file, in source order."""
    tree, source = _parse(text, language)
    if tree is None:
        return []
    found: list[Definition] = []
    _walk(tree.root_node, source, path, "", False, found)
    return sorted(found, key=lambda d: (d.start_line, -d.end_line))


def _walk(node, source: bytes, path: str, scope: str, in_class: bool, found: list) -> None:
    for child in node.named_children:
        outer, inner = child, child
        if child.type in ("decorated_definition", "export_statement"):
            inner = child.child_by_field_name("definition") or child.child_by_field_name(
                "declaration") or child
        if inner.type in _FUNCTIONS or inner.type in _CLASSES:
            is_class = inner.type in _CLASSES
            name_node = inner.child_by_field_name("name") or inner.child_by_field_name("type")
            name = _text(name_node, source)
            kind = "class" if is_class else ("method" if in_class else "function")
            found.append(_definition(outer, inner, name_node, source, path, kind, name, scope))
            body = inner.child_by_field_name("body")
            if body is not None:
                inner_scope = ".".join(p for p in (scope, name) if p)
                _walk(body, source, path, inner_scope if is_class else scope, is_class, found)
        elif child.named_child_count and child.type not in ("string", "comment"):
            _walk(child, source, path, scope, in_class, found)


def _definition(outer, inner, name_node, source: bytes, path: str, kind: str, name: str,
                scope: str) -> Definition:
    body = inner.child_by_field_name("body")
    header_end = body.start_byte if body is not None else inner.end_byte
    colons = [c for c in inner.children if c.type == ":" and c.end_byte <= header_end]
    if colons:  # Python: stop at the header's colon (comments may sit before the body)
        header_end = colons[-1].start_byte
    signature = source[inner.start_byte : header_end].decode("utf-8", "replace")
    signature = " ".join(signature.split()).rstrip(" :{")
    name_line = (name_node or inner).start_point.row + 1
    return Definition(path, kind, name, scope, outer.start_point.row + 1, outer.end_point.row + 1,
                      name_line, signature, _docstring(inner, body, source), _text(outer, source))


def _docstring(node, body, source: bytes) -> str:
    """The Python docstring, or the comment right above the definition (other languages)."""
    if body is not None and body.type == "block":
        first = next((c for c in body.named_children if c.type != "comment"), None)
        if first is not None and first.type == "expression_statement" and first.named_children \
                and first.named_children[0].type == "string":
            return _clean_doc(_text(first.named_children[0], source))
        return ""
    comments = []
    previous = node.prev_named_sibling
    while previous is not None and previous.type == "comment":
        comments.insert(0, _text(previous, source))
        previous = previous.prev_named_sibling
    return _clean_doc("\n".join(comments))


def _clean_doc(raw: str) -> str:
    text = raw.strip()
    for quote in ('"""', "'''", '"', "'"):
        prefixes = ("", "r", "u", "R", "U")
        for prefix in prefixes:
            if text.startswith(prefix + quote) and text.endswith(quote) and len(text) >= 2 * len(quote):
                text = text[len(prefix) + len(quote) : -len(quote)]
                break
        else:
            continue
        break
    lines = [line.strip().lstrip("/*#").strip() if line.strip().startswith(("//", "/*", "*", "#"))
             else line for line in text.strip().split("\n")]
    indents = [len(l) - len(l.lstrip()) for l in lines[1:] if l.strip()]
    cut = min(indents) if indents else 0
    lines = [lines[0].strip()] + [l[cut:] for l in lines[1:]]
    return "\n".join(lines[:_DOC_LINES]).strip()


def enclosing(defs: list[Definition], line: int, kinds=("function", "method", "class")):
    """The innermost definition of one of `kinds` that holds 1-based `line`, else None."""
    holding = [d for d in defs if d.kind in kinds and d.start_line <= line <= d.end_line]
    return max(holding, key=lambda d: d.start_line, default=None)


def identifier_at(text: str, line: int, column: int, language: str | None) -> tuple[str, str]:
    """(identifier at 1-based `line`, 0-based character `column`, the object before its dot)
    or ("", "") when the position holds no identifier."""
    tree, source = _parse(text, language)
    lines = text.split("\n")
    if tree is None or not 1 <= line <= len(lines) or not 0 <= column <= len(lines[line - 1]):
        return "", ""
    byte = len("\n".join(lines[: line - 1]).encode("utf-8")) + (1 if line > 1 else 0)
    byte += len(lines[line - 1][:column].encode("utf-8"))
    node = tree.root_node.descendant_for_byte_range(byte, byte)
    if node is not None and node.type not in _IDENTIFIERS and byte > 0:
        node = tree.root_node.descendant_for_byte_range(byte - 1, byte - 1)  # end of a name
    if node is None or node.type not in _IDENTIFIERS:
        return "", ""
    parent = node.parent
    owner = ""
    if parent is not None and parent.type in ("attribute", "member_expression", "field_expression") \
            and parent.named_children and parent.named_children[-1] == node:
        owner = _text(parent.named_children[0], source).rsplit(".", 1)[-1]
    return _text(node, source), owner


def called_names(text: str, language: str | None, first_line: int, last_line: int) -> list[tuple[str, str]]:
    """(name, object before its dot or "") of the calls within the lines, in order, once each."""
    tree, source = _parse(text, language)
    if tree is None:
        return []
    seen: dict[tuple[str, str], None] = {}
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.end_point.row + 1 < first_line or node.start_point.row + 1 > last_line:
            continue
        if node.type in _CALLS:
            target = node.child_by_field_name("function") or node.child_by_field_name("name")
            if target is not None:
                seen.setdefault(_call_target(target, node, source), None)
        stack.extend(reversed(node.named_children))
    return [key for key in seen if key[0]]


@dataclass(frozen=True)
class Use:
    """A name used in code: `owner.name(...)` or `name` (owner "" when bare)."""

    name: str
    owner: str  # the whole expression before the dot, e.g. "logging.handlers", "self", "super()"
    line: int  # 1-based
    call: bool  # called, not just referenced


_NOT_USES = frozenset({"keyword_argument", "parameters", "default_parameter",
                       "typed_default_parameter", "typed_parameter", "import_statement",
                       "import_from_statement", "aliased_import", "dotted_name"})


def used_names(text: str, language: str | None, first_line: int, last_line: int) -> list[Use]:
    """The calls and name references within the lines, in source order: `f(...)`,
    `mod.f(...)`, `self.m(...)`, and (Python) bare or dotted names such as `Error` in
    `except Error` or `mod.CONSTANT`. A name definition's own name is not a use."""
    return list(_used_names(text, language, first_line, last_line))


# Completion context asks for the whole file's names at every new scope of one document
# version: a walk of a 3,000-line file takes ~0.3 s, so the last few answers are kept.
@functools.lru_cache(maxsize=8)
def _used_names(text: str, language: str | None, first_line: int, last_line: int) -> tuple[Use, ...]:
    tree, source = _parse(text, language)
    if tree is None:
        return ()
    found: list[Use] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.end_point.row + 1 < first_line or node.start_point.row + 1 > last_line:
            continue
        if node.type in _NOT_USES:
            value = node.child_by_field_name("value")  # `key=Value`, `param=Default`
            if value is not None:
                stack.append(value)
            continue
        line = node.start_point.row + 1
        if node.type in _CALLS:
            target = node.child_by_field_name("function") or node.child_by_field_name("name")
            name, owner = _call_target(target, node, source, dotted=True) if target is not None else ("", "")
            if name and first_line <= line <= last_line:
                found.append(Use(name, owner, line, True))
            arguments = node.child_by_field_name("arguments")
            if target is not None and target.type in ("attribute", "member_expression") \
                    and target.named_children:
                stack.append(target.named_children[0])  # the object may itself be a use
            if arguments is not None:
                stack.append(arguments)
            continue
        if node.type == "attribute" and len(node.named_children) == 2:
            obj, attr = node.named_children
            if obj.type in ("identifier", "attribute") and first_line <= line <= last_line:
                found.append(Use(_text(attr, source), _text(obj, source), line, False))
            stack.append(obj)
            continue
        if node.type == "identifier" and first_line <= line <= last_line:
            parent = node.parent
            named = parent is not None and parent.child_by_field_name("name") == node \
                and parent.type in _FUNCTIONS | _CLASSES
            if not named:
                found.append(Use(_text(node, source), "", line, False))
            continue
        stack.extend(reversed(node.named_children))
    found.sort(key=lambda u: u.line)
    return tuple(found)


def _call_target(target, call, source: bytes, dotted: bool = False) -> tuple[str, str]:
    if target.type in _IDENTIFIERS:
        owner = call.child_by_field_name("object")  # Java method_invocation
        owner_text = _text(owner, source) if owner else ""
        return _text(target, source), owner_text if dotted else owner_text.rsplit(".", 1)[-1]
    if target.type in ("attribute", "member_expression", "field_expression"):
        children = target.named_children
        name = _text(children[-1], source) if children else ""
        owner = _text(children[0], source) if len(children) > 1 else ""
        return name, " ".join(owner.split()) if dotted else owner.rsplit(".", 1)[-1]
    return "", ""


def python_imports(text: str) -> list[Import]:
    """The imports of a Python file (module level and nested)."""
    tree, source = _parse(text, "python")
    if tree is None:
        return []
    found: list[Import] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "import_statement":
            for item in node.named_children:
                module, alias = _aliased(item, source)
                found.append(Import(alias or module.split(".")[0], module if alias else
                                    module.split(".")[0], None, 0))
        elif node.type == "import_from_statement":
            found.extend(_from_imports(node, source))
        else:
            stack.extend(reversed(node.named_children))
    return found


def _aliased(item, source: bytes) -> tuple[str, str]:
    if item.type == "aliased_import":
        return _text(item.child_by_field_name("name"), source), _text(item.child_by_field_name("alias"), source)
    return _text(item, source), ""


def _from_imports(node, source: bytes) -> list[Import]:
    module_node = node.child_by_field_name("module_name")
    raw = _text(module_node, source)
    level = len(raw) - len(raw.lstrip("."))
    module = raw.lstrip(".")
    imports = []
    for item in node.children_by_field_name("name"):
        name, alias = _aliased(item, source)
        imports.append(Import(alias or name, module, name, level))
    return imports
