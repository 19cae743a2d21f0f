"""`codeassist bench vscode`: latency as a VS Code user feels it, from the keystroke in the
browser to the ghost text on screen, with the embedded model.

A real VS Code (code-server, headless Chromium, the packaged extension; see
codeassist/bench/code_server.py) opens a copy of a standard-library module (code none of us
wrote) whose lines of code were cut short at a few places. At each place the user types the
rest back one character at a time and, after each keystroke, waits until a suggestion is on
screen (at most TIMEOUT_S: then it counts as none). A keystroke that types the suggestion's
next character shows the rest at once ("kept"); the others wait for the server ("new").
"""

from __future__ import annotations

import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from .code_server import CodeServer, Workbench, install_tools
from .report import BenchResult, machine_info

MODULE = "json/decoder.py"
TIMEOUT_S = 30.0
CHARS_PER_PLACE = 10
GHOST_CHANGED = """([before]) => {
  const parts = [...document.querySelectorAll('.monaco-editor.focused .ghost-text-decoration')];
  const text = parts.map((part) => part.textContent).join('').replace(/\\u00a0/g, ' ');
  return text && text !== before ? text : null;
}"""


def run_bench(args) -> BenchResult:
    from playwright.sync_api import sync_playwright
    from retrieval import IndexConfig

    keystrokes = args.keystrokes or (10 if args.quick else 30)
    tools = install_tools()
    source = (Path(sysconfig.get_paths()["stdlib"]) / MODULE).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as scratch:
        workspace = Path(scratch) / "json_copy"
        places, damaged = _cut_lines(source, -(-keystrokes // CHARS_PER_PLACE))
        (workspace / "json").mkdir(parents=True)
        (workspace / "json" / "decoder.py").write_text(damaged)
        server = CodeServer(tools, workspace, Path(scratch) / "vscode", {
            "codeassist.serverCommand": [sys.executable, "-m", "codeassist", "serve"],
            "codeassist.model": args.model, "codeassist.device": args.device, "codeassist.dtype": args.dtype})
        server.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=tools.chromium)
                workbench = Workbench(browser.new_page(viewport={"width": 1280, "height": 800}), server.port)
                workbench.load(server.url)
                workbench.open_file("json/decoder.py")
                workbench.wait_status(r"codeassist: (ready|\d+ ms)", 600)
                rows = _type(workbench, places, keystrokes)
                browser.close()
        finally:
            server.stop()
            index_folder = IndexConfig().folder_for(workspace.resolve())
            shutil.rmtree(index_folder, ignore_errors=True)
    machine = {**machine_info(), "model": args.model, "editor": "code-server 4.139.1 (VS Code 1.139), chromium"}
    return BenchResult(_summary(rows), rows, ["keystroke", "line", "typed", "kind", "ms", "ghost"], machine,
                       lambda figure: _plot(figure, rows))


def _cut_lines(source: str, count: int) -> tuple[list[tuple[int, int, str]], str]:
    """`count` lines of code spread over the module, each cut CHARS_PER_PLACE characters
    short: [(1-based line, characters left on it, the cut text)] and the cut module."""
    lines = source.split("\n")
    candidates = [n for n, line in enumerate(lines)
                  if len(line.strip()) > CHARS_PER_PLACE + 8 and not line.strip().startswith(("#", '"', "'"))
                  and "\t" not in line]
    step = max(len(candidates) // (count + 1), 1)
    chosen = [candidates[step * (k + 1)] for k in range(count) if step * (k + 1) < len(candidates)]
    places = []
    for number in chosen:
        places.append((number + 1, len(lines[number]) - CHARS_PER_PLACE, lines[number][-CHARS_PER_PLACE:]))
        lines[number] = lines[number][:-CHARS_PER_PLACE]
    return places, "\n".join(lines)


def _type(workbench: Workbench, places: list[tuple[int, int, str]], keystrokes: int) -> list[dict]:
    page = workbench.page
    rows: list[dict] = []
    for line, left, text in places:
        page.keyboard.press("Control+g")
        page.keyboard.type(str(line))
        page.keyboard.press("Enter")
        page.keyboard.press("End")
        workbench.wait_cursor((line, left + 1), 10)
        for char in text:
            if len(rows) == keystrokes:
                return rows
            before = workbench.ghost_text()
            started = time.perf_counter()
            page.keyboard.type(char)
            try:
                shown = page.wait_for_function(GHOST_CHANGED, arg=[before], polling="raf",
                                               timeout=TIMEOUT_S * 1000).json_value()
                ms = round((time.perf_counter() - started) * 1000, 1)
            except Exception:  # Playwright's timeout: no suggestion for this keystroke
                shown, ms = "", None
            kind = "none" if ms is None else "kept" if before and shown == before[1:] else "new"
            rows.append({"keystroke": len(rows) + 1, "line": line, "typed": char, "kind": kind, "ms": ms,
                         "ghost": shown[:40]})
    return rows


def _summary(rows: list[dict]) -> dict:
    times = sorted(r["ms"] for r in rows if r["ms"] is not None)
    new = sorted(r["ms"] for r in rows if r["kind"] == "new")
    summary: dict = {"keystrokes": len(rows), "with_suggestion": len(times),
                     "kept_while_typing": sum(1 for r in rows if r["kind"] == "kept")}
    if times:
        summary["p50_ms"] = round(statistics.median(times), 1)
        summary["p95_ms"] = round(times[min(len(times) - 1, int(0.95 * len(times)))], 1)
    if new:
        summary["p50_new_ms"] = round(statistics.median(new), 1)
        summary["p95_new_ms"] = round(new[min(len(new) - 1, int(0.95 * len(new)))], 1)
    if rows and rows[0]["ms"] is not None:
        summary["first_keystroke_ms"] = rows[0]["ms"]
    return summary


def _plot(figure, rows: list[dict]) -> None:
    axes = figure.subplots()
    colours = {"kept": "tab:green", "new": "tab:blue", "none": "tab:gray"}
    for kind, colour in colours.items():
        points = [(r["keystroke"], r["ms"] if r["ms"] is not None else TIMEOUT_S * 1000)
                  for r in rows if r["kind"] == kind]
        if points:
            axes.bar(*zip(*points), color=colour, label={"kept": "typed into the suggestion",
                                                         "new": "new suggestion", "none": "none shown"}[kind])
    axes.set_yscale("log")
    axes.set_xlabel("keystroke")
    axes.set_ylabel("keystroke to ghost text on screen (ms)")
    axes.set_title("VS Code (code-server + chromium), embedded model")
    axes.legend()
