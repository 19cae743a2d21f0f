"""Repository context for completion: snippets from other files of the workspace, chosen
once per enclosing scope so they stay the same while the user types in one place.

For the function (or class, or the lines around the cursor outside any), most useful first:

1. the definitions of the names it uses, nearest the cursor first: calls, and (Python) names
   imported from the workspace, bare or as `module.name`; resolved through the file's
   imports, `self`'s base classes and the index, never by a method's name alone (`x.run()`
   on an object of unknown type is not looked up); long ones cut to their signature and
   docstring, a class to its methods' signatures, a method under its class's header;
2. one line (the signature) per other workspace name the file uses, the most used in the
   file first;
3. one line per top-level name of the workspace modules the scope uses as `module.name`;
4. the chunks the index finds for the code above the cursor (other files only), those
   scoring at least MIN_HIT_SCORE.

The budget (completion/context.py) cuts this list from the end. The choice is kept per
(document, scope) until the cursor leaves the scope or a file a snippet came from changes,
so the context block at the start of the prompt keeps its tokens and its KV cache.
"""

from __future__ import annotations

import hashlib
import logging
import textwrap
from dataclasses import dataclass

from completion.prompt import RepoFile
from completion.syntax import language_for

from .definitions import DefinitionFinder
from .outline import Definition, Use, enclosing, used_names

logger = logging.getLogger(__name__)

_AROUND_LINES = 12  # outside any definition: the lines either side of the cursor
_QUERY_LINES = 12  # lines above the cursor (within the scope) in the search query
_SEARCH_K = 6
# A search hit is shown only at this hybrid score or above (cosine of all-MiniLM-L6-v2 plus a
# small BM25 share). On `codeassist bench context`'s 60 call holes, 142 hits of other files:
# below 0.8 one hit in 25 held the called definition (5 of 132), from 0.8 three in ten (3 of
# 10); the others fill the budget with unrelated files, and every token is prompt time.
MIN_HIT_SCORE = 0.8
_SHORT_LINES = 8  # definitions up to this long are shown whole
_DOC_LINES = 3  # docstring lines kept in a cut definition
_MEMBERS = 6  # method signatures listed under a class (__init__ and public ones first)
_HIT_LINES = 12  # lines kept of a search hit
_DEFINITIONS = 10
_IMPORTED = 32  # names the file uses listed by signature
_STUB_DOC_CHARS = 0  # of the docstring's first line after a listed signature (0: none)
_MODULES = 2  # modules whose names are all listed
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
        uses = _scope_uses(text, line, scope, language)
        modules = _workspace_aliases(finder, path, finder.imports_of(path, text))
        found = _used_definitions(finder, path, text, line, uses, modules)
        snippets = [RepoFile(d.path, _compact(finder, d)) for d in found]
        listed = set(found)
        snippets += _file_api(finder, path, text, language, modules, listed)  # many names per token
        snippets += _module_members(finder, path, uses, modules, listed)
        snippets += self._search(finder, path, text, line, scope, found)
        # Each file read and hashed once, however many snippets come from it.
        sources = tuple((path, _digest(finder.read(path))) for path in sorted({s.path for s in snippets}))
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
        covered = [(d.path, d.start_line, d.end_line) for d in found]
        snippets = []
        for hit in hits:
            if hit.score < MIN_HIT_SCORE:
                logger.debug("context: %s:%d below the relevance floor (%.2f)", hit.path, hit.start_line, hit.score)
                continue
            if hit.path == path or any(p == hit.path and a <= hit.start_line <= b for p, a, b in covered):
                continue
            code = _hit_code(finder, hit.path, hit.start_line, hit.end_line)
            if code.strip():
                snippets.append(RepoFile(hit.path, code))
        return snippets


def _scope_uses(text: str, line: int, scope: Definition | None, language: str | None) -> list[Use]:
    """The names used in the scope (or the lines around the cursor outside any definition),
    nearest the cursor first, above it before below it at the same distance."""
    if scope is not None:
        first, last = scope.start_line, scope.end_line
    else:
        first, last = max(1, line - _AROUND_LINES), line + _AROUND_LINES
    uses = used_names(text, language, first, last)
    uses.sort(key=lambda u: (abs(u.line - line), u.line > line))
    return uses


def _used_definitions(finder: DefinitionFinder, path: str, text: str, line: int, uses: list[Use],
                      modules: dict[str, str | None]) -> list[Definition]:
    """Definitions in other files of the names used, in the order of `uses`: calls, and names
    imported from the workspace (bare or as `alias.name`)."""
    elsewhere = {i.alias for i in finder.imports_of(path, text)} - set(modules)  # not ours
    found: list[Definition] = []
    tried: set[tuple[str, str]] = set()
    for use in uses:
        if len(found) >= _DEFINITIONS:
            break
        head = use.owner.split(".", 1)[0]
        if (use.name, use.owner) in tried or head in elsewhere or not (
                use.call or (head if use.owner else use.name) in modules):
            continue
        tried.add((use.name, use.owner))
        definition = finder.resolve(use.name, use.owner, path, text, line, guess=False)
        if definition is not None and definition.path != path and definition not in found:
            found.append(definition)
    return found


def _file_api(finder: DefinitionFinder, path: str, text: str, language: str | None,
              modules: dict[str, str | None], listed: set[Definition]) -> list[RepoFile]:
    """(Python) One line per workspace name the file uses, not listed yet, its signature:
    the names imported by name or used as `module.name` anywhere in the file, the most used
    first (then those imported but unused)."""
    if language != "python":
        return []
    counts: dict[tuple[str, str], int] = {}
    for use in used_names(text, language, 1, text.count("\n") + 1):
        if (use.owner.split(".", 1)[0] if use.owner else use.name) in modules:
            counts[(use.name, use.owner)] = counts.get((use.name, use.owner), 0) + 1
    for item in finder.imports_of(path, text):  # imported names not used (yet) come last
        if item.name is not None and item.alias in modules:
            counts.setdefault((item.alias, ""), 0)
    ranked = sorted(counts, key=lambda key: -counts[key])  # stable: first use first
    entries: list[RepoFile] = []
    for name, owner in ranked:
        definition = finder.resolve(name, owner, path, text, None, guess=False)
        if definition is None or definition.path == path or definition in listed \
                or definition.kind == "method":
            continue
        listed.add(definition)
        entries.append(RepoFile(definition.path, _one_line(definition)))
        if len(entries) >= _IMPORTED:
            break
    return entries


def _module_members(finder: DefinitionFinder, path: str, uses: list[Use],
                    modules: dict[str, str | None], listed: set[Definition]) -> list[RepoFile]:
    """One line per top-level function or class, not listed yet, of the workspace modules
    the scope uses as `module.name` (the module used nearest the cursor first)."""
    entries: list[RepoFile] = []
    seen: list[str] = []
    for use in uses:
        module = modules.get(use.owner)
        if module is None or module in seen or module == path:
            continue
        seen.append(module)
        for definition in finder.definitions_of(module):
            if not definition.scope and definition not in listed:
                listed.add(definition)
                entries.append(RepoFile(definition.path, _one_line(definition)))
        if len(seen) >= _MODULES:
            break
    return entries


def _workspace_aliases(finder: DefinitionFinder, path: str, imports) -> dict[str, str | None]:
    """The names the imports bind to workspace modules (-> the module's file) or to names
    in them (-> None)."""
    aliases: dict[str, str | None] = {}
    for item in imports:
        module = item.module if item.name is None else f"{item.module}.{item.name}".lstrip(".")
        target = finder.module_path(path, module, item.level)
        if target is not None:
            aliases[item.alias] = target
        elif item.name is not None and finder.module_path(path, item.module, item.level):
            aliases[item.alias] = None
    return aliases


def _one_line(definition: Definition) -> str:
    doc = definition.docstring.split("\n", 1)[0].strip() if _STUB_DOC_CHARS > 0 else ""
    if len(doc) > _STUB_DOC_CHARS:
        doc = doc[: _STUB_DOC_CHARS - 3].rstrip() + "..."
    return definition.signature + ": ..." + (f"  # {doc}" if doc else "")


def _source_lines(finder: DefinitionFinder, path: str, first: int, last: int) -> list[str]:
    """Lines `first`..`last` (1-based) of the file, dedented."""
    text = finder.read(path)
    if text is None:
        return []
    return textwrap.dedent("\n".join(text.split("\n")[first - 1 : last])).split("\n")


def _compact(finder: DefinitionFinder, definition: Definition) -> str:
    """The definition if short; else its decorators, signature and docstring (a class: and
    its methods' signatures). A method sits under its class's header."""
    lines = _source_lines(finder, definition.path, definition.start_line, definition.end_line)
    if not lines or not lines[0].strip():
        lines = textwrap.dedent(definition.code).split("\n")
    if definition.kind == "class":
        body = _head(definition, lines)
        members = [d for d in finder.definitions_of(definition.path)
                   if d.scope == definition.qualified_name and d.kind == "method"]
        members.sort(key=lambda d: (d.name != "__init__", d.name.startswith("_")))
        body += ["    " + d.signature + ": ..." for d in members[:_MEMBERS]]
        if len(body) == len(_head(definition, lines)):
            body.append("    ...")
    elif len(lines) <= _SHORT_LINES:
        body = lines
    else:
        body = _head(definition, lines) + ["    ..."]
    if definition.kind == "method":
        owner = enclosing(finder.definitions_of(definition.path), definition.start_line, ("class",))
        if owner is not None and owner.name_line < definition.name_line:
            body = [owner.signature + ":"] + ["    " + l if l else l for l in body]
    return "\n".join(body).rstrip()


def _head(definition: Definition, lines: list[str]) -> list[str]:
    """Decorators, the signature, and the docstring's first lines."""
    decorators = []
    for line in lines:
        if line.lstrip().startswith("@"):
            decorators.append(line.rstrip())
        else:
            break
    head = decorators + [definition.signature + ":"]
    doc = definition.docstring.strip()
    if doc:
        paragraph = doc.split("\n\n", 1)[0].split("\n")[:_DOC_LINES]
        quoted = ['"""' + paragraph[0]] + paragraph[1:]
        quoted[-1] += '"""'
        head += ["    " + l if l.strip() else "" for l in quoted]
    return head


def _hit_code(finder: DefinitionFinder, path: str, first: int, last: int) -> str:
    """A search hit's code, its docstring cut to one line, at most _HIT_LINES lines."""
    lines = _source_lines(finder, path, first, last)
    kept: list[str] = []
    in_doc = ""
    for line in lines:
        stripped = line.strip()
        if in_doc:
            if in_doc in stripped:
                in_doc = ""
            continue
        kept.append(line.rstrip())
        for quote in ('"""', "'''"):
            if stripped.lstrip("rRuU").startswith(quote) and stripped.count(quote) == 1:
                in_doc = quote  # an opened docstring: keep its first line, closed
                kept[-1] += ("..." if kept[-1].endswith(quote) else " ...") + quote
        if len(kept) >= _HIT_LINES:
            break
    return "\n".join(kept).rstrip()


def _digest(text: str | None) -> str:
    return hashlib.sha1((text or "").encode("utf-8")).hexdigest()
