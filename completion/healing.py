"""Token healing: the prompt ends at a token boundary the model would have chosen.

A cursor rarely sits where the tokenizer would cut: after an indentation the prompt ends in
8 spaces, while code is tokenized as 7 spaces + " return"; mid-word it ends in ".ret" where
the model knows ".return_value". Prompts ending like that get odd completions. So the prompt
is backed up over its last token, and decoding is constrained until it has rewritten exactly
the characters that were taken away (the same text, possibly in other, longer tokens, split
only where the tokenizer itself would split it: see `allowed_prefixes`).

When the user typed into the previous suggestion, its own tokens are better still: the
suggestion's prompt is kept and the tokens the model generated for the typed text follow the
middle marker, exactly the model's context at that point of the suggestion (only a typed part
of a token is healed). Greedy decoding goes on as it did before, and the KV cache of that
prompt is reused as a pure append.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch

Decode = Callable[[Sequence[int]], str]
Encode = Callable[[Sequence[str]], list[list[int]]]  # a batch of texts -> their token ids
_BUILT: dict[tuple[str, int], "Vocabulary"] = {}  # of the few tokenizers in use


def _token_texts(tokenizer) -> list[str]:
    """The text of every token id. The Rust backend decodes the batch ~13x faster than
    transformers' per-item `batch_decode` (0.14 s against 1.9 s for 152k tokens), with the
    same texts."""
    ids = [[i] for i in range(len(tokenizer))]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.decode_batch(ids, skip_special_tokens=False)
    return tokenizer.batch_decode(ids, clean_up_tokenization_spaces=False)


class Vocabulary:
    """Token texts, searchable by text prefix (built once per tokenizer: ~1.5 s for 152k)."""

    def __init__(self, texts: Sequence[str]):
        # Byte fragments of multi-byte characters decode to U+FFFD: they never match text.
        pairs = sorted((text, i) for i, text in enumerate(texts) if text and "\ufffd" not in text)
        self._texts = [text for text, _ in pairs]
        self._ids = [i for _, i in pairs]
        self._by_text: dict[str, list[int]] = {}
        for text, i in pairs:
            self._by_text.setdefault(text, []).append(i)

    @classmethod
    def of(cls, tokenizer) -> Vocabulary:
        """The tokenizer's vocabulary, built once per tokenizer (its files and size)."""
        key = (str(getattr(tokenizer, "name_or_path", id(tokenizer))), len(tokenizer))
        if key not in _BUILT:
            if len(_BUILT) >= 4:
                _BUILT.pop(next(iter(_BUILT)))
            _BUILT[key] = cls(_token_texts(tokenizer))
        return _BUILT[key]


    def allowed(self, pending: str, prefixes: Collection[str] | None = None) -> list[int]:
        """Ids of tokens that may come next while `pending` is still to be written: tokens that
        start with all of it, and tokens that are a first part of it (of those, only the ones
        in `prefixes` when given)."""
        start = bisect.bisect_left(self._texts, pending)
        end = start
        while end < len(self._texts) and self._texts[end].startswith(pending):
            end += 1
        ids = self._ids[start:end]
        if not pending.strip():
            # Indentation then a line end is a blank line's trailing spaces, not code: the
            # model, seeing the indentation as one token, would often choose it and leave
            # the cursor's line empty.
            ids = [i for i, text in zip(ids, self._texts[start:end]) if not text[len(pending):].startswith(("\n", "\r"))]
        for cut in range(1, len(pending)):
            if prefixes is None or pending[:cut] in prefixes:
                ids += self._by_text.get(pending[:cut], [])
        return ids


# Text that often follows the healed characters in code (see `allowed_prefixes`).
_PROBES = ("a", " a", "A", "_", "0", "(", ")", ".", ",", ":", " =", "\n", "#", "'", '"')


def allowed_prefixes(pending: str, encode: Encode, decode: Decode) -> set[str]:
    """The first parts of `pending` that may be written as a token of their own: those the
    tokenizer itself starts `pending` + common code with, and any cut before a word character
    (merges inside a word depend on how it goes on: ".ret" may become "." + "return").
    Without this rule 28 spaces of indentation could be rewritten as 15 + 1 + 1 + ... spaces,
    a split the model never saw, after which it went on writing spaces."""
    firsts = {ids[0] for ids in encode([pending + probe for probe in _PROBES]) if ids}
    allowed = {text for text in (decode([i]) for i in firsts)
               if text and len(text) < len(pending) and pending.startswith(text)}
    allowed.update(pending[:cut] for cut in range(1, len(pending))
                   if pending[cut].isalnum() or pending[cut] == "_")
    return allowed


@dataclass
class Healing:
    """The text decoding must write first (`text`), taken from the prompt's end."""

    text: str
    vocabulary: Vocabulary
    decode: Decode
    encode: Encode | None = None  # given: only the tokenizer's own ways to split the text
    done: bool = False  # the healed text is written: no more decoding per step

    def pending(self, generated: Sequence[int]) -> str | None:
        """What is left to rewrite after `generated`; None once the healed text is written."""
        if not self.done:
            written = self.decode(generated)
            self.done = len(written) >= len(self.text)
        return None if self.done else self.text[len(written):]

    def choose(self, logits: torch.Tensor, generated: Sequence[int]) -> int:
        """The greedy token at this step, among the tokens that keep the healed text."""
        pending = self.pending(generated)
        if pending is None:
            return int(logits.argmax())
        prefixes = allowed_prefixes(pending, self.encode, self.decode) if self.encode else None
        allowed = self.vocabulary.allowed(pending, prefixes)
        if not allowed:  # cannot happen for text that came from tokens; stay safe
            return int(logits.argmax())
        index = torch.tensor(allowed, device=logits.device)
        return allowed[int(logits.index_select(-1, index).argmax())]

    def strip(self, text: str) -> str:
        """The suggestion: the decoded text without the healed part."""
        return text[len(self.text):] if text.startswith(self.text) else ""


@dataclass(frozen=True)
class TypedSuggestion:
    """The previous suggestion's tokens, split at what the user typed into it."""

    tokens: list[int]  # the suggestion's tokens whose text the user typed whole
    rest: list[int]  # the suggestion's tokens after those (a draft)
    leftover: str  # typed characters inside the next token: to be healed


def align_typed(head: str, ids: Sequence[int], before: str, decode: Decode) -> TypedSuggestion | None:
    """Split the previous suggestion's token `ids` (generated after the prefix text `head`) at
    the cursor, now after `before`; None when what was typed is not the suggestion's start."""
    if not ids or not before.startswith(head):
        return None
    typed = before[len(head):]
    if not decode(ids).startswith(typed):
        return None
    count = 0
    while count < len(ids) and len(decode(ids[: count + 1])) <= len(typed):
        count += 1
    while count and not typed.startswith(decode(ids[:count])):
        count -= 1  # a token ending inside a multi-byte character: its text is not typed yet
    written = decode(ids[:count])
    return TypedSuggestion(list(ids[:count]), list(ids[count:]), typed[len(written):])
