"""Words for BM25 and name matching: identifiers split at snake_case and camelCase, lowercased,
English stopwords dropped, stemmed (Snowball, when PyStemmer is installed)."""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from bm25s.stopwords import STOPWORDS_EN

logger = logging.getLogger(__name__)
# bm25s sets its own logger to DEBUG when imported, which floods stderr with build messages.
logging.getLogger("bm25s").setLevel(logging.WARNING)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
# Parts of an identifier: "HTTPServer2Handler" -> HTTP, Server, 2, Handler
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# Words that say nothing about what code does, in prose and in code.
_STOPWORDS = frozenset(STOPWORDS_EN) | {"self", "cls", "def", "return", "returns", "none", "null",
                                        "true", "false", "this", "the", "var", "let", "const"}


@lru_cache(maxsize=1)
def _stemmer():
    try:
        import Stemmer
    except ImportError:
        logger.info("PyStemmer is not installed: BM25 words are not stemmed")
        return None
    return Stemmer.Stemmer("english")


def split_identifier(identifier: str) -> list[str]:
    """Lowercase parts of one identifier: "parseHTTPHeader_v2" -> parse, http, header, v, 2."""
    return [part.lower() for piece in identifier.split("_") for part in _PART.findall(piece)]


def words(text: str) -> list[str]:
    """BM25 terms of `text`: each identifier's parts (and the whole identifier when it has
    several), without stopwords and one-letter words, stemmed."""
    terms: list[str] = []
    for identifier in _IDENTIFIER.findall(text):
        parts = split_identifier(identifier)
        if len(parts) > 1:
            terms.append("".join(parts))
        terms.extend(parts)
    terms = [t for t in terms if len(t) > 1 and t not in _STOPWORDS]
    stemmer = _stemmer()
    return stemmer.stemWords(terms) if stemmer is not None else terms
