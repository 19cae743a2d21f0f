"""`codeassist summarize FILE:LINE[:COL]`: the signature, docstring and LLM summary of the
function, method or class at (or around) that line, as a hover shows them."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_command(commands) -> None:
    from .model_options import add_model_options

    summarize = commands.add_parser(
        "summarize", help="summarize the function or class at FILE:LINE[:COL] (1-based)")
    summarize.add_argument("location", help="FILE:LINE or FILE:LINE:COL (1-based); a name at COL "
                           "is resolved to its definition, else the definition around LINE is used")
    summarize.add_argument("--no-index", action="store_true",
                           help="do not use the folder's code-search index for callers and callees")
    summarize.add_argument("--max-tokens", type=int, default=60, help="most summary tokens")
    summarize.add_argument("--json", action="store_true", help="print a JSON object")
    add_model_options(summarize)
    summarize.set_defaults(run=run_summarize)


def _location(spec: str) -> tuple[Path, int, int | None]:
    from .sources import parse_location

    parts = spec.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        path, line, column = parse_location(spec)
        return path, line, column
    path, line, _ = parse_location(spec, need_column=False)
    return path, line, None


def run_summarize(args: argparse.Namespace) -> int:
    from completion import load_model
    from completion.home import codeassist_home
    from completion.summarize import Summarizer
    from completion.summary_cache import SummaryCache
    from completion.syntax import language_for
    from retrieval import CodeIndex, IndexConfig
    from retrieval.definitions import DefinitionFinder
    from retrieval.outline import enclosing, identifier_at

    from .sources import offset_of, read_source, repository_of

    path, line, column = _location(args.location)
    text = read_source(path)
    offset_of(text, line, column or 1)  # range checks with clear messages
    _, relative = repository_of(path)
    root = Path(str(path.resolve())[: -len(relative)] or "/")
    if language_for(relative) is None:
        raise ValueError(f"{path}: no grammar for this file type")
    folder = IndexConfig().folder_for(root)
    index = CodeIndex(root) if folder.exists() and not args.no_index else None
    finder = DefinitionFinder(root, index)
    definition = None
    if column is not None:
        name, owner = identifier_at(text, line, column - 1, language_for(relative))
        if name:
            definition = finder.at_position(relative, text, line, column - 1, name, owner)
    if definition is None:
        defs = finder.definitions_of(relative, text)
        definition = enclosing(defs, line)
    if definition is None:
        raise ValueError(f"{path}:{line}: no function, method or class there")
    request = finder.summary_request(definition)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    summarizer = Summarizer(loaded, args.max_tokens)
    cache_path = index.summaries_path if index is not None else codeassist_home() / "summaries.json"
    cache = SummaryCache(cache_path)
    key = request.key(loaded.name)
    start = time.perf_counter()
    summary = cache.get(key)
    cached = summary is not None
    if summary is None:
        summary = summarizer.summarize(request).text
        cache.put(key, summary)
    elapsed = (time.perf_counter() - start) * 1000
    if args.json:
        print(json.dumps({
            "path": definition.path, "line": definition.start_line, "kind": definition.kind,
            "name": definition.qualified_name, "signature": definition.signature,
            "docstring": definition.docstring, "summary": summary, "cached": cached,
            "model": loaded.name, "summary_ms": round(elapsed, 1),
        }, indent=2))
        return 0
    print(f"{definition.path}:{definition.start_line}: {definition.kind} {definition.qualified_name}")
    print(definition.signature)
    if definition.docstring:
        print()
        print(definition.docstring)
    print()
    print(f"Summary: {summary}")
    return 0
