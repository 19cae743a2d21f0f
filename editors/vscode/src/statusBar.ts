// The status-bar item: what the server is doing (starting, loading the model, indexing,
// ready, failed) and the latency of the last suggestion. Click: the status command.
import * as vscode from "vscode";

import type { ServerStatus } from "./extension";

const POLL_BUSY_MS = 1000; // while the model loads or the workspace is indexed
const POLL_READY_MS = 5000; // a settings change may reload the model later

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private timer: NodeJS.Timeout | undefined;
  private since = Date.now();
  private lastState = "";
  private lastLatency = "";

  constructor(command: string) {
    this.item = vscode.window.createStatusBarItem("codeassist.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "codeassist";
    this.item.command = command;
    this.item.show();
  }

  starting(): void {
    this.show("starting", "$(loading~spin) codeassist: starting", "Starting codeassist serve");
  }

  /** The server is gone (no more polling). */
  failed(reason: string): void {
    this.stop();
    this.showFailed(reason);
  }

  /** A suggestion came back after `ms` (empty or not). */
  answered(ms: number, shown: boolean): void {
    this.lastLatency = `${ms} ms${shown ? "" : ", nothing to suggest"}`;
    if (this.lastState === "ready") {
      this.show("ready", `$(check) codeassist: ${ms} ms`, `codeassist: ready. Last suggestion: ${this.lastLatency}`);
    }
  }

  /** Poll the server's status until stopped. */
  watch(poll: () => Promise<ServerStatus | undefined>): void {
    this.stop();
    const tick = async () => {
      let status: ServerStatus | undefined;
      try {
        status = await poll();
      } catch {
        status = undefined; // a request failed while the server restarts: try again later
      }
      if (status) {
        this.render(status);
      }
      const busy = !status || status.modelStatus === "loading" || status.indexStatus === "indexing";
      this.timer = setTimeout(tick, busy ? POLL_BUSY_MS : POLL_READY_MS);
    };
    this.timer = setTimeout(tick, 0);
  }

  stop(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  dispose(): void {
    this.stop();
    this.item.dispose();
  }

  private render(status: ServerStatus): void {
    const model = status.model ?? "the model";
    if (status.modelStatus === "loading") {
      const seconds = Math.round((Date.now() - this.since) / 1000);
      this.show("loading", `$(loading~spin) codeassist: loading model ${seconds} s`, `Loading ${model}`);
    } else if (status.modelStatus === "failed") {
      this.showFailed("model failed to load"); // a settings change may load another one
    } else if (status.indexStatus === "indexing") {
      this.show("indexing", "$(sync~spin) codeassist: indexing", `${model} is ready; indexing the workspace for search`);
    } else if (status.modelStatus === "ready") {
      const text = this.lastLatency ? `$(check) codeassist: ${this.lastLatency.split(",")[0]}` : "$(check) codeassist: ready";
      const latency = this.lastLatency ? ` Last suggestion: ${this.lastLatency}` : "";
      this.show("ready", text, `codeassist: ${model} ready; index ${status.indexStatus}.${latency}`);
    }
  }

  private showFailed(reason: string): void {
    this.show("failed", `$(error) codeassist: ${reason}`, `codeassist: ${reason}. Click for the status; see the log.`);
    this.item.backgroundColor = new vscode.ThemeColor("statusBarItem.errorBackground");
  }

  private show(state: string, text: string, tooltip: string): void {
    if (state !== this.lastState) {
      this.since = Date.now();
      this.lastState = state;
      this.item.backgroundColor = undefined;
    }
    this.item.text = text;
    this.item.tooltip = tooltip;
  }
}
