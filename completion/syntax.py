"""Tree-sitter facts about the cursor: which language, and how deep the enclosing block is."""

from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from pathlib import PurePath

logger = logging.getLogger(__name__)

# language name -> (grammar module, function returning the language pointer)
_GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}

_EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".jsx": "javascript", ".ts": "typescript", ".mts": "typescript",
    ".tsx": "tsx", ".go": "go", ".rs": "rust", ".java": "java", ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp",
}

# Node types whose children are the statements/members of an indented block.
_BLOCK_TYPES = frozenset({
    "block", "statement_block", "class_body", "compound_statement", "declaration_list",
    "field_declaration_list", "interface_body", "enum_body", "object", "switch_body",
    "literal_value", "field_declaration_list", "match_block", "constructor_body",
})

# LSP languageId aliases to our names.
_ALIASES = {"typescriptreact": "tsx", "javascriptreact": "javascript", "c++": "cpp", "py": "python"}


def language_for(path: str | None = None, language_id: str | None = None) -> str | None:
    """Our language name from an LSP languageId or, failing that, the file extension."""
    if language_id:
        name = _ALIASES.get(language_id.lower(), language_id.lower())
        if name in _GRAMMARS:
            return name
    if path:
        return _EXTENSIONS.get(PurePath(path).suffix.lower())
    return None


@lru_cache(maxsize=None)
def parser_for(language: str):
    """A tree-sitter parser for `language` (one of our names); None without a grammar."""
    from tree_sitter import Language, Parser

    if language not in _GRAMMARS:
        return None
    module_name, function = _GRAMMARS[language]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        logger.warning("no tree-sitter grammar for %s (%s not installed)", language, module_name)
        return None
    return Parser(Language(getattr(module, function)()))


def enclosing_block_indent(text: str, cursor: int, language: str | None) -> int | None:
    """Indentation (in columns) of the statements of the block that holds `cursor`.

    None when the language has no grammar or the cursor is not inside a multi-line block.
    """
    if language not in _GRAMMARS:
        return None
    parser = parser_for(language)
    if parser is None:
        return None
    source = text.encode("utf-8")
    byte_offset = len(text[:cursor].encode("utf-8"))
    tree = parser.parse(source)
    node = tree.root_node.descendant_for_byte_range(byte_offset, byte_offset)
    while node is not None:
        if node.type in _BLOCK_TYPES and node.start_point.row != node.end_point.row:
            children = [c for c in node.named_children if c.type != "comment"]
            if children:
                first = children[0]
                line_start = source.rfind(b"\n", 0, first.start_byte) + 1
                prefix = source[line_start : first.start_byte]
                if not prefix.strip():  # the statement starts its own line
                    return len(prefix.decode("utf-8", "replace").expandtabs(4))
        node = node.parent
    return None
