"""Frozen records passed between the retrieval modules and to their callers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """A unit of code search: a function, method, class, the module-level rest of a file, or
    a window of lines of a file without a grammar. Lines are 1-based and inclusive."""

    path: str  # relative to the indexed root, with forward slashes
    language: str  # a tree-sitter language name, or "text"
    kind: str  # function | method | class | module | lines
    symbol: str  # the chunk's own name ("" for module and lines chunks)
    scope: str  # enclosing classes/namespaces joined with "." ("" at top level)
    start_line: int
    end_line: int
    text: str  # the chunk's source (for a class: its lines outside its methods)
    blocks: tuple[str, ...]  # pieces that each fit the encoder's window (SEA); one for most

    @property
    def qualified_name(self) -> str:
        """"Class.method", "function", or "" for anonymous chunks."""
        return ".".join(part for part in (self.scope, self.symbol) if part)


@dataclass(frozen=True)
class SearchHit:
    path: str
    start_line: int  # 1-based, inclusive
    end_line: int
    kind: str
    symbol: str
    scope: str
    score: float
    snippet: str

    @property
    def qualified_name(self) -> str:
        return ".".join(part for part in (self.scope, self.symbol) if part)


@dataclass(frozen=True)
class IndexStats:
    """What one index update did."""

    files: int  # files in the index after the update
    changed_files: int  # files (re)chunked
    deleted_files: int
    chunks: int  # chunks in the index after the update
    embedded_chunks: int  # chunks whose vectors were computed (the rest were reused)
    seconds: float

    def summary(self) -> str:
        return (f"{self.files} files, {self.chunks} chunks: {self.changed_files} changed, "
                f"{self.deleted_files} deleted, {self.embedded_chunks} chunks embedded "
                f"in {self.seconds:.1f} s")


@dataclass(frozen=True)
class DefinitionSummary:
    """The summary of one definition, for the index: found by path and name in the file's
    indexed chunks, only while the index holds the very text it was read from."""

    path: str  # relative to the indexed root, with forward slashes
    qualified_name: str
    start_line: int  # 1-based: picks among definitions of the same name
    file_sha: str  # indexer.text_sha of the file text the definition was read from
    text: str
