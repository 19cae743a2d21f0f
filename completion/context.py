"""Choose the repository snippets shown before the FIM prompt, within a token budget (pure).

The caller gathers candidate snippets (definitions of names used near the cursor, search
hits), most useful first. This takes them in that order while they fit, then lays them out
in a fixed order (by path; snippets of one file together, in the caller's order) so the
same candidates always give the same tokens: the context sits at the start of the prompt,
and any change there would make the KV cache re-encode everything after it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .prompt import Encode, RepoFile

_OVERHEAD = 1  # the file separator token


def select_context(candidates: Sequence[RepoFile], encode: Encode,
                   budget_tokens: int) -> tuple[tuple[RepoFile, ...], int]:
    """(the snippets that fit in `budget_tokens`, one RepoFile per path sorted by path; the
    tokens they take)."""
    if budget_tokens <= 0 or not candidates:
        return (), 0
    unique = list(dict.fromkeys(c for c in candidates if c.content.strip()))
    # A file's header (separator and path) is paid once, by its first snippet: many one-line
    # snippets of one file cost little more than their text.
    paths = list(dict.fromkeys(c.path for c in unique))
    headers = dict(zip(paths, (len(ids) + _OVERHEAD for ids in encode([f"{p}\n" for p in paths]))))
    costs = encode([f"{c.content.rstrip()}\n" for c in unique])
    chosen: list[RepoFile] = []
    opened: set[str] = set()
    used = 0
    for candidate, ids in zip(unique, costs):
        cost = len(ids) + (0 if candidate.path in opened else headers[candidate.path])
        if used + cost <= budget_tokens:
            chosen.append(candidate)
            opened.add(candidate.path)
            used += cost
    while True:  # the estimate ignores how merged text tokenizes: check, drop the last if over
        files = _layout(chosen)
        total = _cost(files, encode)
        if total <= budget_tokens or not chosen:
            return files, total
        chosen.pop()


def _layout(chosen: Sequence[RepoFile]) -> tuple[RepoFile, ...]:
    by_path: dict[str, list[str]] = {}
    for snippet in chosen:
        by_path.setdefault(snippet.path, []).append(snippet.content.rstrip())
    return tuple(RepoFile(path, _join(by_path[path])) for path in sorted(by_path))


def _join(parts: list[str]) -> str:
    """One file's snippets: a blank line between them, none between one-line stubs."""
    text = parts[0]
    for before, part in zip(parts, parts[1:]):
        text += ("\n" if "\n" not in before and "\n" not in part else "\n\n") + part
    return text


def _cost(files: Sequence[RepoFile], encode: Encode) -> int:
    """Tokens the files take in the prompt's repository header."""
    if not files:
        return 0
    texts = [f"{f.path}\n{f.content.rstrip()}\n" for f in files]
    return sum(len(ids) + _OVERHEAD for ids in encode(texts))
