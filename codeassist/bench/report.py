"""Benchmark output: a table on stdout, NAME.json (summary, rows, machine) and NAME.png."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class BenchResult:
    """What a benchmark module's `run_bench(args)` returns to the CLI."""

    summary: dict[str, Any]  # flat headline numbers, named plainly
    rows: list[dict]  # every measurement
    columns: list[str]  # the row keys printed in the table
    machine: dict[str, Any]  # machine_info(...)
    plot: Callable[[Any], None]  # draws into a matplotlib figure
    name: str | None = None  # the files' name when not the benchmark's (e.g. another model's run)


def machine_info(loaded=None) -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if loaded is not None:
        info.update(model=loaded.name, device=str(loaded.device), dtype=loaded.dtype_name)
    return info


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).rjust(widths[c]) for c in columns))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    return "" if value is None else str(value)


def write_report(name: str, out_dir: Path, summary: dict, rows: list[dict], machine: dict,
                 plot: Callable[[Any], None]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps({"summary": summary, "rows": rows, "machine": machine}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(11, 4.5))
    plot(figure)
    figure.tight_layout()
    png_path = out_dir / f"{name}.png"
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
    return json_path, png_path
