"""Resolve names to their definitions across a workspace: the current file first, then
(Python) its imports, then the index's symbols. Also gathers what a summary is told about
a definition: its enclosing class, the functions it calls, and its callers.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from completion.summary_request import SummaryRequest
from completion.syntax import language_for

from . import search
from .files import read_text
from .outline import Definition, Import, called_names, definitions, enclosing, python_imports

logger = logging.getLogger(__name__)

ReadFile = Callable[[str], "str | None"]  # relative path -> text (None: unreadable)
_SUMMARY_CALLEES = 6
_SUMMARY_CALLERS = 3


def read_workspace_file(root: Path | None, path: str) -> str | None:
    """The text of `path` (relative to `root`) on disk; None when it cannot be read, or is
    not a regular file inside `root` once symlinks are resolved (`files.read_text`: never a
    FIFO or a device, at most its size limit)."""
    if root is None:
        return None
    try:
        target = (root / path).resolve()
        if not target.is_relative_to(root.resolve()):
            return None
    except (OSError, ValueError):
        return None
    return read_text(target)


class DefinitionFinder:
    """Definitions in the workspace at `root`; `index` (a CodeIndex) is optional."""

    def __init__(self, root: Path | None, index=None, read: ReadFile | None = None):
        self.root = root
        self.index = index
        self.read = read or (lambda path: read_workspace_file(root, path))
        self._parsed: dict[str, tuple[str, list[Definition]]] = {}
        self._imports: dict[str, tuple[str, list[Import]]] = {}

    def definitions_of(self, path: str, text: str | None = None) -> list[Definition]:
        """The file's definitions (parsed once per distinct text)."""
        text = self.read(path) if text is None else text
        if text is None:
            return []
        cached = self._parsed.get(path)
        if cached is None or cached[0] != text:
            cached = (text, definitions(path, text, language_for(path)))
            self._parsed[path] = cached
        return cached[1]

    def imports_of(self, path: str, text: str) -> list[Import]:
        """(Python) The file's imports (parsed once per distinct text)."""
        if language_for(path) != "python":
            return []
        cached = self._imports.get(path)
        if cached is None or cached[0] != text:
            cached = (text, python_imports(text))
            self._imports[path] = cached
        return cached[1]

    # --- resolving names ---------------------------------------------------------------
    def resolve(self, name: str, owner: str, path: str, text: str,
                line: int | None = None, guess: bool = True, *,
                use_index: bool = True) -> Definition | None:
        """The definition `name` (called as `owner.name` when `owner`) refers to in `path`.

        `owner` may be dotted (`pkg.mod`) or `self`/`cls`/`super()`; a method called on
        `self` is also looked up in the enclosing class's base classes, across files. With
        `guess`, a name the file does not explain (an object of unknown type, a name neither
        defined nor imported) is looked up in the index by its name alone; without it such a
        name resolves only to a function or class of that name, or (owner given) to a method
        of a class named like the owner."""
        defs = self.definitions_of(path, text)
        local = [d for d in defs if d.name == name]
        if owner in _SELF and line is not None:
            cls = enclosing(defs, line, ("class",))
            if cls is not None:
                mine = [d for d in local if d.scope == cls.qualified_name] if owner != "super()" else []
                found = mine[0] if mine else self._inherited(cls, name, 0)
                if found is not None:
                    return found
            if not guess:
                return None
        if not owner and local:
            top = [d for d in local if d.kind != "method"]
            if top:
                return top[0]
        found = self._through_imports(name, owner, path, text)
        if found is not None:
            return found
        if owner and owner not in _SELF and _is_name(owner):
            rest, _, last = owner.rpartition(".")
            cls = self.resolve(last, rest, path, text, line, guess=False,  # a variable? no lookup
                               use_index=last[:1].isupper())
            if cls is not None and cls.kind == "class":  # `Base.method(self)`, `Cls.create()`
                found = self._member(cls, name, 0)
                if found is not None:
                    return found
        if owner and local and guess:
            return local[0]
        return self._through_index(name, owner, path, guess) if use_index else None

    def _through_imports(self, name: str, owner: str, path: str, text: str) -> Definition | None:
        if language_for(path) != "python" or self.root is None:
            return None
        head, _, rest = owner.partition(".")
        for item in self.imports_of(path, text):
            if not owner and item.alias == name and item.name is not None:
                target = self.module_path(path, item.module, item.level)
                found = self._named(target, item.name) if target else None
                if found is None:  # `from pkg import module`? then not a definition
                    continue
                return found
            if owner and item.alias in (owner, head):
                module = item.module if item.name is None else _join(item.module, item.name)
                if item.alias == head and item.alias != owner:
                    module = _join(module, rest)  # `import pkg` ... `pkg.mod.f()`
                target = self.module_path(path, module, item.level)
                found = self._named(target, name) if target else None
                if found is not None:
                    return found
        return None

    def _member(self, cls: Definition, name: str, depth: int) -> Definition | None:
        """The method (or nested class) `name` of `cls`, or of its bases."""
        found = next((d for d in self.definitions_of(cls.path)
                      if d.name == name and d.scope == cls.qualified_name), None)
        return found if found is not None else self._inherited(cls, name, depth)

    def _inherited(self, cls: Definition, name: str, depth: int) -> Definition | None:
        """(Python) `name` defined in a base class of `cls` (resolved from cls's file)."""
        if depth >= _BASE_DEPTH or language_for(cls.path) != "python":
            return None
        text = self.read(cls.path)
        if text is None:
            return None
        for base in _bases(cls.signature):
            base_owner, _, base_name = base.rpartition(".")
            found = self.resolve(base_name, base_owner, cls.path, text, cls.start_line, guess=False)
            if found is not None and found.kind == "class" and found != cls:
                member = self._member(found, name, depth + 1)
                if member is not None:
                    return member
        return None

    def _named(self, path: str, name: str) -> Definition | None:
        return next((d for d in self.definitions_of(path) if d.name == name and d.kind != "method"),
                    None)

    def _through_index(self, name: str, owner: str, path: str, guess: bool = True) -> Definition | None:
        if self.index is None or (owner in _SELF and not guess):
            return None
        if not owner and language_for(path) == "python" and name in _BUILTINS:
            return None  # neither defined nor imported in the file: Python's own
        try:
            hits = self._symbol_hits(name)
        except Exception:  # an index being rebuilt or an encoder that failed: no answer
            logger.warning("symbol lookup of %s failed", name, exc_info=True)
            return None
        hits = [h for h in hits if h.symbol == name and h.kind in ("function", "method", "class")]
        if not guess:  # a function or class of that name; a method only of a class like `owner`
            owner_class = owner.rsplit(".", 1)[-1].lower()
            hits = [h for h in hits if (h.kind != "method" and not owner)
                    or (owner and h.kind == "method" and h.scope.rsplit(".", 1)[-1].lower() == owner_class)]
        hits.sort(key=lambda h: (h.path == path, not owner or owner not in h.scope))
        for hit in hits:
            found = next((d for d in self.definitions_of(hit.path)
                          if d.name == name and d.start_line <= hit.start_line + 2
                          and d.end_line >= hit.start_line), None)
            if found is not None:
                return found
        return None

    def _symbol_hits(self, name: str) -> list:
        """The index's chunks that define `name` (by name only: no semantic matches)."""
        snapshot = getattr(self.index, "snapshot", None)
        if snapshot is None or not hasattr(snapshot, "rows_by_symbol"):
            return self.index.symbols(name, k=20)
        return [search.hit(snapshot, row, 1.0) for row in snapshot.rows_by_symbol.get(name, ())[:20]]

    def module_path(self, path: str, module: str, level: int) -> str | None:
        """The workspace file (relative) of a Python module imported from `path`."""
        parts = [p for p in module.split(".") if p]
        here = PurePosixPath(path).parent
        if level > 0:  # `from .mod` is beside the file, `from ..mod` one folder up, ...
            base = here
            for _ in range(level - 1):
                if str(base) == ".":
                    return None
                base = base.parent
            bases = [base]
        else:  # absolute: from the root, or from any folder above the file
            bases = [PurePosixPath(".")] + [p for p in here.parents if str(p) != "."][::-1]
            bases += [here] if str(here) != "." else []
        for base in bases:
            stem = base.joinpath(*parts) if parts else base
            for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
                candidate = candidate.removeprefix("./")
                if self.read(candidate) is not None:
                    return candidate
        return None

    # --- what a definition is about --------------------------------------------------
    def at_position(self, path: str, text: str, line: int, column: int,
                    name: str, owner: str) -> Definition | None:
        """The definition named at 1-based `line` (its own name, or a use resolved)."""
        here = [d for d in self.definitions_of(path, text) if d.name == name and d.name_line == line]
        if here:
            return here[0]
        return self.resolve(name, owner, path, text, line)

    def summary_request(self, definition: Definition) -> SummaryRequest:
        """What to ask the model for a summary of `definition`: its code and context."""
        return SummaryRequest(definition.qualified_name, definition.kind, definition.code,
                              self.summary_context(definition), language_for(definition.path) or "")

    def summary_context(self, definition: Definition) -> str:
        """The enclosing class's header, the callees' signatures, and a few callers."""
        parts: list[str] = []
        text = self.read(definition.path) or ""
        if definition.kind == "method":
            cls = enclosing(self.definitions_of(definition.path, text), definition.start_line, ("class",))
            if cls is not None:
                doc = cls.docstring.split("\n", 1)[0]
                parts.append(f"# enclosing class\n{cls.signature}:" + (f'\n    """{doc}"""' if doc else ""))
        callees = []
        for name, owner in called_names(text, language_for(definition.path),
                                        definition.start_line, definition.end_line):
            if len(callees) >= _SUMMARY_CALLEES:
                break
            if name == definition.name:
                continue
            found = self.resolve(name, owner, definition.path, text, definition.start_line)
            if found is not None and found != definition:
                doc = found.docstring.split("\n", 1)[0]
                callees.append(found.signature + (f"  # {doc}" if doc else ""))
        if callees:
            parts.append("# functions it calls\n" + "\n".join(callees))
        callers = self._callers(definition)
        if callers:
            parts.append("# where it is used\n" + "\n".join(callers))
        return "\n\n".join(parts)

    def _callers(self, definition: Definition) -> list[str]:
        """"path: caller signature: the calling line" for a few uses of the definition."""
        call = f"{definition.name}("
        candidates: list[tuple[str, str]] = []
        if self.index is not None:
            try:
                hits = self.index.search(f"{definition.name} {definition.qualified_name}", 8, "bm25")
            except Exception:
                logger.warning("caller search for %s failed", definition.name, exc_info=True)
                hits = []
            candidates += [(h.path, h.snippet) for h in hits if call in h.snippet]
        own = self.read(definition.path) or ""
        candidates += [(d.path, d.code) for d in self.definitions_of(definition.path, own)
                       if call in d.code and d.kind != "class"]
        found: list[str] = []
        for path, code in candidates:
            lines = code.split("\n")
            header, use = lines[0].strip(), next((l.strip() for l in lines[1:] if call in l), "")
            if not use or header.startswith(("def " + definition.name, "class " + definition.name)):
                continue
            entry = f"{path}: {header} ... {use}"
            if entry not in found:
                found.append(entry)
            if len(found) >= _SUMMARY_CALLERS:
                break
        return found


_SELF = frozenset({"self", "cls", "this", "super()"})
_BUILTINS = frozenset(dir(builtins))
_BASE_DEPTH = 4  # base classes followed up to this many levels


def _is_name(text: str) -> bool:
    """`a` or `a.b.c` (identifiers only, not a call or subscript)."""
    return all(part.isidentifier() for part in text.split("."))


def _bases(signature: str) -> list[str]:
    """(Python) The base classes of `class X(A, mod.B, metaclass=M)`: ["A", "mod.B"]."""
    if "(" not in signature:
        return []
    inner = signature[signature.index("(") + 1 : signature.rindex(")") if ")" in signature else None]
    parts, depth, current = [], 0, ""
    for char in inner:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if _is_name(p.strip()) and p.strip()]


def _join(module: str, name: str) -> str:
    return f"{module}.{name}" if module else name
