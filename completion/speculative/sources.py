"""Draft sources: cheap guesses of what the target model will write next.

Every source implements two methods: `propose(generated, max_tokens)` returns candidate
chains continuing `generated` (whose last token is the root of the next verify pass), and
`update(chain, accepted)` learns from how much of a chain the target accepted. No draft
(an empty list) is a normal answer. Sources are built per request by the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .ngram import NgramCache, find_continuations

SOURCES = ("recycle", "prompt", "repo", "model")  # cheapest first


@dataclass(frozen=True)
class Chain:
    tokens: list[int]
    kind: str  # acceptance is tracked per kind: "recycle", "prompt/3" (3-gram match), ...


class DraftSource(Protocol):
    name: str
    expensive: bool  # tried only when the cheaper sources found nothing worth verifying

    def propose(self, generated: list[int], max_tokens: int) -> list[Chain]: ...

    def update(self, chain: Chain, accepted: int) -> None: ...


class RecycledSuggestion:
    """The rest of the previous suggestion, after the characters the user typed into it: its
    own tokens (`ids`) when the prompt ends with the typed ones, else its text re-encoded."""

    name, expensive = "recycle", False

    def __init__(self, remaining: str, encode: Callable[[str], list[int]],
                 decode: Callable[[Sequence[int]], str], ids: Sequence[int] | None = None):
        self.remaining = remaining
        self.encode, self.decode = encode, decode
        self.ids = list(ids) if ids is not None else None
        self.diverged = False

    def propose(self, generated: list[int], max_tokens: int) -> list[Chain]:
        if self.diverged:
            return []
        if self.ids is not None:
            self.diverged = generated != self.ids[: len(generated)]
            rest = [] if self.diverged else self.ids[len(generated): len(generated) + max_tokens]
            return [Chain(rest, self.name)] if rest else []
        written = self.decode(generated)
        if not self.remaining.startswith(written):
            self.diverged = True  # the model went another way: the rest cannot match
            return []
        rest = self.remaining[len(written):]
        return [Chain(self.encode(rest)[:max_tokens], self.name)] if rest else []

    def update(self, chain: Chain, accepted: int) -> None:
        pass


class PromptLookup:
    """N-gram lookup in the prompt (prefix, suffix, context) and the tokens generated so far."""

    name, expensive = "prompt", False

    def __init__(self, prompt_ids: Sequence[int], stop_ids: Collection[int], branches: int,
                 max_new_tokens: int):
        self.haystack = np.zeros(len(prompt_ids) + max_new_tokens + 1, dtype=np.int32)
        self.haystack[: len(prompt_ids)] = prompt_ids
        self.prompt_length = len(prompt_ids)
        self.stop_ids, self.branches = stop_ids, branches

    def propose(self, generated: list[int], max_tokens: int) -> list[Chain]:
        end = self.prompt_length + len(generated)
        if end > len(self.haystack):
            return []
        self.haystack[self.prompt_length : end] = generated
        tail = self.haystack[max(0, end - 4) : end].tolist()
        found = find_continuations(self.haystack[:end], tail, max_tokens, self.branches,
                                   stop_ids=self.stop_ids)
        return [Chain(tokens, f"{self.name}/{n}") for tokens, n in found]

    def update(self, chain: Chain, accepted: int) -> None:
        pass


class RepoLookup:
    """N-gram lookup in a repository cache: the open files ("repo"), or past suggestions
    ("past"). The two are tracked as separate kinds: past suggestions match very well while the
    user types into one, files rarely do on a new hole, and one shared rate made file drafts
    look trustworthy on new holes."""

    name, expensive = "repo", False

    def __init__(self, cache: NgramCache, prompt_ids: Sequence[int], stop_ids: Collection[int],
                 branches: int, kind: str = "repo"):
        self.cache, self.kind = cache, kind
        self.prompt_tail = list(prompt_ids[-4:])
        self.stop_ids, self.branches = stop_ids, branches

    def propose(self, generated: list[int], max_tokens: int) -> list[Chain]:
        if not len(self.cache):
            return []
        tail = (self.prompt_tail + generated)[-4:]
        # 1-gram matches over a whole repository are noise: require two tokens.
        found = find_continuations(self.cache.haystack(), tail, max_tokens, self.branches,
                                   min_n=2, stop_ids=self.stop_ids)
        return [Chain(tokens, f"{self.kind}/{n}") for tokens, n in found]

    def update(self, chain: Chain, accepted: int) -> None:
        pass
