"""Open documents edited as LSP clients edit them. Only "\\n", "\\r\\n" and "\\r" end a line;
pygls splits with `str.splitlines`, which also breaks at form feeds, vertical tabs,
"\\x1c"-"\\x1e", "\\x85", "\\u2028" and "\\u2029", so an incremental edit below such a
character landed on the wrong line and the server's text drifted from the editor's. And a
character past the end of its line means the line's end (pygls dropped such edits)."""

from __future__ import annotations

import logging
import re

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from . import pygls_adapter
from .positions import offset_at

logger = logging.getLogger(__name__)

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def lsp_lines(text: str) -> list[str]:
    """`text` cut after each LSP line break (each line keeps its break)."""
    return _LINE.findall(text)


class LspTextDocument(TextDocument):
    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(lsp_lines(self.source))

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        encoding = getattr(self.position_codec.encoding, "value", self.position_codec.encoding)
        text, edit = self.source, change.range
        try:
            start = offset_at(text, edit.start.line, edit.start.character, encoding, clamp=True)
            end = offset_at(text, edit.end.line, edit.end.character, encoding, clamp=True)
            if start > end:
                raise ValueError("the range ends before it starts")
        except ValueError as error:  # no client sends these; the text stays as it was
            logger.warning("an edit of %s was not applied: %s", self.uri, error)
            return
        self._source = text[:start] + change.text + text[end:]


class LspWorkspace(Workspace):
    """pygls' workspace, holding LspTextDocuments."""

    @classmethod
    def like(cls, workspace: Workspace) -> LspWorkspace:
        """A new, empty workspace with `workspace`'s root, folders, sync kind and encoding."""
        return cls(workspace.root_uri, pygls_adapter.sync_kind(workspace), list(workspace.folders.values()),
                   workspace.position_encoding)

    def _create_text_document(self, doc_uri, source=None, version=None, language_id=None) -> TextDocument:
        # (pygls_adapter.CREATE_TEXT_DOCUMENT: the factory pygls calls for every opened document)
        return LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                               sync_kind=pygls_adapter.sync_kind(self),
                               position_codec=pygls_adapter.position_codec(self))
