"""Stopping a forward pass between layers: lower-priority model work (a warm-up, a hover
summary, a batch of the index's embeddings) gives the CPU back within one layer's time
instead of one pass's."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch


class Preempted(Exception):
    """Raised before a decoder layer: the pass in flight is dropped."""


@contextmanager
def between_layers(model: torch.nn.Module, preempted: Callable[[], bool] | None):
    """While the block runs, raise Preempted before any of `model`'s repeated layers when
    `preempted()` is true (nothing is checked when it is None)."""
    layers = repeated_layers(model) if preempted is not None else []

    def check(module, args):
        if preempted():
            raise Preempted

    hooks = [layer.register_forward_pre_hook(check) for layer in layers]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def repeated_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The first list of layers of a transformers model: a causal LM's decoder layers
    (`model.layers`), a BERT encoder's (`encoder.layer`, inside sentence-transformers'
    wrapper too); none when it has no such list."""
    if not isinstance(model, torch.nn.Module):
        return []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "layer"):
            return list(module)
    return []
