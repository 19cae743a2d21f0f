"""Repository context for completion: snippets from other files of the workspace, chosen
once per enclosing scope so they stay the same while the user types in one place.

For the function (or class, or module) around the cursor: the signatures of what the file
imports from the workspace, then the definitions of the names the function calls (resolved
through the file's imports and the index), then the chunks the index finds for the function's signature and the code around the cursor. The choice is
kept per (document, scope) until the cursor leaves the scope or a file a snippet came from
changes, so the context block at the start of the prompt keeps its tokens and its KV cache.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from completion.prompt import RepoFile
from completion.syntax import language_for

from .definitions import DefinitionFinder
from .outline import Definition, called_names, enclosing, python_imports

logger = logging.getLogger(__name__)

_QUERY_LINES = 12  # lines above the cursor (within the scope) in the search query
_SEARCH_K = 6
_SNIPPET_LINES = 16  # longer definitions are cut to their header and docstring
_DEFINITIONS = 8
_IMPORTED = 24  # imported names listed by signature
_SCOPES_KEPT = 64


@dataclass(frozen=True)
class _Choice:
    snippets: tuple[RepoFile, ...]
    sources: tuple[tuple[str, str], ...]  # (path, sha1 of its text) of every snippet's file


class RepoContext:
    """Snippets for the completion prompt, cached per (document key, enclosing scope)."""

    def __init__(self):
        self._chosen: dict[tuple[str, str], _Choice] = {}

    def snippets(self, key: str, finder: DefinitionFinder, path: str, text: str,
                 cursor: int) -> tuple[RepoFile, ...]:
        """Candidates, most useful first, for the document `key` at `cursor` (an offset)."""
        language = language_for(path)
        line = text.count("\n", 0, cursor) + 1
        scope = enclosing(finder.definitions_of(path, text), line, ("function", "method", "class"))
        scope_id = scope.qualified_name if scope is not None else ""
        cached = self._chosen.get((key, scope_id))
        if cached is not None and self._unchanged(finder, cached):
            return cached.snippets
        choice = self._choose(finder, path, text, line, scope, language)
        if len(self._chosen) >= _SCOPES_KEPT:
            self._chosen.pop(next(iter(self._chosen)))
        self._chosen[(key, scope_id)] = choice
        logger.info("repository context for %s in %s: %d snippets from %s", path,
                    scope_id or "<module>", len(choice.snippets),
                    sorted({s.path for s in choice.snippets}))
        return choice.snippets

    def forget(self, key: str) -> None:
        for chosen in [k for k in self._chosen if k[0] == key]:
            del self._chosen[chosen]

    @staticmethod
    def _unchanged(finder: DefinitionFinder, choice: _Choice) -> bool:
        return all(_digest(finder.read(path)) == digest for path, digest in choice.sources)

    def _choose(self, finder: DefinitionFinder, path: str, text: str, line: int,
                scope: Definition | None, language: str | None) -> _Choice:
        first = scope.start_line if scope is not None else max(1, line - _QUERY_LINES)
        last = scope.end_line if scope is not None else line
        found: list[Definition] = []
        calls = called_names(text, language, first, last)
        for name, owner in reversed(calls):  # the calls nearest the cursor's end of scope last
            if len(found) >= _DEFINITIONS:
                break
            definition = finder.resolve(name, owner, path, text, line)
            if definition is not None and definition.path != path and definition not in found:
                found.append(definition)
        snippets = _imported_api(finder, path, text)  # compact: many names per token
        snippets += [RepoFile(d.path, _snippet(d)) for d in found]
        snippets += self._search(finder, path, text, line, scope, found)
        sources = tuple(sorted({(s.path, _digest(finder.read(s.path))) for s in snippets}))
        return _Choice(tuple(snippets), sources)

    @staticmethod
    def _search(finder: DefinitionFinder, path: str, text: str, line: int,
                scope: Definition | None, found: list[Definition]) -> list[RepoFile]:
        if finder.index is None:
            return []
        lines = text.split("\n")
        top = max(scope.start_line if scope is not None else 1, line - _QUERY_LINES)
        query = "\n".join(([scope.signature] if scope is not None else []) + lines[top - 1 : line - 1])
        if not query.strip():
            return []
        try:
            hits = finder.index.search(query, _SEARCH_K)
        except Exception:  # an index being rebuilt must not stop completion
            logger.warning("context search failed for %s", path, exc_info=True)
            return []
        covered = {(d.path, d.start_line) for d in found}
        return [RepoFile(h.path, _clip(h.snippet)) for h in hits
                if h.path != path and (h.path, h.start_line) not in covered and h.snippet.strip()]


def _imported_api(finder: DefinitionFinder, path: str, text: str) -> list[RepoFile]:
    """(Python) What the file imports from the workspace, as one short entry per module: the
    signature and first docstring line of each imported function or class."""
    if language_for(path) != "python":
        return []
    by_module: dict[str, list[str]] = {}
    for item in python_imports(text):
        if item.name is None:
            continue
        module = finder.module_path(path, item.module, item.level)
        definition = next((d for d in finder.definitions_of(module)
                           if d.name == item.name and d.kind != "method"), None) if module else None
        if definition is None or definition.path == path:
            continue
        doc = definition.docstring.split("\n", 1)[0]
        entry = definition.signature + ": ..." + (f"  # {doc}" if doc else "")
        by_module.setdefault(definition.path, []).append(entry)
        if sum(len(v) for v in by_module.values()) >= _IMPORTED:
            break
    return [RepoFile(module, "\n".join(entries)) for module, entries in by_module.items()]


def _snippet(definition: Definition) -> str:
    """The definition, or for a long one its header and docstring (and a class's method
    signatures)."""
    lines = definition.code.split("\n")
    if len(lines) <= _SNIPPET_LINES:
        return definition.code
    head = _header(lines)
    if definition.kind == "class":
        indent = " " * (len(lines[0]) - len(lines[0].lstrip()) + 4)
        head += [l.rstrip().rstrip(":") + ": ..." for l in lines[len(head):]
                 if l.startswith(indent + "def ") or l.startswith(indent + "async def ")]
    return "\n".join(head)


def _header(lines: list[str]) -> list[str]:
    """The lines up to the end of the signature and the docstring after it."""
    end = 0
    while end < len(lines) and not lines[end].rstrip().endswith(":"):
        end += 1
    end += 1
    if end < len(lines) and lines[end].strip().startswith(('"""', "'''", 'r"""')):
        quote = lines[end].strip().lstrip("r")[:3]
        closing = end if lines[end].strip().count(quote) >= 2 else next(
            (i for i in range(end + 1, len(lines)) if quote in lines[i]), end)
        end = min(closing + 1, end + 15)
    return lines[:end]


def _clip(snippet: str) -> str:
    lines = snippet.split("\n")
    return "\n".join(lines if len(lines) <= _SNIPPET_LINES else _header(lines))


def _digest(text: str | None) -> str:
    return hashlib.sha1((text or "").encode("utf-8")).hexdigest()
