"""Benchmarks as commands: `codeassist bench NAME [--out DIR] [--quick]`."""

__all__ = ["BENCHMARKS"]

BENCHMARKS = ("edits", "search", "speculative", "context", "decode", "engines", "soak", "vscode", "memory", "session",
              "quality", "preemption")
