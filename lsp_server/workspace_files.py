"""The workspace files as hover and completion context read them: an open document's text
(what the user sees) before the file on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pygls.uris import to_fs_path
from pygls.workspace import Workspace

from retrieval.definitions import DefinitionFinder, read_workspace_file


class WorkspaceFiles:
    def __init__(self, workspace: Callable[[], Workspace]):
        self._workspace = workspace  # the server's, set at initialize

    def root(self) -> Path | None:
        try:
            root = self._workspace().root_path
        except RuntimeError:  # before initialize
            return None
        return Path(root) if root else None

    def text(self, uri: str) -> str | None:
        """The open document's text; None when it is not open."""
        try:
            document = self._workspace().text_documents.get(uri)
        except RuntimeError:
            return None
        return document.source if document is not None else None

    def relative(self, uri: str) -> str | None:
        """The path of `uri` relative to the workspace root; None outside it."""
        path, root = to_fs_path(uri), self.root()
        if path is None or root is None:
            return None
        try:
            return Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return None

    def open_paths(self) -> list[str]:
        """The open documents' paths relative to the workspace root (those inside it)."""
        try:
            uris = list(self._workspace().text_documents)
        except RuntimeError:
            return []
        return [path for path in map(self.relative, uris) if path is not None]

    def finder(self, index) -> DefinitionFinder:
        """A definition finder over the workspace (`index`: a CodeIndex or None) that reads
        open documents before the disk."""
        root = self.root()
        return DefinitionFinder(root, index, read=lambda path: self._read(root, path))

    def _read(self, root: Path | None, path: str) -> str | None:
        if root is not None:
            text = self.text((root / path).as_uri())
            if text is not None:
                return text
        return read_workspace_file(root, path)
