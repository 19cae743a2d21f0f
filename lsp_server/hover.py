"""Hover on a function, method or class: its signature and docstring at once (tree-sitter,
no model), plus a short LLM summary from the cache, or made within the hover time budget,
or made in the background for the next hover. Also: repository context for completion.

Summaries are cached by content hash in a JSON file next to the code-search index.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.uris import to_fs_path

from completion import CompletionRequest
from completion.summarize import Summarizer, SummaryRequest
from completion.summary_cache import SummaryCache
from completion.syntax import language_for
from retrieval.context import RepoContext
from retrieval.definitions import DefinitionFinder
from retrieval.outline import Definition, identifier_at

from .positions import offset_at
from .summaries import BACKGROUND, HOVER, SummaryWorker

if TYPE_CHECKING:
    from .server import CodeassistServer, PreparedRequest

logger = logging.getLogger(__name__)

PENDING_NOTE = "*Summary: being written; hover again in a moment.*"


class CodeInsight:
    """What the server knows about definitions: hover content, summaries, FIM context."""

    def __init__(self, server: CodeassistServer):
        self.server = server
        self.worker = SummaryWorker(server.scheduler.busy)
        self.repo_context = RepoContext()
        self._caches: dict[Path | None, SummaryCache] = {}
        self._summarizer: Summarizer | None = None

    # --- plumbing ------------------------------------------------------------------------
    def _root(self) -> Path | None:
        root = self.server.workspace.root_path
        return Path(root) if root else None

    def finder(self) -> DefinitionFinder:
        """A finder that reads open documents from the workspace and other files from disk."""
        root = self._root()
        finder = DefinitionFinder(root, self.server.code_search.index)
        read_disk = finder.read

        def read(path: str) -> str | None:
            if root is not None:
                document = self.server.workspace.text_documents.get((root / path).as_uri())
                if document is not None:
                    return document.source
            return read_disk(path)

        finder.read = read
        return finder

    def cache(self) -> SummaryCache:
        index = self.server.code_search.index
        path = index.folder.parent / f"{index.folder.name}.summaries.json" if index else None
        if path not in self._caches:
            self._caches[path] = SummaryCache(path)
        return self._caches[path]

    def summarizer(self) -> Summarizer | None:
        engine = self.server.engine
        if engine is None:
            return None
        if self._summarizer is None or self._summarizer.loaded is not engine.loaded:
            self._summarizer = Summarizer(engine.loaded)
        return self._summarizer

    def _relative(self, uri: str) -> str | None:
        path, root = to_fs_path(uri), self._root()
        if path is None or root is None:
            return None
        try:
            return Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return None

    # --- hover ----------------------------------------------------------------------------
    async def hover(self, uri: str, position: types.Position) -> types.Hover | None:
        document = self.server.workspace.text_documents.get(uri)
        relative = self._relative(uri)
        if document is None or relative is None:
            logger.info("hover on a document that is not open in the workspace: %s", uri)
            return None
        text = document.source
        try:
            offset = offset_at(text, position.line, position.character, self.server.position_encoding)
        except ValueError as error:
            logger.info("hover at a bad position in %s: %s", uri, error)
            return None
        column = offset - (text.rfind("\n", 0, offset) + 1)
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, self._resolve, relative, text, position.line + 1, column)
        if found is None:
            return None
        definition, finder = found
        summary = await self._summary(definition, finder)
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, hover_markdown(definition, summary)))

    def _resolve(self, path: str, text: str, line: int, column: int):
        name, owner = identifier_at(text, line, column, language_for(path))
        if not name:
            return None
        finder = self.finder()
        definition = finder.at_position(path, text, line, column, name, owner)
        return (definition, finder) if definition is not None else None

    async def _summary(self, definition: Definition, finder: DefinitionFinder) -> str | None:
        """The cached summary; else one made within the time budget; else PENDING_NOTE."""
        summarizer = self.summarizer()
        if not self.server.settings.hover_summaries or summarizer is None:
            return None
        future = self.worker.submit(_job_id(definition), _preparer(definition, finder, summarizer),
                                    summarizer, self.cache(), HOVER)
        budget = self.server.settings.summary_budget_ms / 1000
        try:
            text = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), budget)
        except asyncio.TimeoutError:
            return PENDING_NOTE
        return text or None

    def precompute(self, uri: str) -> int:
        """Queue summaries of the open file's functions and classes (background priority)."""
        summarizer, document = self.summarizer(), self.server.workspace.text_documents.get(uri)
        relative = self._relative(uri)
        if not self.server.settings.hover_summaries or summarizer is None or document is None \
                or relative is None:
            return 0
        finder = self.finder()
        defs = finder.definitions_of(relative, document.source)
        for definition in defs:
            self.worker.submit(_job_id(definition), _preparer(definition, finder, summarizer),
                               summarizer, self.cache(), BACKGROUND)
        return len(defs)

    # --- completion context ----------------------------------------------------------------
    def with_context(self, prepared: PreparedRequest) -> CompletionRequest:
        """The request with repository snippets, when the setting is on (runs on the worker)."""
        request = prepared.request
        relative = self._relative(prepared.uri)
        if not self.server.settings.repo_context or relative is None:
            return request
        try:
            snippets = self.repo_context.snippets(prepared.uri, self.finder(), relative,
                                                  request.text, request.cursor)
        except Exception:  # context is a bonus: never lose the completion over it
            logger.warning("repository context failed for %s", prepared.uri, exc_info=True)
            return request
        return replace(request, context=snippets)

    def forget(self, uri: str) -> None:
        self.repo_context.forget(uri)

    def stats(self) -> dict:
        return {**self.cache().stats(), "generated": self.worker.generated,
                "preempted": self.worker.preempted, "queued": self.worker.pending()}

    def close(self) -> None:
        self.worker.close()


def _job_id(definition: Definition) -> str:
    return f"{definition.path}:{definition.qualified_name}:{hash(definition.code)}"


def _preparer(definition: Definition, finder: DefinitionFinder, summarizer: Summarizer):
    def prepare():
        request = summary_request(definition, finder)
        return request.key(summarizer.loaded.name), request

    return prepare


def summary_request(definition: Definition, finder: DefinitionFinder) -> SummaryRequest:
    return SummaryRequest(definition.qualified_name, definition.kind, definition.code,
                          finder.summary_context(definition), language_for(definition.path) or "")


def hover_markdown(definition: Definition, summary: str | None) -> str:
    """Signature in a code block, the docstring, then the summary."""
    fence = language_for(definition.path) or ""
    parts = [f"```{fence}\n{definition.signature}\n```"]
    if definition.docstring:
        parts.append(definition.docstring)
    if summary:
        parts.append(summary if summary == PENDING_NOTE else f"**Summary:** {summary}")
    parts.append(f"*{definition.path}:{definition.start_line}*")
    return "\n\n---\n\n".join(parts[:1]) + ("\n\n" + "\n\n".join(parts[1:]) if parts[1:] else "")
