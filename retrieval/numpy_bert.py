"""Query vectors of a BERT sentence encoder (mean pooling, then L2 normalisation: the shape
of the default all-MiniLM-L6-v2) computed in numpy. A query is a few tokens, so this takes
milliseconds, and it spares a process that only searches the imports of torch,
transformers and sentence-transformers (~10 s here): `codeassist search` without a server.
The vectors equal sentence-transformers' up to float rounding (tests/test_numpy_bert.py);
documents are still encoded by sentence-transformers (retrieval/encoder.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_MODULES = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize"]


class NumpyBertEncoder:
    def __init__(self, folder: Path, config: dict, max_tokens: int):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.weights = load_file(str(folder / "model.safetensors"))
        self.heads, self.layers = config["num_attention_heads"], config["num_hidden_layers"]
        self.eps = config["layer_norm_eps"]
        self.dim = config["hidden_size"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)

    @classmethod
    def load(cls, folder: str | Path) -> NumpyBertEncoder | None:
        """The encoder of `folder`, or None (logged at debug) where its model is not a plain
        BERT with mean pooling and normalisation, or lacks the files this reads."""
        folder = Path(folder)
        try:
            modules = [m["type"] for m in json.loads((folder / "modules.json").read_text())]
            config = json.loads((folder / "config.json").read_text())
            pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
            st_config = json.loads((folder / "sentence_bert_config.json").read_text())
            prompts = json.loads((folder / "config_sentence_transformers.json").read_text()).get("prompts")
            if (modules != _MODULES or config.get("model_type") != "bert" or config.get("hidden_act") != "gelu"
                    or config.get("position_embedding_type", "absolute") != "absolute" or prompts
                    or [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
                    != ["pooling_mode_mean_tokens"]
                    or not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file()):
                logger.debug("%s is not a plain mean-pooled BERT: queries go through sentence-transformers", folder)
                return None
            return cls(folder, config, int(st_config.get("max_seq_length") or 512))
        except Exception as error:  # unreadable or damaged files: sentence-transformers says what is wrong
            logger.info("no numpy query encoder for %s: %s", folder, error)
            return None

    def encode_query(self, query: str) -> np.ndarray:
        """The L2-normalised float32 vector of `query`."""
        encoding = self.tokenizer.encode(query)
        ids, types = np.array(encoding.ids), np.array(encoding.type_ids)
        w = self.weights
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:len(ids)]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = self._norm(x, "embeddings.LayerNorm")
        for layer in range(self.layers):
            x = self._layer(x, f"encoder.layer.{layer}.")
        pooled = x.mean(axis=0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)

    def _layer(self, x: np.ndarray, prefix: str) -> np.ndarray:
        tokens, head_dim = x.shape[0], self.dim // self.heads

        def heads(name: str) -> np.ndarray:  # (heads, tokens, head_dim)
            return self._linear(x, f"{prefix}attention.self.{name}").reshape(tokens, self.heads, head_dim).swapaxes(0, 1)

        scores = heads("query") @ heads("key").swapaxes(1, 2) / np.float32(np.sqrt(head_dim))
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attended = (scores / scores.sum(axis=-1, keepdims=True)) @ heads("value")
        attended = attended.swapaxes(0, 1).reshape(tokens, self.dim)
        x = self._norm(self._linear(attended, f"{prefix}attention.output.dense") + x, f"{prefix}attention.output.LayerNorm")
        inner = _gelu(self._linear(x, f"{prefix}intermediate.dense"))
        return self._norm(self._linear(inner, f"{prefix}output.dense") + x, f"{prefix}output.LayerNorm")

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.weights[f"{name}.weight"].T + self.weights[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(variance + self.eps) * self.weights[f"{name}.weight"] + self.weights[f"{name}.bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), with erf from Abramowitz and Stegun 7.1.26 in float64
    (error below 1.5e-7: float32's own rounding)."""
    z = x.astype(np.float64) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * np.abs(z))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(z) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(np.float32)
