"""Finding the project's console scripts the way a user's venv holds them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def console_script(name: str) -> str:
    """The installed console script `name`: next to the running interpreter first (a venv's
    python run without activating the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    assert found, f"the {name} console script is installed neither next to {sys.executable} nor on PATH"
    return found
