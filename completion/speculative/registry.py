"""Draft sources by name: each registered with a factory that builds its sources for one
request from what the request knows. The settings' `draft_sources` picks among them."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .sources import DraftSource

if TYPE_CHECKING:
    from ..types import EngineSettings


@dataclass(frozen=True)
class DraftRequest:
    """What a draft source may use of the request it drafts for."""

    key: str | None  # the document (a draft model keeps a KV session per document)
    prompt_ids: list[int]
    recycled: str  # text to propose again: the rest of the last suggestion ("" when none)
    recycled_ids: list[int] | None  # the same as the model's own tokens, when aligned
    settings: EngineSettings


SourceFactory = Callable[[DraftRequest], list[DraftSource]]


class DraftSourceRegistry:
    """Named source factories, in the order their sources are tried (cheapest first)."""

    def __init__(self):
        self._factories: dict[str, SourceFactory] = {}

    def register(self, name: str, factory: SourceFactory) -> None:
        if name in self._factories:
            raise ValueError(f"draft source {name!r} is registered twice")
        self._factories[name] = factory

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def build(self, wanted: Collection[str], request: DraftRequest) -> list[DraftSource]:
        unknown = set(wanted) - set(self._factories)
        if unknown:
            raise ValueError(f"unknown draft sources {sorted(unknown)}; registered: {', '.join(self._factories)}")
        return [source for name, factory in self._factories.items() if name in wanted
                for source in factory(request)]
