"""Which indexed definitions still want a summary, and how a written summary finds its
chunk again. The model that writes summaries is the caller's (the CLI, the server's
background lane); summaries are asked for as hovers ask for them, so both share the cache."""

from __future__ import annotations

from dataclasses import dataclass

from .definitions import DefinitionFinder
from .indexer import text_sha
from .outline import Definition
from .types import DefinitionSummary


@dataclass(frozen=True)
class SummaryTarget:
    definition: Definition
    file_sha: str  # of the text the definition was read from

    def summary(self, text: str) -> DefinitionSummary:
        d = self.definition
        return DefinitionSummary(d.path, d.qualified_name, d.start_line, self.file_sha, text)


def summary_targets(index, finder: DefinitionFinder, path: str, text: str | None = None) -> list[SummaryTarget]:
    """The definitions of `path` (read from disk unless `text` is given) whose indexed chunk
    has no summary; none while the index holds another text of the file."""
    text = finder.read(path) if text is None else text
    record = index.snapshot.files.get(path)
    if text is None or record is None or record.sha != text_sha(text):
        return []
    missing = index.unsummarized(path)
    if not missing:
        return []
    return [SummaryTarget(d, record.sha) for d in finder.definitions_of(path, text)
            if d.qualified_name in missing]


def workspace_order(index, first: list[str] = ()) -> list[str]:
    """The indexed files to summarize, `first` (open files) ahead of the rest."""
    indexed = sorted(index.snapshot.files)
    ahead = [path for path in dict.fromkeys(first) if path in index.snapshot.files]
    return ahead + [path for path in indexed if path not in set(ahead)]
