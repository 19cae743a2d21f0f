"""Hover on a function, method or class: its signature and docstring at once (tree-sitter,
no model), plus a short LLM summary from the cache, or made within the hover time budget,
or made in the background for the next hover.

Summaries are cached by content hash in a JSON file next to the code-search index.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from lsprotocol import types

from completion.summarize import Summarizer
from completion.summary_cache import SummaryCache
from completion.syntax import language_for
from retrieval import CodeIndex
from retrieval.definitions import DefinitionFinder
from retrieval.outline import Definition, identifier_at

from .positions import offset_at
from .scheduler import LatestWinsScheduler
from .settings import ServerSettings
from .summaries import BACKGROUND, HOVER, SummaryWorker
from .workspace_files import WorkspaceFiles

logger = logging.getLogger(__name__)

BACKGROUND_PER_DOCUMENT = 64  # summaries queued ahead of hovers, per opened document
PENDING_NOTE = "*Summary: being written; hover again in a moment.*"


class HoverProvider:
    """Hover content for definitions, and their summaries (cached, or made in the background)."""

    def __init__(self, files: WorkspaceFiles, index: Callable[[], CodeIndex | None],
                 summarizer: Callable[[], Summarizer | None], host: LatestWinsScheduler):
        self.files = files
        self._index = index
        self._summarizer = summarizer  # None while no model is loaded
        self.worker = SummaryWorker(host)
        self._caches: dict[Path | None, SummaryCache] = {}

    def cache(self) -> SummaryCache:
        """The summaries cache next to the current index (in memory without one)."""
        index = self._index()
        path = index.summaries_path if index else None
        if path not in self._caches:
            self._caches[path] = SummaryCache(path)
        return self._caches[path]

    async def hover(self, uri: str, position: types.Position, encoding: str,
                    settings: ServerSettings) -> types.Hover | None:
        text, relative = self.files.text(uri), self.files.relative(uri)
        if text is None or relative is None:
            logger.info("hover on a document that is not open in the workspace: %s", uri)
            return None
        try:
            offset = offset_at(text, position.line, position.character, encoding)
        except ValueError as error:
            logger.info("hover at a bad position in %s: %s", uri, error)
            return None
        column = offset - (text.rfind("\n", 0, offset) + 1)
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, self._resolve, relative, text, position.line + 1, column)
        if found is None:
            return None
        definition, finder = found
        summary = await self._summary(definition, finder, settings)
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, hover_markdown(definition, summary)))

    def _resolve(self, path: str, text: str, line: int, column: int):
        name, owner = identifier_at(text, line, column, language_for(path))
        if not name:
            return None
        finder = self.files.finder(self._index())
        definition = finder.at_position(path, text, line, column, name, owner)
        return (definition, finder) if definition is not None else None

    async def _summary(self, definition: Definition, finder: DefinitionFinder,
                       settings: ServerSettings) -> str | None:
        """The cached summary; else one made within the time budget; else PENDING_NOTE."""
        summarizer = self._summarizer()
        if not settings.hover_summaries or summarizer is None:
            return None
        future = self.worker.submit(_job_id(definition), _preparer(definition, finder, summarizer),
                                    summarizer, self.cache(), HOVER)
        try:
            text = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          settings.summary_budget_ms / 1000)
        except asyncio.TimeoutError:
            return PENDING_NOTE
        return text or None

    def precompute(self, uri: str, text: str, settings: ServerSettings) -> int:
        """Queue summaries of a file's functions and classes (background priority). Parses
        the file: call it off the event loop."""
        summarizer, relative = self._summarizer(), self.files.relative(uri)
        if not settings.hover_summaries or summarizer is None or relative is None:
            return 0
        finder = self.files.finder(self._index())
        defs = finder.definitions_of(relative, text)[:BACKGROUND_PER_DOCUMENT]
        for definition in defs:
            self.queue_summary(definition, finder)
        return len(defs)

    def queue_summary(self, definition: Definition, finder: DefinitionFinder) -> Future | None:
        """Have `definition` summarized in the background (the hover's prompt and cache); the
        future gets the text, or None. None when no model is loaded."""
        summarizer = self._summarizer()
        if summarizer is None:
            return None
        return self.worker.submit(_job_id(definition), _preparer(definition, finder, summarizer),
                                  summarizer, self.cache(), BACKGROUND)

    def stats(self) -> dict:
        return {**self.cache().stats(), "generated": self.worker.generated,
                "preempted": self.worker.preempted, "queued": self.worker.pending()}

    def close(self) -> None:
        self.worker.close()


def _job_id(definition: Definition) -> str:
    return f"{definition.path}:{definition.qualified_name}:{hash(definition.code)}"


def _preparer(definition: Definition, finder: DefinitionFinder, summarizer: Summarizer):
    def prepare():
        request = finder.summary_request(definition)
        return request.key(summarizer.loaded.name), request

    return prepare


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
