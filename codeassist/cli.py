"""`codeassist` command line: complete, serve, index, search, bench, models."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .bench import BENCHMARKS
from .model_options import add_model_options

logger = logging.getLogger("codeassist")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codeassist", description=__doc__)
    parser.add_argument("--version", action="version", version=f"codeassist {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and timings")
    commands = parser.add_subparsers(dest="command", required=True)

    complete = commands.add_parser(
        "complete", help="print the FIM completion at FILE:LINE:COL (1-based)"
    )
    complete.add_argument("location", help="FILE:LINE:COL, 1-based like compiler messages")
    add_model_options(complete)
    complete.add_argument("--max-tokens", type=int, default=64, help="most tokens to generate")
    complete.add_argument("--time-budget-ms", type=float, default=None,
                          help="stop decoding after this many ms (default: no limit; the first line is "
                               "finished past it)")
    complete.add_argument("--context-tokens", type=int, default=1024, help="prompt token budget")
    complete.add_argument("--language", help="override the language detected from the extension")
    complete.add_argument("--json", action="store_true", help="print text, tokens, timings, model")
    complete.add_argument("--no-server", action="store_true",
                          help="load the model in this process even when a codeassist server of the "
                          "file's folder runs the same model (by default that server answers)")
    complete.set_defaults(run=_run_complete)

    serve = commands.add_parser(
        "serve",
        help="run the language server (stdio by default)",
        description=(
            "Run the codeassist language server. By default it speaks LSP over stdin/stdout, "
            "which is what editors expect. With --tcp it listens on 127.0.0.1:PORT instead; "
            "another host is refused unless --allow-remote is given (the server reads any "
            "file a client names and runs a model: do not expose it to a network you do not "
            "trust). Settings sent by the client in initializationOptions or "
            "workspace/didChangeConfiguration override the flags below."
        ),
    )
    transport = serve.add_mutually_exclusive_group()
    transport.add_argument("--stdio", action="store_true", help="LSP over stdin/stdout (default)")
    transport.add_argument("--tcp", action="store_true", help="LSP over TCP (see --host/--port)")
    serve.add_argument("--host", default="127.0.0.1", help="TCP host (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=2087, help="TCP port (default 2087)")
    serve.add_argument(
        "--allow-remote", action="store_true", help="allow a --host other than loopback"
    )
    serve.add_argument("--token-file", help="--tcp: the file with the token a client must send as "
                       "initializationOptions.authToken (default: CODEASSIST_HOME/serve.token, created "
                       "readable by you only)")
    serve.add_argument("--no-token", action="store_true", help="--tcp: accept a client without the token "
                       "(anyone on this machine could then read your files through the server)")
    serve.add_argument("--log-file", help="log file (default: CODEASSIST_HOME/logs/server.log)")
    add_model_options(serve)
    serve.set_defaults(run=_run_serve)

    bench = commands.add_parser(
        "bench", help="run a benchmark: prints a table, writes OUT/NAME.json and OUT/NAME.png"
    )
    bench.add_argument("name", help="benchmark: " + ", ".join(BENCHMARKS))
    bench.add_argument("--out", default="bench-out", help="output folder (default: bench-out)")
    bench.add_argument("--quick", action="store_true", help="a smaller run (a few minutes)")
    bench.add_argument("--contexts", help="comma-separated prompt budgets, e.g. 512,2048")
    bench.add_argument("--keystrokes", type=int, help="characters typed in the typing trace")
    bench.add_argument("--holes", type=int, help="quality: single-line holes (half as many blocks and spans; "
                       "default 40, the first N of the same draw)")
    bench.add_argument("--minutes", type=float, help="soak: how long the editing session runs (default 10)")
    bench.add_argument("--margin", type=int, help="pie: tokens re-encoded after each change")
    bench.add_argument("--dir", help="search: folder of Python sources to evaluate on (default: the stdlib)")
    bench.add_argument("--encoder", help="search: the embedding model (name, hub id or folder; "
                       "default: the index's default)")
    bench.add_argument("--llama-bench", help="decode: llama.cpp's llama-bench binary, the reference column "
                       "(default: $CODEASSIST_LLAMA_BENCH)")
    bench.add_argument("--llama-server", help="engines, quality, context, session: llama.cpp's llama-server "
                       "binary, started on the same GGUF when --engine is not given (default: $CODEASSIST_LLAMA_SERVER, "
                       "then where .ci/install_llama_server.sh builds it)")
    bench.add_argument("--trust-remote-code", action="store_true",
                       help="search: allow an encoder that ships its own code")
    bench.add_argument("--summaries", type=int, default=0, metavar="N",
                       help="search: also summarize N definitions of each project with --model and "
                       "measure search with those summaries (minutes per 10 on a small CPU)")
    bench.add_argument("--second-dir", help="search --summaries: the second project, never used for "
                       "tuning (default: the installed huggingface_hub package)")
    add_model_options(bench)
    bench.set_defaults(run=_run_bench)

    from .search_commands import add_commands

    add_commands(commands)  # index, search

    from .summarize_command import add_command as add_summarize

    add_summarize(commands)  # summarize FILE:LINE

    models = commands.add_parser("models", help="list embedded models, their install/cache state, and "
                                 "which one this machine runs by default and why")
    models.add_argument("--json", action="store_true")
    models.add_argument("--device", default="auto", help="the device the default is chosen for (default: auto)")
    models.set_defaults(run=_run_models)
    return parser


def _run_complete(args: argparse.Namespace) -> int:
    from completion.syntax import language_for

    from .sources import offset_of, parse_location, read_source, repository_of

    path, line, column = parse_location(args.location)
    text = read_source(path)
    cursor = offset_of(text, line, column)
    repo_name, relative = repository_of(path)
    language = language_for(str(path), args.language)
    answer = None
    if not args.no_server and args.engine == "local" and not args.draft_model:
        answer = _complete_through_server(args, path, {
            "text": text, "cursor": cursor, "language": language, "path": relative, "repo_name": repo_name})
    if answer is None:
        answer = _complete_here(args, text, cursor, language, relative, repo_name)
    if answer["stop_reason"] == "engine_down":
        logger.error("no completion: %s", answer["error"])
        return 1
    if not answer["text"].strip():
        print(f"codeassist: no suggestion at {args.location}: {why_empty(answer['stop_reason'], answer['tokens'])}",
              file=sys.stderr)
    if args.json:
        print(json.dumps({
            **{key: answer[key] for key in ("text", "tokens", "prompt_tokens", "stop_reason", "multiline",
                                            "model", "device", "dtype")},
            "engine": args.engine,
            "server": answer.get("server", False),
            "timings": {
                "load_ms": round(answer["load_ms"], 1) if answer.get("load_ms") is not None else None,
                "prompt_ms": round(answer["prompt_ms"], 1),
                "decode_ms": round(answer["decode_ms"], 1),
                "stages_ms": answer.get("stages_ms", {}),  # where the time went (completion/stages.py)
            },
        }, indent=2))
    else:
        print(answer["text"])
    return 0


def _complete_through_server(args: argparse.Namespace, path: Path, request: dict) -> dict | None:
    """The completion from a running server of the file's folder that runs this model; None
    when there is none."""
    from completion.home import codeassist_home
    from retrieval.search_endpoint import endpoint_above

    from .running_server import answer_from_server

    arguments = {**request, "model": args.model, "device": args.device, "dtype": args.dtype,
                 "max_tokens": args.max_tokens, "context_tokens": args.context_tokens,
                 "time_budget_ms": args.time_budget_ms}
    answer = answer_from_server(endpoint_above(codeassist_home(), path), "complete", arguments)
    return None if answer is None else {**answer, "server": True, "load_ms": None}


def _complete_here(args: argparse.Namespace, text: str, cursor: int, language: str | None,
                   relative: str, repo_name: str) -> dict:
    """The completion from a model (or remote engine) loaded in this process."""
    from completion import CompletionRequest, EngineSettings
    from completion.open_engine import open_engine

    settings = EngineSettings(
        max_new_tokens=args.max_tokens,
        time_budget_ms=math.inf if args.time_budget_ms is None else args.time_budget_ms,
        max_prompt_tokens=args.context_tokens,
    )
    request = CompletionRequest(text, cursor, language, path=relative, repo_name=repo_name)
    api_key = os.environ.get(args.engine_api_key_env) if args.engine != "local" else None
    engine = open_engine(settings, model=args.model, device=args.device, dtype=args.dtype,
                         draft_model=args.draft_model or "", engine=args.engine, engine_model=args.engine_model,
                         api_key=api_key)
    loaded = getattr(engine, "loaded", None)  # a remote engine has no local model
    result = engine.complete(request)
    return {
        "text": result.text, "tokens": result.tokens, "prompt_tokens": result.prompt_tokens,
        "stop_reason": result.stop_reason, "multiline": result.multiline, "model": result.model,
        "device": str(loaded.device) if loaded else None, "dtype": loaded.dtype_name if loaded else None,
        "load_ms": loaded.load_ms if loaded else None, "prompt_ms": result.prompt_ms, "decode_ms": result.decode_ms,
        "stages_ms": result.stages,
        "error": engine.status()["engine"]["lastError"] if result.stop_reason == "engine_down" else None,
    }


EMPTY_BECAUSE = {
    "eos": "the model ended the text at once",
    "end_of_line": "the model's first token ends the line",
    "reached_suffix": "what the model wrote is the text already after the cursor",
    "dedent": "the model's text starts outside the current block",
    "next_statement": "the model's text starts the next statement",
    "time_budget": "--time-budget-ms ran out first",
    "max_tokens": "the stop rules cut every token within --max-tokens",
    "cancelled": "the request was cancelled",
}


def why_empty(stop_reason: str, tokens: int) -> str:
    """A sentence on why a completion came back empty (for the command line)."""
    reason = EMPTY_BECAUSE.get(stop_reason, f"stopped: {stop_reason}")
    return f"{reason} (stop reason {stop_reason}, {tokens} tokens generated)"


def _run_serve(args: argparse.Namespace) -> int:
    from completion.home import codeassist_home

    if args.tcp and args.host not in ("127.0.0.1", "localhost", "::1") and not args.allow_remote:
        raise ValueError(
            f"refusing to listen on {args.host}: only loopback unless --allow-remote is given"
        )
    log_file = Path(args.log_file) if args.log_file else codeassist_home() / "logs" / "server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for noisy in ("pygls", "filelock", "urllib3", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for stream_handler in root.handlers:
        if stream_handler is not handler:
            stream_handler.setLevel(logging.WARNING)  # stderr: warnings only; stdout is LSP

    from lsp_server import ServerSettings, build_server

    server = build_server(ServerSettings(model=args.model, device=args.device, dtype=args.dtype,
                                         draft_model=args.draft_model or "", engine=args.engine,
                                         engine_model=args.engine_model,
                                         engine_api_key_env=args.engine_api_key_env))
    logger.info("codeassist %s serving on %s (log: %s)", __version__,
                f"tcp {args.host}:{args.port}" if args.tcp else "stdio", log_file)
    token = None
    if args.tcp:
        if not args.no_token:
            token_file = Path(args.token_file) if args.token_file else codeassist_home() / "serve.token"
            token = _serve_token(token_file)
            logger.info("TCP clients must send the token in %s as initializationOptions.authToken", token_file)
    code = 0
    try:
        if args.tcp:
            server.start_tcp(args.host, args.port, token)
        else:
            server.start_io()
    except SystemExit as exiting:  # `exit`: 1 without `shutdown` before it
        code = exiting.code or 0
    # A worker stuck in a read or a long model call must not keep the process alive.
    exit_within(EXIT_GRACE_S, code)
    return code


EXIT_GRACE_S = 5.0


def exit_within(seconds: float, code: int) -> None:
    """End the process with `code` `seconds` from now, whatever its other threads are doing
    (a daemon timer: the normal exit, which waits for worker threads, usually comes first)."""
    import threading

    def force() -> None:
        logger.warning("threads still running %.0f s after the server stopped: exiting anyway", seconds)
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


def _serve_token(path: Path) -> str:
    """The token in `path`, created (random, readable by the user only) when missing."""
    import secrets

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    if path.stat().st_mode & 0o077:
        raise ValueError(f"{path} is readable by other users: chmod 600 it")
    token = path.read_text().strip()
    if len(token) < 16:
        raise ValueError(f"the token in {path} is shorter than 16 characters")
    return token


def _run_bench(args: argparse.Namespace) -> int:
    import importlib

    from .bench import BENCHMARKS
    from .bench.report import print_table, write_report

    if args.name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {args.name!r}; valid: {', '.join(BENCHMARKS)}")
    from completion.models import resolve_model

    bench = importlib.import_module(f"{__package__}.bench.{args.name}")
    args.model = resolve_model(args.model, args.device)  # reports name the model that ran
    result = bench.run_bench(args)
    print_table(result.rows, result.columns)
    print()
    for key, value in result.summary.items():
        print(f"{key:>45}  {value}")
    json_path, png_path = write_report(
        result.name or args.name, Path(args.out), result.summary, result.rows, result.machine, result.plot
    )
    print(f"\nwrote {json_path} and {png_path}")
    return 0


def _run_models(args: argparse.Namespace) -> int:
    from completion.embedded import EMBEDDED_MODELS, cache_dir, cached_dtypes, is_installed
    from completion.models import choose_for_device

    choice = choose_for_device(args.device)
    rows = [
        {
            "name": m.name,
            "default": m.name == choice.name,
            "why": choice.reason if m.name == choice.name else "",
            "installed": is_installed(m),
            "cached": cached_dtypes(m),
            "size_mb": round(m.size / 1e6),
            "cache_dir": str(cache_dir(m).parent),
            "description": m.description,
            "install": m.install_hint,
        }
        for m in EMBEDDED_MODELS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22} {'installed':<10} {'cached':<18} {'GGUF MB':>8}  description")
    for row in rows:
        mark = " *" if row["default"] else ""
        print(
            f"{row['name'] + mark:<22} {'yes' if row['installed'] else 'no':<10} "
            f"{','.join(row['cached']) or 'no':<18} {row['size_mb']:>8}  {row['description']}"
        )
    print(f"* default here (--model auto, --device {args.device}): {choice.reason}")
    for row in rows:
        if not row["installed"]:
            print(f"to install {row['name']}: {row['install']}")
    return 0


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # transformers reads these when it is imported (by the commands that load a model; importing
    # it here cost every command, `search` through a running server too, 1.2 s).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        if not verbose:
            transformers.utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    from completion.embedded import ModelUnavailableError

    args = _build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.run(args)
    except (ValueError, ModelUnavailableError, OSError) as error:
        logger.debug("command failed", exc_info=True)
        print(f"codeassist: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
