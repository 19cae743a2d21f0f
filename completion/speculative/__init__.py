"""Speculative decoding, lossless under greedy: draft sources, draft trees, one verifier."""

from .decoding import greedy_decode
from .drafter import AcceptanceStats, Drafter, ForwardCost
from .sources import SOURCES

__all__ = ["greedy_decode", "Drafter", "AcceptanceStats", "ForwardCost", "SOURCES"]
