"""The model the settings name: loaded off the event loop with $/progress, replaced when the
settings name another, waited for by requests made while it loads (an event, no polling).
The engine itself runs on the engine host (scheduler.py); this module only decides which
engine that is."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable

from completion import Engine
from completion.model_choice import AUTO
from completion.open_engine import open_engine
from completion.summarize import Summarizer

from .client import ClientChannel
from .settings import ServerSettings

logger = logging.getLogger(__name__)


class ModelHost:
    def __init__(self, client: ClientChannel, on_ready: Callable[[Engine], None]):
        self.client = client
        self.on_ready = on_ready  # called on the event loop once a load has made its engine current
        self.engine: Engine | None = None
        self.status = "not loaded"  # loading | ready | failed
        self._loaded_key: tuple[str, ...] | None = None
        self._load_lock = threading.Lock()
        self._settled = asyncio.Event()  # set whenever no load is under way
        self._summarizer: Summarizer | None = None

    async def current(self) -> Engine | None:
        """The engine to answer with. While the first model loads, a request waits for it: the
        cursor gets its suggestion once the model is ready (None if that load fails)."""
        while self.engine is None and self.status == "loading":
            await self._settled.wait()
        return self.engine

    async def ensure(self, settings: ServerSettings) -> None:
        """Load (or reload) the model `settings` name, unless it is loaded or loading."""
        if self._loaded_key == settings.model_key and self.status in ("ready", "loading"):
            return
        self._loaded_key = settings.model_key
        self.status = "loading"
        self._settled.clear()
        what = (("the default model" if settings.model == AUTO else settings.model) if settings.engine == "local"
                else f"the engine at {settings.engine}")
        progress = await self.client.progress(f"Loading {what}")
        start = time.perf_counter()
        try:
            engine = await asyncio.get_running_loop().run_in_executor(None, self._open, settings)
        except Exception as error:  # a bad model name must not take the server down
            if self._loaded_key == settings.model_key:
                self.status = "failed"
                self._settled.set()
            failed = f"model {settings.model!r}" if settings.engine == "local" else what
            self.client.tell(logging.ERROR, f"codeassist: cannot load {failed}: {error}")
            progress.end("failed")
            return
        if self._loaded_key != settings.model_key:
            # Settings changed while loading; the newer load owns the status.
            progress.end(f"{what}: replaced by a newer model setting")
            return
        self.engine = engine
        # The model, tokenizer and vocabulary are ~540k long-lived objects: a full garbage
        # collection scanning them paused a request for ~175 ms every few completions. Frozen
        # only now that a previous engine is dropped, so that its objects are collected
        # instead of frozen with the new ones.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.status = "ready"
        self._settled.set()
        self.on_ready(engine)
        loaded = getattr(engine, "loaded", None)
        where = f"{loaded.device} ({loaded.dtype_name})" if loaded else "a remote engine"
        name = loaded.name if loaded else what  # "auto" resolved: the model that runs
        self.client.tell(logging.INFO, f"codeassist: {name} ready on {where} in {time.perf_counter() - start:.1f} s")
        progress.end("ready")

    def _open(self, settings: ServerSettings) -> Engine:
        with self._load_lock:
            api_key = None
            if settings.engine != "local" and settings.engine_api_key_env:
                api_key = os.environ.get(settings.engine_api_key_env)
            return open_engine(settings.engine_settings(), model=settings.model, device=settings.device,
                               dtype=settings.dtype, draft_model=settings.draft_model, engine=settings.engine,
                               engine_model=settings.engine_model, api_key=api_key)

    def summarizer(self) -> Summarizer | None:
        """The summarizer of the loaded model; None while none is loaded."""
        loaded = getattr(self.engine, "loaded", None)  # a remote engine has no local model
        if loaded is None:
            return None
        if self._summarizer is None or self._summarizer.loaded is not loaded:
            self._summarizer = Summarizer(loaded)
        return self._summarizer
