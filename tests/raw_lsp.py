"""The real `codeassist serve` process with a tiny model, spoken to in raw LSP."""

from __future__ import annotations

from codeassist.bench.lsp_process import LspProcess, frame, notification, request

__all__ = ["RawClient", "frame", "notification", "request"]


class RawClient(LspProcess):
    def __init__(self, model_dir, log_dir):
        super().__init__(log_dir / "server.log", ["--model", str(model_dir), "--device", "cpu", "--dtype", "fp32"])
