"""Where codeassist keeps its caches: `$CODEASSIST_HOME`, else the user cache directory."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def codeassist_home() -> Path:
    """The root of every cache codeassist writes (models, logs, indexes of loose files)."""
    override = os.environ.get("CODEASSIST_HOME")
    root = Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("codeassist"))
    root.mkdir(parents=True, exist_ok=True)
    return root
