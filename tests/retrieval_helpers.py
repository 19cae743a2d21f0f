"""A deterministic stand-in encoder (hashed bag of words) and a small fixture repository."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

FILES = {
    "geometry/shapes.py": (
        "import math\n\n\n"
        "class Circle:\n"
        "    def __init__(self, radius):\n        self.radius = radius\n\n"
        "    def area(self):\n        return math.pi * self.radius ** 2\n\n\n"
        "def perimeter_of_square(side):\n    return 4 * side\n"
    ),
    "net/http.go": (
        "package net\n\n"
        "func ParseHeader(line string) (string, string) {\n\treturn line, line\n}\n"
    ),
    "web/app.ts": (
        "export function renderPage(title: string): string {\n  return `<h1>${title}</h1>`;\n}\n"
    ),
    "README.md": "# Demo\n\nA tiny repository for the search tests.\n",
}


def write_repo(root: Path, files: dict[str, str] = FILES) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


class FakeEncoder:
    """Hashes words into a 64-d vector; records every text it encodes."""

    name = "fake-bag-of-words"
    dim = 64
    max_tokens = 64

    def __init__(self):
        self.encoded: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, np.float32)
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return vector / max(np.linalg.norm(vector), 1e-6)

    def encode(self, texts, batch_size=32, progress=None, run_batch=None):
        def encode_all() -> np.ndarray:
            self.encoded.extend(texts)
            return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

        rows = encode_all() if run_batch is None else run_batch(encode_all)
        if progress is not None:
            progress(len(texts))
        return rows

    def encode_query(self, query: str) -> np.ndarray:
        return self._vector(query)
