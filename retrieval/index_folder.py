"""An index folder is ours alone: the index replaces `manifest.json` and deletes `gen-*`
folders in it, so it may never be a folder that holds someone else's files.

A folder is ours when it is missing, empty, or carries our marker file (or an index
manifest of ours, written before the marker existed). It is never the workspace root, a
folder above it, or CODEASSIST_HOME or a folder above that. Everything the index writes
(generations, manifest, lock, summaries) stays inside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MARKER = ".codeassist-index"
_MARKER_TEXT = "This folder is a codeassist code index; codeassist may replace anything in it.\n"


def check_index_folder(folder: Path, root: Path, home: Path) -> None:
    """Raise ValueError when the index may not live in `folder` (nothing is written)."""
    folder, root, home = folder.expanduser().resolve(), root.resolve(), home.expanduser().resolve()
    if root.is_relative_to(folder):
        raise ValueError(f"index folder {folder} is the workspace or a folder above it; "
                         "choose an empty folder of its own")
    if home.is_relative_to(folder):
        raise ValueError(f"index folder {folder} is CODEASSIST_HOME or a folder above it; "
                         "choose an empty folder of its own")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"index folder {folder} is not a folder")
    if folder.is_dir() and not _is_ours(folder):
        raise ValueError(f"index folder {folder} holds other files; codeassist uses only an empty "
                         f"folder or one with its {MARKER} file")


def claim_index_folder(folder: Path, root: Path, home: Path) -> None:
    """Check `folder` and make it ours: created, with the marker file in it."""
    check_index_folder(folder, root, home)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.exists():
        descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with os.fdopen(descriptor, "w") as out:
            out.write(_MARKER_TEXT)


def _is_ours(folder: Path) -> bool:
    try:
        entries = [entry.name for entry in os.scandir(folder)]
    except OSError as error:
        raise ValueError(f"index folder {folder} cannot be read: {error}") from error
    if not entries or MARKER in entries and (folder / MARKER).is_file():
        return True
    return _has_our_manifest(folder)


def _has_our_manifest(folder: Path) -> bool:
    """An index written before the marker existed: its manifest names a generation folder."""
    manifest = folder / "manifest.json"
    if manifest.is_symlink() or not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and isinstance(data.get("generation"), str)
            and data["generation"].startswith("gen-") and "vectors_sha256" in data
            and (folder / data["generation"]).is_dir())
