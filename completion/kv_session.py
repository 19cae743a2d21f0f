"""Per-document KV sessions: keep the last prompt's cache and rebuild it for the next prompt.

A plan (kv_plan) says which tokens are reused, re-rotated or encoded; `build_cache` carries
it out in order, so every encoded run attends to the cache assembled before it. When reuse
is not valid for the model (no RoPE, dynamic NTK, a sliding window the prompt can reach) the
session falls back to prefix reuse, which is exact for any causal model.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from kernels.rope import rotate_keys

from .growing_cache import crop_to, growing_cache
from .preemption import Preempted, between_layers
from .kv_plan import ReusePlan, Segment

logger = logging.getLogger(__name__)

# RoPE variants whose frequencies do not depend on the sequence length: a shift is one rotation.
_SHIFTABLE_ROPE = {"default", "linear", "llama3", "yarn"}


def rope_inv_freq(model) -> torch.Tensor | None:
    """The inverse frequencies of the model's (single) rotary embedding, if it has one."""
    found = [m.inv_freq for m in model.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)]
    return found[0].detach().float() if len(found) == 1 else None


def shift_support(config, inv_freq: torch.Tensor | None, max_prompt_tokens: int) -> str | None:
    """None when cached keys may be re-rotated for a model with this config and rotary
    frequencies (`rope_inv_freq`); otherwise the reason why not. Cheap: no model walk."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if inv_freq is None:
        return "the model has no (single) rotary embedding"
    if rope_type not in _SHIFTABLE_ROPE:
        return f"rope type {rope_type!r} changes with sequence length"
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True) and window < max_prompt_tokens:
        return f"sliding window {window} is shorter than the prompt budget {max_prompt_tokens}"
    return None


@dataclass
class KvSession:
    ids: list[int]
    cache: DynamicCache
    edits_since_full: int = 0  # approximate reuses since the last full encode
    stale_since_full: int = 0  # tokens reused after a change since then

    def __len__(self) -> int:
        return len(self.ids)


ENCODE_CHUNK = 256  # prompt tokens per forward pass: a cancelled request stops within one


class EncodingCancelled(Exception):
    """The request was cancelled or superseded while its prompt was being encoded; `cache`
    holds the prompt's first `tokens` tokens, encoded so far."""

    def __init__(self, cache: DynamicCache, tokens: int, total: int):
        super().__init__(f"cancelled after {tokens} of {total} prompt tokens")
        self.cache, self.tokens = cache, tokens


@torch.inference_mode()
def build_cache(model, plan: ReusePlan, new_ids: list[int], old: KvSession | None,
                inv_freq: torch.Tensor | None,
                cancelled: Callable[[], bool] | None = None) -> tuple[DynamicCache, torch.Tensor]:
    """Carry out `plan`: returns the cache for `new_ids` and the logits of the last token.
    Encoded runs go ENCODE_CHUNK tokens per pass; `cancelled()` true between passes raises
    EncodingCancelled. When `cancelled` also has `preempted()`, that is checked before each
    decoder layer: true, the pass in flight is dropped (its layers' keys cropped back) and
    EncodingCancelled raised at once, keeping the passes before it."""
    device = next(model.parameters()).device
    cache = growing_cache(model.config)
    logits = None
    preempted = getattr(cancelled, "preempted", None)
    for segment in plan.segments:
        if segment.source is None:
            for start in range(segment.start, segment.end, ENCODE_CHUNK):
                if cancelled is not None and cancelled():
                    raise EncodingCancelled(cache, start, len(new_ids))
                chunk = Segment(start, min(start + ENCODE_CHUNK, segment.end))
                try:
                    with between_layers(model, preempted):
                        logits = _encode(model, cache, new_ids, chunk, device)
                except Preempted:
                    crop_to(cache, start)
                    raise EncodingCancelled(cache, start, len(new_ids)) from None
        else:
            if old is None:
                raise ValueError("a plan that reuses tokens needs the previous session")
            _reuse(cache, old.cache, segment, inv_freq)
    if logits is None:
        raise ValueError("a plan must encode at least the last token")
    return cache, logits


def _encode(model, cache: DynamicCache, ids: list[int], segment: Segment, device) -> torch.Tensor:
    inputs = torch.tensor([ids[segment.start : segment.end]], dtype=torch.long, device=device)
    positions = torch.arange(segment.start, segment.end, device=device)[None, :]
    out = model(input_ids=inputs, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits


def _reuse(cache: DynamicCache, old: DynamicCache, segment: Segment, inv_freq) -> None:
    shift = segment.shift
    if shift and inv_freq is None:
        raise ValueError("moving cached keys needs the model's rotary frequencies")
    span = slice(segment.source, segment.source + segment.length)
    for index, layer in enumerate(old.layers):
        keys = layer.keys[..., span, :]
        if shift:
            keys = rotate_keys(keys, shift, inv_freq)
        cache.update(keys, layer.values[..., span, :], index)


def kv_bytes_per_token(model) -> int:
    """Bytes one token's keys and values take in `model`'s cache (all layers)."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    element = torch.finfo(model.dtype).bits // 8
    return config.num_hidden_layers * 2 * heads * head_dim * element


class KvSessions:
    """Sessions by document key, least recently used evicted beyond a total token budget."""

    def __init__(self, max_total_tokens: int = 32_768):
        self.max_total_tokens = max_total_tokens
        self._sessions: OrderedDict[str, KvSession] = OrderedDict()

    def get(self, key: str) -> KvSession | None:
        session = self._sessions.get(key)
        if session is not None:
            self._sessions.move_to_end(key)
        return session

    def put(self, key: str, session: KvSession) -> None:
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > 1 and self.total_tokens > self.max_total_tokens:
            evicted, _ = self._sessions.popitem(last=False)
            logger.info("evicted the KV session of %s (token budget %d)", evicted, self.max_total_tokens)

    def peek(self, key: str) -> KvSession | None:
        """The session without touching the LRU order (safe to call from another thread)."""
        return self._sessions.get(key)

    def snapshot(self) -> list[KvSession]:
        """The sessions now, least recently used first (safe to read from another thread)."""
        return list(self._sessions.values())

    def drop(self, key: str) -> None:
        self._sessions.pop(key, None)

    @property
    def total_tokens(self) -> int:
        return sum(len(s) for s in self._sessions.values())

    def __contains__(self, key: str) -> bool:
        return key in self._sessions
