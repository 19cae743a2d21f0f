"""`codeassist bench preemption`: how long a keystroke's request waits for the model while
background work runs in the engine host's lane 3.

One engine host (lsp_server/scheduler.py) with the real model and the real embedding
encoder, as `codeassist serve` has them. Phases, one after the other: idle; hover summaries
of the functions of a standard-library module (lsp_server/summaries.py, as the server queues
them for an opened file); the index's encoder batches over that module's chunks (as
lsp_server/search.py runs them). During each phase a request is submitted in lane 1 at
random moments; its wait is the time from its submission to the moment it starts on the
host (what a keystroke pays for the background work, on top of its own computation).
"""

from __future__ import annotations

import ast
import random
import statistics
import sysconfig
import threading
import time
from pathlib import Path

from .report import BenchResult, machine_info

SOURCE = Path("json") / "decoder.py"
PHASES = ("idle", "summaries", "index")


def run_bench(args) -> BenchResult:
    from completion import load_model
    from completion.summarize import Summarizer, SummaryRequest
    from completion.summary_cache import SummaryCache
    from lsp_server.scheduler import LatestWinsScheduler
    from lsp_server.search import ENCODER_BATCH, ENCODER_BATCH_TOKENS, IndexingStopped, encode_in_background
    from lsp_server.summaries import BACKGROUND, SummaryWorker
    from retrieval.encoder import load_encoder

    probes = 10 if args.quick else 40
    text = (Path(sysconfig.get_paths()["stdlib"]) / SOURCE).read_text(encoding="utf-8")
    functions = [ast.get_source_segment(text, node) for node in ast.walk(ast.parse(text))
                 if isinstance(node, ast.FunctionDef)]
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    encoder = load_encoder(threads=1)
    host = LatestWinsScheduler()
    rows: list[dict] = []
    written = 0  # summaries finished during their phase
    try:
        for phase in PHASES:
            stop = threading.Event()
            if phase == "summaries":
                worker = SummaryWorker(host)
                summarizer = Summarizer(loaded)
                for number, code in enumerate(functions * 4):  # more than the phase can finish
                    request = SummaryRequest(f"f{number}", "function", code, "", "python")
                    worker.submit(str(number), lambda request=request: (request.key(loaded.name), request),
                                  summarizer, SummaryCache(), BACKGROUND)
            elif phase == "index":
                def encode_forever() -> None:
                    encoder.batch_tokens = ENCODER_BATCH_TOKENS  # as the server's index encodes
                    names = [code.split("\n", 1)[0] for code in functions]  # short texts, as names are
                    try:
                        while not stop.is_set():  # the module's functions and their names, round and round
                            encoder.encode(functions + names, ENCODER_BATCH, None,
                                           lambda batch: encode_in_background(host, encoder.model, batch))
                    except IndexingStopped:  # the host closed
                        return

                threading.Thread(target=encode_forever, daemon=True).start()
            time.sleep(2.0)  # the background work is under way
            generator = random.Random(5)
            for probe in range(probes):
                time.sleep(generator.uniform(0.3, 1.2))
                submitted = time.perf_counter()
                started = host.submit(f"probe-{phase}", lambda cancelled: time.perf_counter()).future.result(60)
                rows.append({"phase": phase, "probe": probe, "wait_ms": round((started - submitted) * 1000, 2)})
            stop.set()
            if phase == "summaries":
                worker.close()
                written = worker.generated
            host.submit("drain", lambda cancelled: None).future.result(120)
    finally:
        host.close()
    summary = _summary(rows)
    summary["summaries_written_during_the_phase"] = written
    machine = {**machine_info(loaded), "file": str(SOURCE), "probes_per_phase": probes}
    return BenchResult(summary, rows, ["phase", "probe", "wait_ms"], machine, _plot(rows))


def _summary(rows: list[dict]) -> dict:
    summary = {}
    for phase in PHASES:
        waits = sorted(r["wait_ms"] for r in rows if r["phase"] == phase)
        summary[f"{phase}_wait_p50_ms"] = round(statistics.median(waits), 2)
        summary[f"{phase}_wait_p95_ms"] = round(waits[int(0.95 * (len(waits) - 1))], 2)
        summary[f"{phase}_wait_max_ms"] = round(waits[-1], 2)
    return summary


def _plot(rows: list[dict]):
    def draw(figure) -> None:
        axis = figure.subplots()
        axis.boxplot([[r["wait_ms"] for r in rows if r["phase"] == phase] for phase in PHASES],
                     tick_labels=list(PHASES))
        axis.set_ylabel("request's wait for the model (ms)")
        axis.set_title("lane 1 behind background work (lane 3)")

    return draw
