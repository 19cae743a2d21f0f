"""Stopping a forward pass between decoder layers: lower-priority model work (a warm-up, a
hover summary) gives the model back within one layer's time instead of one pass's."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch


class Preempted(Exception):
    """Raised before a decoder layer: the pass in flight is dropped."""


@contextmanager
def between_layers(model: torch.nn.Module, preempted: Callable[[], bool] | None):
    """While the block runs, raise Preempted before any decoder layer of `model` when
    `preempted()` is true (nothing is checked when it is None)."""
    layers = decoder_layers(model) if preempted is not None else []

    def check(module, args):
        if preempted():
            raise Preempted

    hooks = [layer.register_forward_pre_hook(check) for layer in layers]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers of a transformers causal LM (`model.model.layers`), else none."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    return list(layers) if isinstance(layers, torch.nn.ModuleList) else []
