"""FIM completion: model loading, prompts, greedy decoding with stop rules."""

from .engine import CompletionEngine
from .engine_api import Engine
from .models import load_model
from .types import Completion, CompletionRequest, EngineSettings

__all__ = ["CompletionEngine", "Engine", "CompletionRequest", "Completion", "EngineSettings", "load_model"]
