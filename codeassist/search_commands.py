"""`codeassist index [DIR]` and `codeassist search QUERY`: the code search commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_commands(commands) -> None:
    """Register `index` and `search` on the CLI's subparsers."""
    index = commands.add_parser("index", help="index a folder for code search (incremental)")
    index.add_argument("dir", nargs="?", default=".", help="folder to index (default: .)")
    index.add_argument("--summaries", action="store_true",
                       help="also have the model summarize every function, method and class that has "
                       "no summary yet (as hovers show them), for search by what code does; slow on CPU "
                       "(seconds each), stops cleanly at Ctrl-C and goes on from there next time")
    _add_index_options(index)
    from .model_options import add_model_options

    add_model_options(index)
    index.set_defaults(run=run_index)

    search = commands.add_parser("search", help="search the code of an indexed folder")
    search.add_argument("query", help="words or code to look for")
    search.add_argument("--dir", default=".", help="the indexed folder (default: .)")
    search.add_argument("--k", type=int, default=10, help="number of results (default: 10)")
    search.add_argument("--mode", default="hybrid", help="hybrid (default: dense + weighted BM25 scores), dense, bm25 or rrf (reciprocal rank fusion)")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.add_argument("--no-refresh", action="store_true",
                        help="search the index as it is (by default changed files are re-indexed first)")
    search.add_argument("--no-server", action="store_true",
                        help="search in this process even when a codeassist server holds the folder's "
                        "index (by default that server answers: it has the encoder loaded and keeps the "
                        "index up to date)")
    _add_index_options(search)
    search.set_defaults(run=run_search)


def _add_index_options(parser: argparse.ArgumentParser) -> None:
    from retrieval.encoder import DEFAULT_ENCODER
    from retrieval.files import DEFAULT_MAX_BYTES

    parser.add_argument("--encoder", default=DEFAULT_ENCODER,
                        help=f"sentence-transformers/HF encoder: name, hub id or folder (default: {DEFAULT_ENCODER})")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow an encoder that ships its own code (e.g. jina-embeddings-v2-base-code)")
    parser.add_argument("--index-dir", help="where the index lives (default: CODEASSIST_HOME/indexes/NAME-HASH)")
    parser.add_argument("--in-workspace", action="store_true",
                        help="keep the index in DIR/.codeassist/index instead of CODEASSIST_HOME")
    parser.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                        help="also leave out files matching this gitignore pattern (repeatable)")
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help=f"skip larger files (default: {DEFAULT_MAX_BYTES})")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per encoder batch")


def _open_index(args: argparse.Namespace, root: str):
    from retrieval import CodeIndex, IndexConfig
    from retrieval.files import DEFAULT_EXCLUDE, FileFilter

    if not Path(root).is_dir():
        raise ValueError(f"{root}: no such directory")
    config = IndexConfig(
        encoder=args.encoder, location="workspace" if args.in_workspace else "cache",
        index_dir=args.index_dir, batch_size=args.batch_size,
        trust_remote_code=args.trust_remote_code,
        file_filter=FileFilter(DEFAULT_EXCLUDE + tuple(args.exclude), args.max_file_bytes),
    )
    return CodeIndex(root, config)


def _update_with_bar(index, quiet: bool):
    """Update the index with a progress bar on stderr (over the blocks to embed)."""
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="chunk", desc="embedding", file=sys.stderr,
                       disable=quiet and not sys.stderr.isatty())
        bar.update(done - bar.n)

    try:
        return index.update(progress=progress)
    finally:
        if bar is not None:
            bar.close()


def run_index(args: argparse.Namespace) -> int:
    index = _open_index(args, args.dir)
    stats = _update_with_bar(index, quiet=False)
    print(f"indexed {index.root}: {stats.summary()} (index: {index.folder})")
    if args.summaries:
        _summarize_all(index, args)
    done, total = index.summary_coverage()
    print(f"summaries: {done} of {total} definitions")
    return 0


def _summarize_all(index, args: argparse.Namespace, attach_every: int = 16) -> None:
    """Summarize the index's definitions without one (cached summaries first), attaching them
    to the index every `attach_every` summaries and at the end."""
    from tqdm import tqdm

    from completion import load_model
    from completion.summarize import Summarizer
    from completion.summary_cache import SummaryCache
    from retrieval.definitions import DefinitionFinder
    from retrieval.summary_targets import summary_targets, workspace_order

    finder = DefinitionFinder(index.root, index)
    targets = [t for path in workspace_order(index) for t in summary_targets(index, finder, path)]
    if not targets:
        return
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    summarizer, cache = Summarizer(loaded), SummaryCache(index.summaries_path)
    written = []
    try:
        for target in tqdm(targets, unit="definition", desc="summarizing", file=sys.stderr):
            request = finder.summary_request(target.definition)
            key = request.key(loaded.name)
            text = cache.get(key)
            if text is None:
                text = summarizer.summarize(request).text
                cache.put(key, text)
            written.append(target.summary(text))
            if len(written) >= attach_every:
                index.add_summaries(written)
                written = []
    finally:  # Ctrl-C keeps what was written
        if written:
            index.add_summaries(written)


def run_search(args: argparse.Namespace) -> int:
    if not Path(args.dir).is_dir():
        raise ValueError(f"{args.dir}: no such directory")
    root = Path(args.dir).resolve()
    hits = None if args.no_server else _search_through_server(args, root)
    if hits is None:
        from retrieval.search import validate

        validate(args.query, args.k, args.mode)
        index = _open_index(args, args.dir)
        if not args.no_refresh:
            _update_with_bar(index, quiet=True)
        hits = [vars(hit) for hit in index.search(args.query, args.k, args.mode)]
    cwd = Path.cwd()
    rows = [{
        "path": _shown(root / h["path"], cwd), "line": h["start_line"], "end_line": h["end_line"],
        "symbol": ".".join(part for part in (h["scope"], h["symbol"]) if part), "kind": h["kind"],
        "score": h["score"], "snippet": h["snippet"],
    } for h in hits]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['path']}:{row['line']}  {row['symbol'] or row['kind']}  {row['score']:.4f}")
        for line in row["snippet"].split("\n")[:4]:
            print(f"    {line}")
    if not rows:
        print("no results", file=sys.stderr)
    return 0


def _search_through_server(args: argparse.Namespace, root: Path) -> list[dict] | None:
    """The hits from a running server that holds this folder's index with these options;
    None when there is none (or the options ask for something else: search here)."""
    from completion.home import codeassist_home
    from retrieval.files import DEFAULT_MAX_BYTES
    from retrieval.search_endpoint import endpoint_path

    from .running_server import answer_from_server

    if args.exclude or args.max_file_bytes != DEFAULT_MAX_BYTES or args.trust_remote_code:
        return None
    arguments = {"query": args.query, "k": args.k, "mode": args.mode, "encoder": args.encoder,
                 "in_workspace": args.in_workspace,
                 "index_dir": str(Path(args.index_dir).expanduser().resolve()) if args.index_dir else None}
    return answer_from_server(endpoint_path(codeassist_home(), root), "search", arguments)


def _shown(path: Path, cwd: Path) -> str:
    """`path` relative to the working directory when it is below it (clickable), else absolute."""
    relative = os.path.relpath(path, cwd)
    return str(path) if relative.startswith("..") else relative
