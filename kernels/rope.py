"""Re-rotation of cached RoPE keys: move a key from position p to p + d without the model.

RoPE rotates each pair of key dimensions by the angle p * inv_freq[i], and rotations add:
R(p + d) = R(d) R(p). So a cached (post-RoPE) key moves by `d` positions with one more
rotation by d; values carry no position and stay as they are. The cos/sin here carry no
magnitude factor: YaRN's attention scaling is already inside the cached key and must not be
applied twice. Layout is HF's `rotate_half` (first half / second half of the rotary dims);
only the first 2 * len(inv_freq) dims rotate (partial rotary models keep the rest).
"""

from __future__ import annotations

import torch


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate_keys(keys: torch.Tensor, deltas: torch.Tensor | int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Return `keys` ([..., tokens, head_dim]) moved by `deltas` positions (an int, or one
    per token). Computed in fp32, returned in the keys' dtype. Torch reference and CPU path."""
    if keys.dim() < 2:
        raise ValueError(f"keys must be [..., tokens, head_dim], got shape {tuple(keys.shape)}")
    rotary = 2 * inv_freq.numel()
    if rotary > keys.shape[-1]:
        raise ValueError(f"{rotary} rotary dims exceed head_dim {keys.shape[-1]}")
    tokens = keys.shape[-2]
    delta = torch.as_tensor(deltas, device=keys.device, dtype=torch.float32)
    delta = delta.expand(tokens) if delta.dim() == 0 else delta
    if delta.shape != (tokens,):
        raise ValueError(f"need one delta per token ({tokens}), got shape {tuple(delta.shape)}")
    angles = delta[:, None] * inv_freq.to(device=keys.device, dtype=torch.float32)[None, :]
    cos, sin = angles.cos(), angles.sin()
    cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    k = keys.float()
    moved = k[..., :rotary] * cos + _rotate_half(k[..., :rotary]) * sin
    if rotary < keys.shape[-1]:
        moved = torch.cat((moved, k[..., rotary:]), dim=-1)
    return moved.to(keys.dtype)
