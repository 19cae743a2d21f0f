"""What a summary is asked for: a definition's code and context (no torch here: retrieval
builds these requests)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class SummaryRequest:
    qualified_name: str  # "Class.method"
    kind: str  # function | method | class
    code: str  # the definition's source
    context: str = ""  # enclosing class header, callers, callees (may be empty)
    language: str = "python"

    def key(self, model: str) -> str:
        """The cache key: sha256 of the model name, the code and the context."""
        digest = hashlib.sha256()
        for part in (model, self.language, self.code, self.context):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
        return digest.hexdigest()
