"""`codeassist bench search`: code search quality and speed on real Python sources.

Quality: functions and methods with a docstring, from the standard library (or --dir); the
query is the docstring's first sentence, and the indexed copy of the code has every
docstring removed. MRR@10 and Recall@1/@10 for BM25, dense, hybrid (weighted score fusion) and rrf
(reciprocal rank fusion, for comparison), and dense/hybrid
without SEA (a long chunk's vector from its first block only, which is what truncation at
the encoder's window gives). Speed: index build throughput, query latency at 10k and 100k
chunks (flat and HNSW), and the time to re-index one changed file. With --summaries N: search
with the model's summaries of N definitions of the stdlib corpus (where the blend weight is
chosen) and of a second project (search_summaries.py).
"""

from __future__ import annotations

import ast
import random
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

from completion.syntax import language_for
from retrieval import CodeIndex, IndexConfig
from retrieval.chunking import chunk_file
from retrieval.indexer import embed
from retrieval.search import MEMBER_MARGIN, rank
from retrieval.store import Snapshot, build_vector_index

from .report import BenchResult, machine_info

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "pydoc_data", "encodings", "turtledemo",
              "site-packages", "__pycache__", "ensurepip", "tkinter"}
_LATENCY_SIZES = (10_000, 100_000)
MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2)  # a method within this of its class's score goes above it


def run_bench(args) -> BenchResult:
    quick = args.quick
    source = Path(args.dir or sysconfig.get_paths()["stdlib"])
    if not source.is_dir():
        raise ValueError(f"{source}: no such directory")
    work = Path(tempfile.mkdtemp(prefix="codeassist-bench-search-"))
    queries, paths = _build_corpus(source, work / "repo", 1200 if quick else 2500, 300 if quick else 800)
    encoder_options = {"encoder": args.encoder} if getattr(args, "encoder", None) else {}
    index = CodeIndex(work / "repo", IndexConfig(location="workspace", **encoder_options,
                                                 trust_remote_code=getattr(args, "trust_remote_code", False)))
    encoder = index.encoder
    start = time.perf_counter()
    stats = index.update()
    build_s = time.perf_counter() - start
    snapshot = index.snapshot
    vectors = {q: encoder.encode_query(q) for q, _ in queries}
    rows = [_quality(snapshot, queries, vectors, mode, "sea") for mode in ("bm25", "dense", "hybrid", "rrf")]
    rows += [{**_quality(snapshot, queries, vectors, "hybrid", "sea", margin), "measure": "member margin",
              "margin": margin} for margin in MARGINS]
    truncated = _without_sea(snapshot, work / "repo", encoder)
    rows += [_quality(truncated, queries, vectors, mode, "first block") for mode in ("dense", "hybrid")]
    rows += _latencies(snapshot, encoder, quick)
    reindex_ms = _reindex_one_file(index, work / "repo")
    if not encoder_options:  # the server indexes with its default encoder
        rows += _cli_latencies(work / "repo", queries, work, args, 3 if quick else 8)
    if args.summaries > 0:
        rows += _summary_rows(args, work, queries, paths, encoder, quick)
    summary = {
        "queries": len(queries),
        "chunks": len(snapshot),
        "files": stats.files,
        "encoder": encoder.name,
        **{f"{m}_{r['mode'].replace(' ', '_')}{'' if r['variant'] == 'sea' else '_no_sea'}": r[m]
           for r in rows if r["measure"] == "quality" for m in ("mrr_at_10", "recall_at_1", "recall_at_10")},
        "index_chunks_per_s": round(stats.embedded_chunks / build_s, 1),
        "index_build_s": round(build_s, 1),
        **{f"query_{p}_ms_{r['chunks'] // 1000}k{'' if r['index'] == 'flat' else '_hnsw'}": r[f"{p}_ms"]
           for r in rows if r["measure"] == "latency" for p in ("p50", "p95")},
        "reindex_one_file_ms": round(reindex_ms, 1),
        **{f"cli_search_p50_s_{r['variant'].replace(' ', '_')}": r["p50_ms"] / 1000
           for r in rows if r["measure"] == "cli latency"},
        "latency_corpus": "real chunk vectors and BM25 documents replicated to size; each copy's "
                          "vector perturbed with Gaussian noise (sigma 0.02 per dim) and renormalised",
        **_summary_headlines(rows),
    }
    columns = ["measure", "mode", "variant", "project", "coverage", "weight", "margin", "chunks", "index",
               "mrr_at_10", "recall_at_1", "recall_at_10", "class_mrr_at_10", "function_mrr_at_10",
               "p50_ms", "p95_ms", "build_s"]
    return BenchResult(summary, rows, columns, machine_info(), _plot(rows))


# --- the evaluation corpus ----------------------------------------------------------------
def _summary_rows(args, work: Path, queries, paths: list[str], encoder, quick: bool) -> list[dict]:
    """Search with summaries on a part of the stdlib corpus and of the second project."""
    import importlib.util

    from completion import load_model
    from completion.home import codeassist_home
    from completion.summarize import Summarizer
    from completion.summary_cache import SummaryCache

    from .search_summaries import coverage_rows, summarized_subset

    second = args.second_dir
    if second is None:
        second = str(Path(importlib.util.find_spec("huggingface_hub").origin).parent)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    summarizer = Summarizer(loaded)
    cache = SummaryCache(codeassist_home() / "bench" / "search-summaries.json")
    second_queries, second_paths = _build_corpus(Path(second), work / "second", 600 if quick else 1500, 800)
    rows = []
    for project, root, project_queries, project_paths in (
            ("stdlib", work / "repo", queries, paths), (Path(second).name, work / "second", second_queries, second_paths)):
        print(f"summaries for {project}: {args.summaries} definitions")
        index = summarized_subset(root, project_paths, args.summaries, work / f"{project}-summarized",
                                  encoder, summarizer, cache)
        present = {c.path for c in index.snapshot.chunks}
        subset = [(q, key) for q, key in project_queries if key[0] in present]
        vectors = {q: encoder.encode_query(q) for q, _ in subset}
        rows += coverage_rows(index.snapshot, subset, vectors, _quality, project, MARGINS)
    return rows


def _summary_headlines(rows: list[dict]) -> dict:
    """Hybrid MRR@10 without and with every summary, per project, at the stored weight."""
    from retrieval.store import SUMMARY_WEIGHT

    found = {}
    for row in rows:
        if row["measure"] == "summaries" and row["mode"] == "hybrid" and row["weight"] == SUMMARY_WEIGHT \
                and row["coverage"] in (0.0, 1.0):
            label = "without" if row["coverage"] == 0.0 else "with"
            found[f"summaries_{row['project']}_queries"] = row["queries"]
            found[f"summaries_{row['project']}_chunks"] = row["chunks"]
            found[f"mrr_at_10_hybrid_{label}_summaries_{row['project']}"] = row["mrr_at_10"]
    return found


def _build_corpus(source: Path, target: Path, max_chunks: int, max_queries: int):
    """Copy Python files without docstrings into `target` until about `max_chunks` chunks;
    returns ([(query, (path, qualified name))], the copied paths in the order taken)."""
    files = sorted(p for p in source.rglob("*.py")
                   if not _SKIP_DIRS & set(p.relative_to(source).parts[:-1]))
    random.Random(0).shuffle(files)
    queries, chunks, taken = [], 0, []
    for path in files:
        if chunks >= max_chunks:
            break
        try:
            text = path.read_text(encoding="utf-8")
            stripped, found = _strip_docstrings(text)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        relative = path.relative_to(source).as_posix()
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        (target / relative).write_text(stripped)
        taken.append(relative)
        chunks += len(chunk_file(relative, stripped, language_for(relative)))
        queries += [(q, (relative, name)) for q, name in found]
    random.Random(1).shuffle(queries)
    unique = {}
    for query, target_key in queries:
        unique.setdefault(query, target_key)  # a docstring shared by two functions is ambiguous
    return list(unique.items())[:max_queries], taken


def _strip_docstrings(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The source without class, function and method docstrings, and (first sentence,
    qualified name) of each."""
    tree = ast.parse(text)
    lines = text.split("\n")
    found, cuts = [], []

    def cut_docstring(child, name: str) -> None:
        docstring = ast.get_docstring(child)
        first = child.body[0]
        if docstring and isinstance(first, ast.Expr):
            sentence = _first_sentence(docstring)
            if len(sentence.split()) >= 3:
                found.append((sentence, name))
            cuts.append((first.lineno, first.end_lineno, len(child.body) == 1, first.col_offset))

    def visit(node, scope: list[str], in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not in_function:
                cut_docstring(child, ".".join(scope + [child.name]))
                visit(child, scope + [child.name], False)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and not in_function:
                cut_docstring(child, ".".join(scope + [child.name]))
                visit(child, scope, True)

    visit(tree, [], False)
    for start, end, only, column in sorted(cuts, reverse=True):
        lines[start - 1 : end] = [" " * column + "pass"] if only else []
    return "\n".join(lines), found


def _first_sentence(docstring: str) -> str:
    paragraph = docstring.strip().split("\n\n")[0].replace("\n", " ")
    return " ".join(paragraph.split(". ")[0].split()).rstrip(".")


# --- measurements -------------------------------------------------------------------------
def _quality(snapshot: Snapshot, queries, vectors, mode: str, variant: str,
             member_margin: float = MEMBER_MARGIN) -> dict:
    """MRR@10 and recall; MRR@10 also of the queries for classes and for functions/methods."""
    where = {}
    for row, chunk in enumerate(snapshot.chunks):
        where.setdefault((chunk.path, chunk.qualified_name), set()).add(row)
    reciprocal, at1, at10, of_class = [], 0, 0, []
    for query, key in queries:
        ranked = [row for row, _ in rank(snapshot, query, 10, mode, vectors.__getitem__, member_margin)]
        relevant = where.get(key, set())
        position = next((i for i, row in enumerate(ranked) if row in relevant), None)
        reciprocal.append(0.0 if position is None else 1.0 / (position + 1))
        of_class.append(any(snapshot.chunks[row].kind == "class" for row in relevant))
        at1 += position == 0
        at10 += position is not None
    n = max(len(queries), 1)
    reciprocal, of_class = np.asarray(reciprocal), np.asarray(of_class, bool)
    return {"measure": "quality", "mode": mode, "variant": variant,
            "mrr_at_10": round(float(np.mean(reciprocal)), 4) if len(reciprocal) else 0.0,
            "recall_at_1": round(at1 / n, 4), "recall_at_10": round(at10 / n, 4),
            "class_mrr_at_10": round(float(reciprocal[of_class].mean()), 4) if of_class.any() else None,
            "function_mrr_at_10": round(float(reciprocal[~of_class].mean()), 4) if (~of_class).any() else None}


def _without_sea(snapshot: Snapshot, root: Path, encoder) -> Snapshot:
    """The same index with each multi-block chunk's vector taken from its first block only."""
    vectors = np.array(snapshot.vectors, dtype=np.float32)
    row_of = {(c.path, c.start_line, c.kind, c.qualified_name): i for i, c in enumerate(snapshot.chunks)}
    rows, long_chunks = [], []
    for path in sorted({c.path for c in snapshot.chunks}):
        text = (root / path).read_text()
        for chunk in chunk_file(path, text, language_for(path), encoder.max_tokens - 24,
                                encoder.count_tokens):
            row = row_of.get((chunk.path, chunk.start_line, chunk.kind, chunk.qualified_name))
            if row is not None and len(chunk.blocks) > 1:
                rows.append(row)
                long_chunks.append(chunk)
    if long_chunks:
        vectors[rows] = embed(long_chunks, encoder, first_block_only=True)
    return Snapshot(snapshot.encoder, snapshot.dim, snapshot.chunks, snapshot.hashes,
                    snapshot.terms, vectors, snapshot.files)


def _latencies(snapshot: Snapshot, encoder, quick: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    queries = [c.symbol.replace("_", " ") + " of " + c.path.rsplit("/", 1)[-1]
               for c in snapshot.chunks if c.symbol][: 50 if quick else 200]
    rows = []
    for size in _LATENCY_SIZES:
        copies = -(-size // len(snapshot))
        picks = np.arange(size) % len(snapshot)
        copy = (np.arange(size) >= len(snapshot))[:, None]  # the originals stay as they are
        noise = rng.normal(0, 0.02, (size, snapshot.dim)).astype(np.float32) * copy
        vectors = np.asarray(snapshot.vectors, np.float32)[picks] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        big = Snapshot(snapshot.encoder, snapshot.dim, [snapshot.chunks[i] for i in picks],
                       [snapshot.hashes[i] for i in picks], [snapshot.terms[i] for i in picks],
                       vectors, {})
        big.bm25  # build before timing
        for kind in ("flat", "hnsw"):
            start = time.perf_counter()
            big.vector_index = build_vector_index(vectors, kind == "hnsw")
            built = time.perf_counter() - start
            times = []
            for query in queries:
                start = time.perf_counter()
                rank(big, query, 10, "hybrid", encoder.encode_query)
                times.append((time.perf_counter() - start) * 1000)
            rows.append({"measure": "latency", "mode": "hybrid", "chunks": size, "index": kind,
                         "copies": copies, "p50_ms": round(float(np.percentile(times, 50)), 2),
                         "p95_ms": round(float(np.percentile(times, 95)), 2), "build_s": round(built, 2)})
    return rows


def _cli_latencies(root: Path, queries, work: Path, args, runs: int) -> list[dict]:
    """`codeassist search` from the shell, as a user runs it: in its own process (imports,
    encoder, index, refresh), then answered by a running server of the folder."""
    import itertools
    import subprocess
    import sys

    from .lsp_process import LspProcess, notification, request

    def timed(extra: list[str]) -> list[float]:
        times = []
        for query, _ in queries[:runs]:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "codeassist", "search", query, "--dir", str(root),
                                   "--in-workspace", "--json", *extra], capture_output=True, text=True, check=True)
            times.append((time.perf_counter() - start) * 1000)
            if ("answered by the running" in done.stderr) != (not extra):
                raise RuntimeError(f"the search went another way than asked: {done.stderr[-300:]}")
        return times

    rows = [_latency_row("in the process", timed(["--no-server"]))]
    server = LspProcess(work / "cli-server.log", ["--model", args.model, "--device", args.device, "--dtype", args.dtype])
    try:
        ids = itertools.count(1)
        options = {"indexEnabled": True, "indexLocation": "workspace", "indexSummaries": False,
                   "hoverSummaries": False, "warmUp": False}
        server.send(request(0, "initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {},
                                              "initializationOptions": options}))
        server.answer(0)
        server.send(notification("initialized", {}))
        server.wait_until_ready(ids)
        while True:
            msg_id = next(ids)
            server.send(request(msg_id, "workspace/executeCommand", {"command": "codeassist.status", "arguments": []}))
            if server.answer(msg_id)["result"]["indexStatus"] == "ready":
                break
            time.sleep(0.5)
        rows.append(_latency_row("through a server", timed([])))
    finally:
        server.close()
    return rows


def _latency_row(variant: str, times: list[float]) -> dict:
    return {"measure": "cli latency", "mode": "hybrid", "variant": variant,
            "p50_ms": round(float(np.percentile(times, 50)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1)}


def _reindex_one_file(index: CodeIndex, root: Path) -> float:
    """Median ms to re-index one edited file of median size (a function appended), 3 edits."""
    files = sorted(root.rglob("*.py"), key=lambda p: p.stat().st_size)
    path = files[len(files) // 2]
    times = []
    for i in range(3):
        path.write_text(path.read_text() + f"\n\ndef bench_added_{i}(value):\n    return value * {i}\n")
        start = time.perf_counter()
        index.update([path])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def _plot(rows: list[dict]):
    def draw(figure) -> None:
        quality = [r for r in rows if r["measure"] == "quality"]
        summaries = [r for r in rows if r["measure"] == "summaries"]
        panels = 3 if summaries else 2
        left = figure.add_subplot(1, panels, 1)
        labels = [f"{r['mode']}\n{r['variant']}" for r in quality]
        x = np.arange(len(quality))
        for offset, metric in zip((-0.27, 0, 0.27), ("mrr_at_10", "recall_at_1", "recall_at_10")):
            left.bar(x + offset, [r[metric] for r in quality], 0.27, label=metric)
        left.set_xticks(x, labels, fontsize=8)
        left.set_ylim(0, 1)
        left.set_title("docstring -> definition (stdlib)")
        left.legend(fontsize=8)
        if summaries:
            from retrieval.store import SUMMARY_WEIGHT

            middle = figure.add_subplot(1, panels, 2)
            for project in dict.fromkeys(r["project"] for r in summaries):
                for mode in ("bm25", "dense", "hybrid"):
                    line = [r for r in summaries if r["project"] == project and r["mode"] == mode
                            and r["weight"] == SUMMARY_WEIGHT]
                    middle.plot([r["coverage"] for r in line], [r["mrr_at_10"] for r in line], marker="o",
                                label=f"{project} {mode}")
            middle.set_xlabel("share of definitions summarized")
            middle.set_ylabel("MRR@10")
            middle.set_title("with the model's summaries")
            middle.legend(fontsize=7)
        latency = [r for r in rows if r["measure"] == "latency"]
        right = figure.add_subplot(1, panels, panels)
        x = np.arange(len(latency))
        right.bar(x - 0.2, [r["p50_ms"] for r in latency], 0.4, label="p50")
        right.bar(x + 0.2, [r["p95_ms"] for r in latency], 0.4, label="p95")
        right.set_xticks(x, [f"{r['chunks'] // 1000}k {r['index']}" for r in latency], fontsize=8)
        right.set_ylabel("hybrid query latency (ms)")
        right.legend(fontsize=8)

    return draw
