"""Build the engine a user's options name: the model in this process (with an optional draft
model) or a remote engine. The one path the server and the CLI both take."""

from __future__ import annotations

from .engine_api import Engine
from .types import EngineSettings


def open_engine(settings: EngineSettings, *, model: str, device: str = "auto", dtype: str = "auto",
                draft_model: str = "", engine: str = "local", engine_model: str = "",
                api_key: str | None = None) -> Engine:
    """`engine` "local": `model` loaded here (`draft_model` drafting for it when named);
    otherwise the OpenAI-compatible engine at that URL, `engine_model` its model's name."""
    if engine != "local":
        from .remote_engine import open_remote_engine

        return open_remote_engine(engine, engine_model, api_key, settings)
    from .engine import CompletionEngine
    from .models import load_model

    loaded = load_model(model, device=device, dtype=dtype)
    draft = load_model(draft_model, device=device, dtype=dtype) if draft_model else None
    return CompletionEngine(loaded, settings, draft=draft)
