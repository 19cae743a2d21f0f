"""N-gram lookup: where did the last few tokens occur before, and what followed them?

Haystacks are int32 arrays searched with vectorised comparisons (a 100k-token haystack costs
well under a millisecond per lookup, small next to one decode step), so there is no index to
keep in sync. `NgramCache` is the bounded, multi-document haystack of the repository cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence

import numpy as np

SEPARATOR = -1  # between documents: no match or continuation crosses it
MAX_MATCHES = 32  # matches examined per n-gram length


def find_continuations(haystack: np.ndarray, tail: Sequence[int], length: int, branches: int,
                       max_n: int = 4, min_n: int = 1,
                       stop_ids: Collection[int] = ()) -> list[tuple[list[int], int]]:
    """Continuations of the longest n-gram suffix of `tail` found in `haystack`, most recent
    match first, at most one per distinct first token. Returns (tokens, n) pairs, n being the
    length of the matched n-gram. Continuations end at a separator or a stop id."""
    found: list[tuple[list[int], int]] = []
    firsts: set[int] = set()
    size = len(haystack)
    for n in range(min(max_n, len(tail)), min_n - 1, -1):
        if size <= n:
            continue
        key = np.asarray(tail[-n:], dtype=haystack.dtype)
        hits = np.ones(size - n, dtype=bool)
        for offset in range(n):
            hits &= haystack[offset : size - n + offset] == key[offset]
        # The most recent matches only: a common n-gram in a large haystack has thousands.
        for start in np.flatnonzero(hits)[::-1][:MAX_MATCHES]:
            tokens = _continuation(haystack, int(start) + n, length, stop_ids)
            if tokens and tokens[0] not in firsts:
                firsts.add(tokens[0])
                found.append((tokens, n))
                if len(found) >= branches:
                    return found
        if found:  # shorter n-grams only where the longest matched nothing
            return found
    return found


def _continuation(haystack: np.ndarray, start: int, length: int, stop_ids: Collection[int]) -> list[int]:
    tokens = []
    for token in haystack[start : start + length].tolist():
        if token == SEPARATOR or token in stop_ids:
            break
        tokens.append(token)
    return tokens


class NgramCache:
    """Token sequences by key (a file path, a past suggestion), least recently added evicted
    beyond `max_tokens` or `max_docs`; searched as one haystack. Thread-safe: the server adds
    documents on its event loop while the completion worker searches."""

    def __init__(self, max_tokens: int = 200_000, max_docs: int = 4096):
        self.max_tokens, self.max_docs = max_tokens, max_docs
        self._docs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._haystack: np.ndarray | None = None
        self._lock = threading.Lock()

    def add(self, key: str, ids: Sequence[int]) -> None:
        if not len(ids):
            return
        with self._lock:
            self._docs.pop(key, None)
            self._docs[key] = np.asarray(ids[-self.max_tokens :], dtype=np.int32)
            while len(self._docs) > 1 and (len(self._docs) > self.max_docs or self.total_tokens > self.max_tokens):
                self._docs.popitem(last=False)
            self._haystack = None

    def drop(self, key: str) -> None:
        with self._lock:
            if self._docs.pop(key, None) is not None:
                self._haystack = None

    @property
    def total_tokens(self) -> int:
        return sum(len(doc) for doc in self._docs.values())

    def __len__(self) -> int:
        return len(self._docs)

    def haystack(self) -> np.ndarray:
        """All documents, newest last, separated by SEPARATOR."""
        with self._lock:
            if self._haystack is None:
                parts: list[np.ndarray] = []
                for doc in self._docs.values():
                    parts.extend((doc, np.array([SEPARATOR], dtype=np.int32)))
                self._haystack = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
            return self._haystack
