"""The greedy decode loop, with or without drafts: every step is one verify pass.

Without a drafter (or when no draft is worth it) the pass holds only the root token, which is
plain greedy decoding. With drafts the accepted tokens are exactly the ones greedy decoding
would have produced, so the output is the same token for token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

import torch
from transformers import DynamicCache

from ..healing import Healing
from .drafter import Drafter
from .tree import DraftTree
from .verify import verify

# Called after each token is appended to `generated`; returns a stop reason or None.
StopCheck = Callable[[list[int]], "str | None"]


@torch.inference_mode()
def greedy_decode(model, cache: DynamicCache, logits: torch.Tensor, stop_ids: Collection[int],
                  should_stop: StopCheck, drafter: Drafter | None = None,
                  healing: Healing | None = None, prefix: Sequence[int] = ()) -> tuple[list[int], str]:
    """Decode from `logits` (the prompt's last, or after `prefix`: tokens already generated
    and in the cache); returns the generated ids, `prefix` first (stop ids excluded), and why
    decoding stopped ("eos" or what `should_stop` said). While `healing` has text to rewrite,
    tokens are chosen among those that keep it, one per pass (no drafts)."""

    def choose(step_logits: torch.Tensor, before: list[int]) -> int:
        return healing.choose(step_logits, before) if healing else int(step_logits.argmax())

    generated: list[int] = list(prefix)
    tokens = [choose(logits[0, -1], generated)]
    while True:
        for token in tokens:
            if token in stop_ids:
                return generated, "eos"
            generated.append(token)
            reason = should_stop(generated)
            if reason:
                return generated, reason
        # The last generated token is not in the cache yet: it is the root of the next pass.
        drafting = drafter if not (healing and healing.pending(generated) is not None) else None
        tree = drafting.tree(generated) if drafting else DraftTree.rooted_at(generated[-1])
        started = time.perf_counter()
        verdict = verify(model, cache, tree)
        if drafting:
            drafting.update(tree, verdict, (time.perf_counter() - started) * 1000)
        tokens = [*verdict.accepted, choose(verdict.logits[0, -1], generated + verdict.accepted)]
