"""One target forward over a draft tree: keep what greedy decoding would have produced.

Greedy acceptance: starting at the root, follow the child whose token equals the target's
argmax at the current node; stop where no child matches. The target's argmax at the last
accepted node is the bonus token (the next root). The KV cache keeps exactly the root and the
accepted nodes, so it equals the cache plain decoding would have built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..growing_cache import GrowingLayer

from .tree import DraftTree


@dataclass(frozen=True)
class Verdict:
    accepted: list[int]  # draft tokens accepted after the root, in order
    accepted_sources: list[str]  # the source that proposed each accepted token
    logits: torch.Tensor  # (1, 1, vocab): the target's logits after the last accepted token


def supports_trees(cache: DynamicCache) -> bool:
    """Tree verification compacts the cache by index; only plain full-attention layers allow it."""
    return all(type(layer) in (DynamicLayer, GrowingLayer) for layer in cache.layers)


@torch.inference_mode()
def verify(model, cache: DynamicCache, tree: DraftTree) -> Verdict:
    device = next(model.parameters()).device
    past = cache.get_seq_length()
    inputs = torch.tensor([tree.tokens], dtype=torch.long, device=device)
    positions = (past + torch.tensor(tree.depths, device=device))[None, :]
    mask = None
    if not tree.is_chain:
        mask = tree.attention_mask(past, model.dtype, device)
    logits = model(input_ids=inputs, position_ids=positions, attention_mask=mask,
                   cache=cache, use_cache=True).logits[0]
    greedy = logits.argmax(-1).tolist()
    node, accepted_nodes = 0, []
    while (child := tree.child(node, greedy[node])) is not None:
        accepted_nodes.append(child)
        node = child
    _keep(cache, past, tree, [0, *accepted_nodes])
    return Verdict(
        accepted=[tree.tokens[n] for n in accepted_nodes],
        accepted_sources=[tree.sources[n] for n in accepted_nodes],
        logits=logits[node][None, None, :],
    )


def _keep(cache: DynamicCache, past: int, tree: DraftTree, nodes: list[int]) -> None:
    """Drop the cache entries of rejected nodes: the kept nodes' entries are gathered and
    written right after the past, then the tail is cropped. Only those entries are copied,
    and a growing cache keeps its buffers (replacing its tensors would make it copy them
    all at the next step)."""
    if nodes != list(range(len(nodes))):
        sources = past + torch.tensor(nodes)
        targets = past + torch.arange(len(nodes))
        for layer in cache.layers:
            for cached in (layer.keys, layer.values):
                cached[..., targets.to(cached.device), :] = cached[..., sources.to(cached.device), :]
    extra = len(tree) - len(nodes)
    if extra:
        cache.crop(-extra)
