"""Which drafts are worth a verify pass: acceptance per draft kind, forward cost per size.

A verify pass over n tokens costs `cost(n)`; plain decoding costs `cost(1)` per token. On a
CPU a pass costs more the more tokens it carries, on a GPU about as much as one token, so the
same draft can pay off on one and not on the other. Both are measured while serving (the
verify pass alone; a draft model's own steps are costed by its `token_ms`): a draft of
length k is expected to yield 1 + a (1 + q + ... + q^(k-1)) tokens, a being how often the
kind's first token is accepted and q how often a next one is after an accepted one (a copy,
once it matches, tends to go on); it is verified only if that beats plain decoding per ms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .sources import Chain, DraftSource
from .tree import DraftTree
from .verify import Verdict

# Prior acceptance of a draft's first token, and of each next token once the previous one was
# accepted (copying, once started, tends to go on). Kinds without an entry use DEFAULT_PRIOR.
PRIORS = {"recycle": (0.9, 0.95), "model": (0.7, 0.7), "prompt/1": (0.2, 0.6), "prompt/2": (0.35, 0.7),
          "prompt/3": (0.5, 0.8), "prompt/4": (0.6, 0.85), "repo/2": (0.3, 0.7), "repo/3": (0.4, 0.8),
          "repo/4": (0.5, 0.85), "past/2": (0.3, 0.7), "past/3": (0.4, 0.8), "past/4": (0.5, 0.85)}
DEFAULT_PRIOR = (0.3, 0.7)
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# (generated so far, a draft) -> how many of the draft's tokens decoding could still output
Room = Callable[[list[int], list[int]], int]


class AcceptanceStats:
    """Per draft kind: how often its first token is accepted, and how often each next token is
    once the one before was. Exponentially forgetting, starting from a prior: the fixed PRIORS,
    or the current rates of a `parent` (a request's own evidence on top of the server's)."""

    def __init__(self, decay: float = 0.95, prior_weight: float = 4.0,
                 parent: AcceptanceStats | None = None):
        self.decay, self.prior_weight, self.parent = decay, prior_weight, parent
        self._counts: dict[str, list[float]] = {}  # kind -> [first ok, first tried, next ok, next tried]

    def prior(self, kind: str) -> tuple[float, float]:
        if self.parent is not None:
            return self.parent.rates(kind)
        return PRIORS.get(kind, PRIORS.get(kind.split("/")[0], DEFAULT_PRIOR))

    def rates(self, kind: str) -> tuple[float, float]:
        first_prior, next_prior = self.prior(kind)
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
        if self.parent is not None:
            self.parent.record(kind, proposed, accepted)

    def snapshot(self) -> dict[str, tuple[float, float]]:
        return {kind: tuple(round(r, 3) for r in self.rates(kind)) for kind in sorted(list(self._counts))}


class ForwardCost:
    """Milliseconds per target forward by input size. Each power-of-two bucket of sizes keeps a
    moving average of (size, ms); a size is read off the line through the neighbouring
    buckets' points. (Rounding 9 tokens up to the cost of 16 cut drafts one token short of
    the end of a suggestion, and that token then took a pass of its own.) Sizes past the
    largest measured bucket are assumed nearly as cheap as one token, so they get tried once."""

    def __init__(self, smoothing: float = 0.3):
        self.smoothing = smoothing
        self._points: dict[int, tuple[float, float]] = {}  # bucket -> (mean size, mean ms)

    @staticmethod
    def bucket(tokens: int) -> int:
        return next((b for b in BUCKETS if tokens <= b), BUCKETS[-1])

    def record(self, tokens: int, ms: float) -> None:
        bucket = self.bucket(tokens)
        old = self._points.get(bucket)
        if old is None:
            self._points[bucket] = (float(tokens), ms)
        else:
            size, old_ms = old
            self._points[bucket] = (size + self.smoothing * (tokens - size), old_ms + self.smoothing * (ms - old_ms))

    @property
    def single_ms(self) -> float | None:
        point = self._points.get(1)
        return point[1] if point else None

    def measured(self, tokens: int) -> bool:
        return self.bucket(tokens) in self._points

    def ms(self, tokens: int) -> float | None:
        """Estimated ms of a pass over `tokens`; None past the largest measured bucket."""
        points = sorted(self._points.values())
        if not points or (tokens > points[-1][0] and not self.measured(tokens)):
            return None
        if tokens <= points[0][0]:
            return points[0][1]
        for (size0, ms0), (size1, ms1) in zip(points, points[1:]):
            if tokens <= size1:
                return ms0 + (ms1 - ms0) * (tokens - size0) / max(size1 - size0, 1e-9)
        return points[-1][1]  # inside the last bucket, past its mean size

    def ratio(self, tokens: int) -> float:
        """cost(tokens) / cost(1)."""
        single, estimate = self.single_ms, self.ms(tokens)
        if single is None or estimate is None:
            return 1.0 + 0.02 * (tokens - 1)
        return max(estimate / single, 1.0)

    def snapshot(self) -> list[tuple[float, float]]:
        """(mean pass size in tokens, mean ms) per measured bucket, smallest first."""
        return [(round(size, 1), round(ms, 1)) for size, ms in sorted(list(self._points.values()))]


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
        self.sources, self.cost = sources, cost
        # This request's own evidence counts as much as 3 drafts of the server's: a context
        # where a source keeps failing (code unlike anything in the prompt) stops it quickly.
        self.acceptance = AcceptanceStats(decay=1.0, prior_weight=3.0, parent=acceptance)
        self.max_tokens, self.max_nodes, self.trees = max_tokens, max_nodes, trees
        self.room = room
        self.stats = DraftStats()
        self._chains: list[tuple[DraftSource, Chain]] = []

    def tree(self, generated: list[int]) -> DraftTree:
        self._chains = []
        if self.cost is not None and not self.cost.measured(1):
            return DraftTree.rooted_at(generated[-1])  # measure a plain step first
        tree = DraftTree.rooted_at(generated[-1])
        expected = 1.0  # tokens the pass is expected to yield
        claimed = 0.0  # chance that one of the tree's first tokens is the target's
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
                gain, first, new = self._gain(tree, chain, claimed)
                if not new or not self._pays_in_tree(expected, gain, len(tree), new):
                    continue
                if tree.add_chain(chain.tokens, chain.kind, self.max_nodes):
                    self._chains.append((source, chain))
                    expected += gain
                    claimed += first
        if self.cost is not None and len(tree) > 1 and expected <= self.cost.ratio(len(tree)):
            self._chains = []  # a plain step yields more per ms than this tree
            return DraftTree.rooted_at(generated[-1])
        return tree

    def _gain(self, tree: DraftTree, chain: Chain, claimed: float) -> tuple[float, float, int]:
        """Tokens `chain` adds to what the tree is expected to yield, the chance it adds to the
        tree's first tokens, and how many nodes it adds. Chains are alternatives: at most one
        first token (and one child of any node) is the target's, so a chain's own rates are
        capped by what the tree's other branches leave."""
        first, following = self.acceptance.rates(chain.kind)
        shared, node = tree.follow(chain.tokens)
        new = len(chain.tokens) - shared
        if new == 0:
            return 0.0, 0.0, 0
        run = sum(following**i for i in range(new))
        if shared == 0:
            first = min(first, max(0.0, 1.0 - claimed))
            return first * run, first, new
        # Past the shared tokens the chain branches off (or goes on where the tree stops).
        reach = first * following ** (shared - 1)
        branch = following
        for child in tree.children(node):
            branch = min(branch, max(0.0, 1.0 - self.acceptance.rates(tree.sources[child])[1]))
        return reach * branch * run, 0.0, new

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

    def update(self, tree: DraftTree, verdict: Verdict, pass_ms: float) -> None:
        """Learn from a verify pass over `tree` that took `pass_ms` (the pass alone: drafting
        is costed by the sources that spend it)."""
        if self.cost is not None:
            self.cost.record(len(tree), pass_ms)
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


    def finish(self) -> None:
        """The request is over: sources that keep state across requests store it."""
        for source in self.sources:
            finish = getattr(source, "finish", None)
            if finish is not None:
                finish()


def _common_prefix(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count
