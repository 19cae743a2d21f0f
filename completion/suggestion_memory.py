"""The last suggestion of each document, and what the user did with it since: typed its
first characters (its rest can be answered again, or drafted), or typed into it so that
the prompt can end with the model's own tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .healing import TypedSuggestion, align_typed
from .prompt import FimPrompt
from .types import CompletionRequest


@dataclass(frozen=True)
class Suggestion:
    """A suggestion shown for a document, with the text around the cursor then."""

    before: str
    after: str
    text: str
    head: str  # the prefix text `prompt` encodes (healed characters excluded)
    prompt: FimPrompt  # what `ids` were generated from
    ids: list[int]  # the token stream after `head`


@dataclass(frozen=True)
class Recall:
    """What the last suggestion of a document is worth for a new request."""

    last: Suggestion | None
    rest: str  # the rest after the characters typed into it; "" when it does not apply
    typed: TypedSuggestion | None  # its tokens split at the cursor (token healing on)


class SuggestionMemory:
    """The last suggestion per document key."""

    def __init__(self):
        self._last: dict[str, Suggestion] = {}

    def recall(self, key: str | None, request: CompletionRequest) -> Recall:
        """The document's last suggestion seen from `request` (`typed` not aligned yet)."""
        last = self._last.get(key) if key is not None else None
        if last is None:
            return Recall(None, "", None)
        return Recall(last, _rest_of(last, request.text[: request.cursor], request.text[request.cursor :]), None)

    @staticmethod
    def align(recall: Recall, request: CompletionRequest, decode: Callable[[Sequence[int]], str]) -> Recall:
        """`recall` with the suggestion's tokens split at the cursor, if the user typed into
        it and changed nothing else (token decoding: only when the model will run)."""
        last = recall.last
        if last is None or request.text[request.cursor :] != last.after:
            return recall
        return replace(recall, typed=align_typed(last.head, last.ids, request.text[: request.cursor], decode))

    def keep_rest(self, key: str, request: CompletionRequest, recall: Recall) -> None:
        """After answering the rest of the last suggestion without the model: the same token
        stream still describes the text after its head; remember all of the rest (the answer
        may be its first line only)."""
        last = recall.last
        self._last[key] = Suggestion(request.text[: request.cursor], request.text[request.cursor :],
                                     recall.rest, last.head, last.prompt, last.ids)

    def remember(self, key: str | None, request: CompletionRequest, recall: Recall, text: str,
                 head: str, prompt: FimPrompt, ids: list[int]) -> None:
        """Keep a new suggestion (`ids`: the tokens after `head`, typed ones included)."""
        if key is None:
            return
        if recall.typed is not None:
            text, ids = _known_rest(recall, text, ids)
        if text:
            self._last[key] = Suggestion(request.text[: request.cursor], request.text[request.cursor :],
                                         text, head, prompt, list(ids))
        else:
            self._last.pop(key, None)

    def forget(self, key: str) -> None:
        self._last.pop(key, None)


def _rest_of(last: Suggestion, before: str, after: str) -> str:
    """The rest of the last suggestion if the user typed its first characters and changed
    nothing else; "" otherwise."""
    if after != last.after or not before.startswith(last.before):
        return ""
    typed = before[len(last.before):]
    if not typed or not last.text.startswith(typed):
        return ""
    return last.text[len(typed):]


def _known_rest(recall: Recall, text: str, ids: list[int]) -> tuple[str, list[int]]:
    """What to remember after completing a typed-into suggestion: the previous suggestion's
    longer rest when the new one is its start, token for token. The stop rules of a mid-line
    cursor cut a block suggestion to its line; a user typing on into the next lines is still
    typing the model's suggestion, and its tokens are still the model's greedy continuation."""
    last = recall.last
    if text and recall.rest.startswith(text) and last.ids[: len(ids)] == ids:
        return recall.rest, last.ids
    return text, ids
