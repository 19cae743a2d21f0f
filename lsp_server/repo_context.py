"""Repository context for completion requests: snippets of other workspace files chosen for
the cursor's scope (retrieval/context.py), added to the request on the model worker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from completion import CompletionRequest
from retrieval.context import RepoContext

from .workspace_files import WorkspaceFiles

logger = logging.getLogger(__name__)


class CompletionContext:
    """Used from the model worker only (its choices are cached per document and scope)."""

    def __init__(self, files: WorkspaceFiles, index: Callable[[], object]):
        self.files = files
        self._index = index  # the current CodeIndex, or None
        self._chosen = RepoContext()

    def add_to(self, request: CompletionRequest, uri: str) -> CompletionRequest:
        """`request` with repository snippets for its cursor."""
        relative = self.files.relative(uri)
        if relative is None:
            return request
        try:
            snippets = self._chosen.snippets(uri, self.files.finder(self._index()), relative,
                                             request.text, request.cursor)
        except Exception:  # context is a bonus: never lose the completion over it
            logger.warning("repository context failed for %s", uri, exc_info=True)
            return request
        return replace(request, context=snippets)

    def forget(self, uri: str) -> None:
        self._chosen.forget(uri)
