"""Which drafts are worth a verify pass: acceptance per draft kind, forward cost per size.

A verify pass over n tokens costs `cost(n)`; plain decoding costs `cost(1)` per token. On this
project's CPU a pass over 2-16 tokens costs about 2x a single token, on a GPU about 1x, so the
same draft can pay off on one and not on the other. Both are measured while serving: a draft
of length k is expected to yield 1 + a (1 + q + ... + q^(k-1)) tokens, a being how often the
kind's first token is accepted and q how often a next one is after an accepted one (a copy,
once it matches, tends to go on); it is verified only if that beats plain decoding per ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .sources import Chain, DraftSource
from .tree import DraftTree
from .verify import Verdict

# Prior acceptance of a draft's first token, and of each next token once the previous one was
# accepted (copying, once started, tends to go on). Kinds without an entry use DEFAULT_PRIOR.
PRIORS = {"recycle": (0.9, 0.95), "model": (0.7, 0.7), "prompt/1": (0.2, 0.6), "prompt/2": (0.35, 0.7),
          "prompt/3": (0.5, 0.8), "prompt/4": (0.6, 0.85), "repo/2": (0.3, 0.7), "repo/3": (0.4, 0.8),
          "repo/4": (0.5, 0.85)}
DEFAULT_PRIOR = (0.3, 0.7)
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# (generated so far, a draft) -> how many of the draft's tokens decoding could still output
Room = Callable[[list[int], list[int]], int]


class AcceptanceStats:
    """Per draft kind: how often its first token is accepted, and how often each next token is
    once the one before was. Exponentially forgetting, starting from a prior."""

    def __init__(self, decay: float = 0.95, prior_weight: float = 4.0):
        self.decay, self.prior_weight = decay, prior_weight
        self._counts: dict[str, list[float]] = {}  # kind -> [first ok, first tried, next ok, next tried]

    def rates(self, kind: str) -> tuple[float, float]:
        first_prior, next_prior = PRIORS.get(kind, PRIORS.get(kind.split("/")[0], DEFAULT_PRIOR))
        first_ok, first_tried, next_ok, next_tried = self._counts.get(kind, (0.0,) * 4)
        weight = self.prior_weight
        return ((first_ok + first_prior * weight) / (first_tried + weight),
                (next_ok + next_prior * weight) / (next_tried + weight))

    def expected_tokens(self, kind: str, length: int) -> float:
        """Tokens a verify pass with this draft yields: the root plus the accepted prefix."""
        first, following = self.rates(kind)
        return 1.0 + first * sum(following**i for i in range(length))

    def record(self, kind: str, proposed: int, accepted: int) -> None:
        # Tokens after the first rejection were never tested: they do not count.
        counts = self._counts.setdefault(kind, [0.0] * 4)
        tested_next = max(accepted - 1, 0) + (1 if 0 < accepted < proposed else 0)
        for index, value in enumerate((accepted > 0, 1, max(accepted - 1, 0), tested_next)):
            counts[index] = counts[index] * self.decay + value

    def snapshot(self) -> dict[str, tuple[float, float]]:
        return {kind: tuple(round(r, 3) for r in self.rates(kind)) for kind in sorted(self._counts)}


class ForwardCost:
    """Milliseconds per target forward by input size (power-of-two buckets, moving average).
    Unmeasured sizes are assumed nearly as cheap as one token, so they get tried once."""

    def __init__(self, smoothing: float = 0.3):
        self.smoothing = smoothing
        self._ms: dict[int, float] = {}

    @staticmethod
    def bucket(tokens: int) -> int:
        return next((b for b in BUCKETS if tokens <= b), BUCKETS[-1])

    def record(self, tokens: int, ms: float) -> None:
        bucket = self.bucket(tokens)
        old = self._ms.get(bucket)
        self._ms[bucket] = ms if old is None else old + self.smoothing * (ms - old)

    @property
    def single_ms(self) -> float | None:
        return self._ms.get(1)

    def measured(self, tokens: int) -> bool:
        return self.bucket(tokens) in self._ms

    def ratio(self, tokens: int) -> float:
        """cost(tokens) / cost(1)."""
        single = self._ms.get(1)
        measured = self._ms.get(self.bucket(tokens))
        if single is None or measured is None:
            return 1.0 + 0.02 * (tokens - 1)
        return max(measured / single, 1.0)

    def snapshot(self) -> dict[int, float]:
        return {bucket: round(ms, 1) for bucket, ms in sorted(self._ms.items())}


@dataclass
class DraftStats:
    """What speculation did in one request."""

    verify_steps: int = 0
    drafted: int = 0  # draft tokens sent to the target
    accepted: int = 0
    accepted_by_source: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"verify_steps": self.verify_steps, "drafted": self.drafted,
                "accepted": self.accepted, "accepted_by_source": dict(self.accepted_by_source)}


class Drafter:
    """Builds one draft tree per decode step from the sources, cheapest first."""

    def __init__(self, sources: list[DraftSource], acceptance: AcceptanceStats,
                 cost: ForwardCost | None, max_tokens: int, max_nodes: int, trees: bool = True,
                 room: Room | None = None):
        """`cost` None: verify every draft at full length (no cost model). `room`: how many
        of a draft's tokens can still become part of the output (None: all)."""
        self.sources, self.acceptance, self.cost = sources, acceptance, cost
        self.max_tokens, self.max_nodes, self.trees = max_tokens, max_nodes, trees
        self.room = room
        self.stats = DraftStats()
        self._chains: list[tuple[DraftSource, Chain]] = []
        self._started = 0.0

    def tree(self, generated: list[int]) -> DraftTree:
        self._chains = []
        self._started = time.perf_counter()
        if self.cost is not None and not self.cost.measured(1):
            return DraftTree.rooted_at(generated[-1])  # measure a plain step first
        tree = DraftTree.rooted_at(generated[-1])
        # Expected tokens of the pass. Chains with different first tokens are alternatives
        # (at most one first token is the target's), so their expected gains add up.
        expected = 1.0
        for source in self.sources:
            if source.expensive and (expected > 1.0 or not self._drafting_pays(source)):
                continue
            for chain in source.propose(generated, self.max_tokens):
                if self.room is not None:
                    chain = Chain(chain.tokens[: self.room(generated, chain.tokens)], chain.kind)
                chain = self._worth(chain) if self.cost is not None else chain
                if chain is None or not chain.tokens:
                    continue
                if not self.trees and self._chains:
                    break  # without tree attention only one chain fits a pass
                gain = self.acceptance.expected_tokens(chain.kind, len(chain.tokens)) - 1.0
                if not self._pays_in_tree(expected, gain, len(tree), len(chain.tokens)):
                    continue
                if tree.add_chain(chain.tokens, chain.kind, self.max_nodes):
                    self._chains.append((source, chain))
                    expected += gain
        if self.cost is not None and len(tree) > 1 and expected <= self.cost.ratio(len(tree)):
            self._chains = []  # a plain step yields more per ms than this tree
            return DraftTree.rooted_at(generated[-1])
        return tree

    def _pays_in_tree(self, expected: float, gain: float, size: int, added: int) -> bool:
        """Does adding a chain (`added` nodes at most) raise the tree's tokens per ms?"""
        if self.cost is None or size == 1:
            return True  # a first chain was already judged by _worth
        return (expected + gain) / self.cost.ratio(size + added) > expected / self.cost.ratio(size)

    def _drafting_pays(self, source: DraftSource) -> bool:
        """For a source whose drafting itself costs time (a draft model): can any draft
        length beat plain decoding, counting `token_ms` per drafted token?"""
        if self.cost is None:
            return True
        token_ms = getattr(source, "token_ms", None)
        single = self.cost.single_ms
        if token_ms is None or single is None:
            return True  # not measured yet: try it
        return any(
            self.acceptance.expected_tokens(source.name, k) / (k * token_ms / single + self.cost.ratio(k + 1)) > 1.0
            for k in range(1, self.max_tokens + 1)
        )

    def _worth(self, chain: Chain) -> Chain | None:
        """The chain cut at the length with the best expected tokens per ms, or None."""
        best_length, best_rate = 0, 1.0  # plain decoding: one token per cost(1)
        for length in range(1, len(chain.tokens) + 1):
            rate = self.acceptance.expected_tokens(chain.kind, length) / self.cost.ratio(length + 1)
            if rate > best_rate:
                best_length, best_rate = length, rate
        return Chain(chain.tokens[:best_length], chain.kind) if best_length else None

    def update(self, tree: DraftTree, verdict: Verdict) -> None:
        if self.cost is not None:
            self.cost.record(len(tree), (time.perf_counter() - self._started) * 1000)
        self.stats.verify_steps += 1
        self.stats.drafted += len(tree) - 1
        self.stats.accepted += len(verdict.accepted)
        for kind in verdict.accepted_sources:
            source = kind.split("/")[0]
            self.stats.accepted_by_source[source] = self.stats.accepted_by_source.get(source, 0) + 1
        for source, chain in self._chains:
            accepted = _common_prefix(chain.tokens, verdict.accepted)
            self.acceptance.record(chain.kind, len(chain.tokens), accepted)
            source.update(chain, accepted)


def _common_prefix(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count
