"""Completions from a shared inference engine over the OpenAI-compatible `/v1/completions`
API (vLLM, llama.cpp's llama-server, ...): the FIM prompt is built here (text_prompt.py),
the engine streams tokens, and the stop rules run on the stream.

The stream is closed as soon as the stop rules end the suggestion, the request is cancelled
or superseded, or the time budget is spent: the engine notices the closed connection and
stops generating. A connection failure is retried with backoff; while the engine is down
requests get an empty answer at once and the engine is tried again after a pause that grows.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from .stops import check_text, decide_policy, finalize
from .suggestion_memory import SuggestionMemory
from .text_prompt import TextPrompter, family_of
from .types import Completion, CompletionRequest, EngineSettings

logger = logging.getLogger(__name__)

_RETRY_DELAYS_S = (0.25, 1.0)  # between the attempts of one request
_DOWN_PAUSE_S = (2.0, 30.0)  # after a failed request: first pause, longest pause
_LATENCIES_KEPT = 64


class EngineUnavailable(RuntimeError):
    """The engine cannot be reached or refused the request."""


class _Resting(EngineUnavailable):
    """The engine failed recently: not tried again before its pause ends."""


@dataclass(frozen=True)
class RemoteConfig:
    url: str  # the engine's base URL: http(s)://host:port, optionally ending in /v1
    model: str = ""  # the served model's name ("" lets the engine use its default)
    api_key: str | None = None  # sent as a bearer token; never logged
    timeout_s: float = 30.0  # to connect, and between two streamed chunks

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"engine URL must be http(s)://host[:port], got {self.url!r}")
        if self.api_key and parts.scheme == "http" and not _is_loopback(parts.hostname):
            # Anyone on the path would read the key: only https leaves this machine with it.
            raise ValueError(f"refusing to send the engine's API key over plain http to {parts.hostname}; "
                             "use an https:// URL")

    @property
    def base_path(self) -> str:
        path = urlsplit(self.url).path.rstrip("/")
        return path if path.endswith("/v1") else path + "/v1"

    def connection(self, timeout_s: float) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname, parts.port, timeout=timeout_s)

    def headers(self, **extra: str) -> dict[str, str]:
        return {**extra, **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RemoteEngine:
    """A completion engine whose model runs in another process, maybe on another machine."""

    learns_from_files = False  # no n-gram cache: the engine drafts (or not) on its side

    def __init__(self, config: RemoteConfig, prompter: TextPrompter,
                 settings: EngineSettings = EngineSettings()):
        self.config = config
        self.prompter = prompter
        self.settings = settings  # replaced as a whole; each request reads it once
        self.name = config.model or config.url
        self.memory = SuggestionMemory()  # the last suggestion per document, for recycling
        self._lock = threading.Lock()
        self._state = "unknown"  # up | down | unknown
        self._last_error = ""
        self._down_until = 0.0
        self._down_pause = _DOWN_PAUSE_S[0]
        self._counts = {"requests": 0, "errors": 0, "cancelled": 0, "promptTokens": 0, "cachedTokens": 0}
        self._first_token_ms: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self.served_model = ""  # as the engine names it in its answers

    # --- the engine interface -----------------------------------------------------------
    def complete(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None,
                 session_key: str | None = None, settings: EngineSettings | None = None,
                 alternatives: int = 0) -> Completion:
        settings = settings or self.settings  # (alternatives: one suggestion per request here)
        start = time.perf_counter()
        policy = decide_policy(request.text, request.cursor, request.language, settings.max_lines)
        recall = self.memory.recall(session_key, request)
        if recall.rest and settings.recycle_direct and "recycle" in settings.draft_sources:
            # Typed into the last suggestion: its rest, under the stop rules of the new position.
            direct = finalize(check_text(recall.rest, policy).text, policy)
            if direct:
                self.memory.keep_rest(session_key, request, recall)
                return Completion(text=direct, tokens=0, prompt_tokens=0,
                                  prompt_ms=(time.perf_counter() - start) * 1000, decode_ms=0.0,
                                  stop_reason="recycled", model=self.served_model or self.name,
                                  multiline="\n" in direct)
        prompt = self.prompter.build(request, settings)
        stream = _Stream()
        try:
            text, reason = self._generate(prompt.text, prompt.stops, policy, settings, start,
                                          cancelled or (lambda: False), stream)
        except _Resting:
            with self._lock:
                self._counts["requests"] += 1
                self._counts["errors"] += 1
            return self._answer("", "engine_down", prompt.tokens, start, stream, policy.multiline)
        except EngineUnavailable as error:
            self._failed(str(error))
            return self._answer("", "engine_down", prompt.tokens, start, stream, policy.multiline)
        self._succeeded(stream, reason)
        final = finalize(text, policy, reason) if reason != "cancelled" else ""
        self.memory.remember(session_key, request, recall, final, "", None, [])
        logger.info("complete %s via %s: prompt %d %s (engine cached %s), %d chunks, first after "
                    "%.0f ms, stop=%s", request.path or "<buffer>", self.config.url, prompt.tokens,
                    "tokens" if self.prompter.tokenizer is not None else "characters",
                    stream.cached_tokens, stream.chunks, stream.first_ms or 0.0, reason)
        return self._answer(final, reason, prompt.tokens, start, stream, policy.multiline)

    def forget(self, session_key: str) -> None:
        self.memory.forget(session_key)  # the engine's prefix cache is its own

    def needs_refresh(self, session_key: str) -> bool:
        return False

    def warm(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None,
             session_key: str | None = None, settings: EngineSettings | None = None) -> dict:
        return {"finished": False}  # the engine's prompt cache fills with the first request

    def grow(self, request: CompletionRequest, cancelled: Callable[[], bool] | None = None,
             session_key: str | None = None, settings: EngineSettings | None = None) -> dict:
        return {"finished": False}  # no first window here: the engine's prompt cache has it all

    def refresh(self, session_key: str, cancelled: Callable[[], bool] = lambda: False) -> bool:
        return False

    def status(self) -> dict:
        with self._lock:
            latencies = sorted(self._first_token_ms)
            counts = dict(self._counts)
            state, error = self._state, self._last_error
        prompt_tokens = counts.pop("promptTokens")
        cached = counts.pop("cachedTokens")
        return {"engine": {
            "url": self.config.url, "model": self.served_model or self.config.model or None,
            "state": state, "lastError": error or None, **counts,
            "firstTokenMs": {"p50": _percentile(latencies, 0.5), "p95": _percentile(latencies, 0.95)},
            "promptCachedShare": round(cached / prompt_tokens, 3) if prompt_tokens else None,
            "budgetUnit": self.prompter.budget_unit,
        }, "device": None, "dtype": None}

    # --- one request ---------------------------------------------------------------------
    def _generate(self, prompt: str, stops: tuple[str, ...], policy, settings: EngineSettings,
                  start: float, cancelled: Callable[[], bool], stream: _Stream) -> tuple[str, str]:
        """Stream a completion of `prompt`; (the text so far as the stop rules cut it, why it
        ended). Raises EngineUnavailable when the engine cannot be used."""
        if self._state == "down" and time.monotonic() < self._down_until:
            raise _Resting(f"engine down, next try in {self._down_until - time.monotonic():.1f} s: "
                                    f"{self._last_error}")
        body = {"prompt": prompt, "max_tokens": settings.max_new_tokens, "temperature": 0.0,
                "stream": True, "stop": list(stops),
                # Usage in every chunk (a stream closed early never sees the last one): vLLM's
                # continuous usage stats, llama-server's timings per token. llama-server keeps
                # the prompt's KV cache for the next request (cache_prompt). Engines ignore
                # the fields of others.
                "stream_options": {"include_usage": True, "continuous_usage_stats": True},
                "timings_per_token": True, "cache_prompt": True}
        if self.config.model:
            body["model"] = self.config.model
        written, decoding_since = "", None
        chunks = self._chunks(body, start, cancelled, stream)
        try:
            for piece in chunks:
                written += piece
                decoding_since = decoding_since or time.perf_counter()  # the prompt is encoded
                check = check_text(written, policy)
                if check.stop:
                    return check.text, check.reason
                if cancelled():
                    return check.text, "cancelled"
                if stream.chunks >= settings.max_new_tokens:
                    return check.text, "max_tokens"
                if settings.out_of_time(check.text, (time.perf_counter() - decoding_since) * 1000):
                    return check.text, "time_budget"
        finally:
            chunks.close()  # closes the connection: the engine stops generating
        return check_text(written, policy).text, stream.finish_reason or "eos"

    def _chunks(self, body: dict, start: float, cancelled: Callable[[], bool],
                stream: _Stream) -> Iterator[str]:
        """The streamed text pieces; the connection is closed when the caller stops reading."""
        connection = self._connect(body, cancelled)
        try:
            response = connection.getresponse()
            if response.status != 200:
                detail = response.read(500).decode("utf-8", "replace")
                raise EngineUnavailable(f"HTTP {response.status}: {detail.strip()}")
            for event in _events(response):
                choices = event.get("choices") or []
                self._note_usage(event, stream)
                for choice in choices:
                    piece = choice.get("text") or ""
                    stream.finish_reason = choice.get("finish_reason") or stream.finish_reason
                    if piece:
                        stream.chunks += 1
                        if stream.first_ms is None:
                            stream.first_ms = (time.perf_counter() - start) * 1000
                        yield piece
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise EngineUnavailable(f"{type(error).__name__}: {error}") from error
        finally:
            connection.close()

    def _connect(self, body: dict, cancelled: Callable[[], bool]) -> http.client.HTTPConnection:
        """A connection with the request sent, retried with backoff while it fails."""
        headers = self.config.headers(**{"Content-Type": "application/json", "Accept": "text/event-stream"})
        payload = json.dumps(body).encode()
        for attempt, delay in enumerate((*_RETRY_DELAYS_S, None)):
            connection = self.config.connection(self.config.timeout_s)
            try:
                connection.request("POST", f"{self.config.base_path}/completions", payload, headers)
                return connection
            except OSError as error:
                connection.close()
                if delay is None or cancelled():
                    raise EngineUnavailable(f"cannot reach {self.config.url}: {error}") from error
                logger.info("engine %s: attempt %d failed (%s); retrying in %.2f s", self.config.url,
                            attempt + 1, error, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _note_usage(self, event: dict, stream: _Stream) -> None:
        """Prompt tokens and how many the engine had cached, from the last event."""
        self.served_model = event.get("model") or self.served_model
        usage = event.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        timings = event.get("timings") or {}
        if usage.get("prompt_tokens") is not None:
            stream.prompt_tokens = int(usage["prompt_tokens"])
            if details.get("cached_tokens") is not None:
                stream.cached_tokens = int(details["cached_tokens"])
        elif "cache_n" in timings and "prompt_n" in timings:  # llama-server: cached + evaluated
            stream.cached_tokens = int(timings["cache_n"])
            stream.prompt_tokens = stream.cached_tokens + int(timings["prompt_n"])

    # --- bookkeeping ---------------------------------------------------------------------
    def _answer(self, text: str, reason: str, prompt_units: int, start: float, stream: _Stream,
                multiline: bool) -> Completion:
        elapsed = (time.perf_counter() - start) * 1000
        first = stream.first_ms if stream.first_ms is not None else elapsed
        return Completion(text=text, tokens=stream.chunks, prompt_tokens=stream.prompt_tokens or prompt_units,
                          prompt_ms=first, decode_ms=elapsed - first, stop_reason=reason,
                          model=self.served_model or self.name, multiline=multiline,
                          kv={"mode": "remote", "cached": stream.cached_tokens})

    def _succeeded(self, stream: _Stream, reason: str) -> None:
        with self._lock:
            self._counts["cancelled"] += reason == "cancelled"
            if self._state != "up":
                logger.info("engine %s is up (%s)", self.config.url, self.served_model or "model unnamed")
            self._state, self._down_pause = "up", _DOWN_PAUSE_S[0]
            self._counts["requests"] += 1
            self._counts["promptTokens"] += stream.prompt_tokens or 0
            self._counts["cachedTokens"] += stream.cached_tokens or 0
            if stream.first_ms is not None:
                self._first_token_ms.append(stream.first_ms)

    def _failed(self, error: str) -> None:
        with self._lock:
            if self._state != "down" or error != self._last_error:
                logger.warning("engine %s unavailable: %s", self.config.url, error)
            self._counts["requests"] += 1
            self._counts["errors"] += 1
            self._last_error = error
            if self._state == "down":
                self._down_pause = min(self._down_pause * 2, _DOWN_PAUSE_S[1])
            self._state = "down"
            self._down_until = time.monotonic() + self._down_pause


@dataclass
class _Stream:
    """What one streamed answer told us."""

    chunks: int = 0
    first_ms: float | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None


def _events(response: http.client.HTTPResponse) -> Iterator[dict]:
    """The JSON events of a server-sent event stream, until `[DONE]`."""
    while True:
        line = response.readline()
        if not line:
            return
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        event = json.loads(data)
        if isinstance(event, dict) and "error" in event:
            raise EngineUnavailable(f"engine error: {event['error']}")
        if isinstance(event, dict):
            yield event


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    return round(values[min(int(share * len(values)), len(values) - 1)], 1)


def open_remote_engine(url: str, model: str = "", api_key: str | None = None,
                       settings: EngineSettings = EngineSettings()) -> RemoteEngine:
    """A remote engine with prompts for the served model's family: the tokenizer of the
    embedded model where the family matches it, else character budgets."""
    from .embedded import DEFAULT_MODEL, EMBEDDED_MODELS, is_installed
    from .models import load_tokenizer

    config = RemoteConfig(url, model, api_key)
    name = model or _served_model(config)
    family = family_of(name) if name else None
    if family is None:
        family = family_of(DEFAULT_MODEL)
        logger.warning("engine %s: model %r of unknown FIM family; using %s's template", url,
                       name or "(engine unreachable, engineModel not set)", family)
    tokenizer = None
    if family == family_of(DEFAULT_MODEL) and is_installed(EMBEDDED_MODELS[DEFAULT_MODEL]):
        tokenizer = load_tokenizer(DEFAULT_MODEL)
    engine = RemoteEngine(config, TextPrompter(family, tokenizer), settings)
    engine.served_model = name
    return engine


def _served_model(config: RemoteConfig) -> str:
    """The first model the engine lists (GET /v1/models); "" when it cannot be asked."""
    connection = config.connection(5.0)
    try:
        connection.request("GET", f"{config.base_path}/models", headers=config.headers())
        response = connection.getresponse()
        listed = json.loads(response.read()) if response.status == 200 else {}
        return str((listed.get("data") or [{}])[0].get("id") or "")
    except (OSError, http.client.HTTPException, ValueError, AttributeError) as error:
        logger.info("engine %s: cannot list its models: %s", config.url, error)
        return ""
    finally:
        connection.close()
