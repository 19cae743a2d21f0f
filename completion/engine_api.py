"""What the server needs of a completion engine: the model in this process (engine.py) or
a shared inference engine reached over HTTP (remote_engine.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .types import Completion, CompletionRequest, EngineSettings


class Engine(Protocol):
    settings: EngineSettings  # the default for a request that brings none
    learns_from_files: bool  # whether open files feed its n-gram cache (`encode`, `remember_tokens`)

    def complete(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None,
                 session_key: str | None = None, settings: EngineSettings | None = None,
                 alternatives: int = 0) -> Completion:
        """The suggestion at the request's cursor, and up to `alternatives` others where the
        engine can make them."""

    def warm(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None,
             session_key: str | None = None, settings: EngineSettings | None = None) -> dict:
        """Encode the prompt of `request` ahead of the key that will need it (no decoding)."""

    def grow(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None,
             session_key: str | None = None, settings: EngineSettings | None = None) -> dict:
        """Encode the whole prompt of a place answered from its first window, leaving the
        window's session to the keys typed meanwhile until it is finished."""

    def forget(self, session_key: str) -> None:
        """Free what is kept for a closed document."""

    def needs_refresh(self, session_key: str) -> bool: ...

    def refresh(self, session_key: str, cancelled: Callable[[], bool]) -> bool: ...

    def status(self) -> dict:
        """JSON-ready facts for the server's status command."""
