"""Draft trees: candidate continuations merged into a trie, flattened for one verify pass.

Node 0 is the root: the token greedy decoding already chose (not yet in the KV cache). Every
other node is a draft token whose parent is the token before it. A chain is a tree in which
each node has one child; it needs no custom attention mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DraftTree:
    tokens: list[int]  # tokens[0] is the root
    parents: list[int] = field(default_factory=lambda: [-1])
    sources: list[str] = field(default_factory=lambda: [""])  # which source proposed each node
    depths: list[int] = field(default_factory=lambda: [0])
    _children: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)

    @classmethod
    def rooted_at(cls, token: int) -> "DraftTree":
        return cls(tokens=[token])

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_chain(self) -> bool:
        return all(parent == index - 1 for index, parent in enumerate(self.parents))

    def child(self, node: int, token: int) -> int | None:
        return self._children.get((node, token))

    def follow(self, chain: list[int]) -> tuple[int, int]:
        """How many leading tokens of `chain` the tree already holds, and the node of the last."""
        node, count = 0, 0
        for token in chain:
            child = self.child(node, token)
            if child is None:
                break
            node, count = child, count + 1
        return count, node

    def children(self, node: int) -> list[int]:
        return [index for index, parent in enumerate(self.parents) if parent == node]

    def add_chain(self, chain: list[int], source: str, max_nodes: int) -> int:
        """Merge `chain` (continuing the root) into the trie; returns how many nodes it added.
        Stops adding once the tree holds `max_nodes` nodes (the root included)."""
        node, added = 0, 0
        for token in chain:
            existing = self.child(node, token)
            if existing is not None:
                node = existing
                continue
            if len(self.tokens) >= max_nodes:
                break
            self.tokens.append(token)
            self.parents.append(node)
            self.sources.append(source)
            self.depths.append(self.depths[node] + 1)
            self._children[(node, token)] = len(self.tokens) - 1
            node = len(self.tokens) - 1
            added += 1
        return added

    def path(self, node: int) -> list[int]:
        """Node indices from the root to `node`, both included."""
        nodes = []
        while node != -1:
            nodes.append(node)
            node = self.parents[node]
        return nodes[::-1]

    def attention_mask(self, past: int, dtype: torch.dtype, device) -> torch.Tensor:
        """Additive 4D mask (1, 1, nodes, past + nodes): every node sees the whole cache and its
        own ancestors (itself included), nothing else."""
        size = len(self.tokens)
        allowed = torch.zeros(size, size, dtype=torch.bool)
        for node in range(size):
            allowed[node, self.path(node)] = True
        mask = torch.zeros(1, 1, size, past + size, dtype=dtype, device=device)
        mask[0, 0, :, past:].masked_fill_(~allowed.to(device), torch.finfo(dtype).min)
        return mask
