// codeassist for VS Code: a thin client of `codeassist serve`.
//
// Ghost text comes from VS Code's own inline-completion UI: vscode-languageclient 10 wires
// the server's `textDocument/inlineCompletion` to it. Hover and workspace symbols are plain
// LSP too. This file adds the server's settings, a status-bar item, a status command, a
// search command that opens what the code index finds, and a restart that always works.
import * as fs from "fs";
import * as path from "path";
import * as vscode from "vscode";
import {
  ExecuteCommandRequest, LanguageClient, LanguageClientOptions, RevealOutputChannelOn, ServerOptions, State,
} from "vscode-languageclient/node";

import { StatusBar } from "./statusBar";

// Settings of this extension only; every other `codeassist.*` setting goes to the server.
const CLIENT_ONLY = new Set(["serverCommand", "languages"]);
const SERVER_LOG_LEVEL = /^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) /;

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;
let statusBar: StatusBar;
let restarting: Promise<void> = Promise.resolve();

/** The server's settings: the declared settings without client-only keys or empty names. */
function serverSettings(section: { [key: string]: unknown }): { [key: string]: unknown } {
  const settings: { [key: string]: unknown } = {};
  for (const [key, value] of Object.entries(section)) {
    if (CLIENT_ONLY.has(key) || typeof value === "function" || value === null || value === undefined) {
      continue;
    }
    if (key === "model" && value === "") {
      continue; // the server's default model
    }
    settings[key] = value;
  }
  return settings;
}

/** The settings this extension declares (package.json), without the `codeassist.` prefix. */
let declaredSettings: string[] = [];

/** The declared `codeassist.*` settings only, each as VS Code resolves it: a key a workspace
 * writes without it being declared never reaches the server, and settings declared with
 * machine scope come from the user's settings, never from the workspace's. */
function configuration(): { [key: string]: unknown } {
  const section = vscode.workspace.getConfiguration("codeassist");
  for (const key of Object.keys(section)) {
    const member = (section as unknown as { [name: string]: unknown })[key];
    if (typeof member !== "function" && !declaredSettings.includes(key)) {
      output.warn(`unknown setting codeassist.${key} ignored (not sent to the server)`);
    }
  }
  const plain: { [key: string]: unknown } = {};
  for (const key of declaredSettings) {
    const value = section.get(key);
    if (value !== undefined && typeof value !== "function") {
      plain[key] = value;
    }
  }
  return plain;
}

/** The full path of `command` (a path, or a name looked up on PATH), or undefined. */
function findExecutable(command: string): string | undefined {
  const executable = (file: string) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return fs.statSync(file).isFile();
    } catch {
      return false;
    }
  };
  if (command.includes("/") || command.includes("\\")) {
    const resolved = command.startsWith("~") ? path.join(process.env.HOME ?? "", command.slice(1)) : command;
    return executable(resolved) ? resolved : undefined;
  }
  const suffixes = process.platform === "win32" ? [".exe", ".cmd", ""] : [""];
  for (const folder of (process.env.PATH ?? "").split(path.delimiter)) {
    for (const suffix of suffixes) {
      const candidate = path.join(folder, command + suffix);
      if (folder && executable(candidate)) {
        return candidate;
      }
    }
  }
  return undefined;
}

/** One message, with a one-click fix, when the server's command is not there. */
async function offerServerCommandFix(command: string[]): Promise<void> {
  const choose = "Choose the codeassist script…";
  const settings = "Open Settings";
  const picked = await vscode.window.showErrorMessage(
    `codeassist: the server command "${command[0]}" was not found. Install codeassist (pip install -e . ` +
    `in its checkout) or point "codeassist.serverCommand" at the codeassist script of its virtual environment.`,
    choose, settings);
  if (picked === choose) {
    const files = await vscode.window.showOpenDialog({
      canSelectMany: false, openLabel: "Use this codeassist", title: "The codeassist script (VENV/bin/codeassist)",
    });
    if (files && files.length > 0) {
      // Changing the setting restarts the server (onDidChangeConfiguration).
      await vscode.workspace.getConfiguration("codeassist").update(
        "serverCommand", [files[0].fsPath, "serve"], vscode.ConfigurationTarget.Global);
    }
  } else if (picked === settings) {
    await vscode.commands.executeCommand("workbench.action.openSettings", "codeassist.serverCommand");
  }
}

/** Server log lines go to the output channel at their own level (stderr is not an error). */
function pipeServerLog(input: NodeJS.ReadableStream, channel: vscode.OutputChannel): void {
  const log = channel as vscode.LogOutputChannel;
  let level = "INFO";
  let pending = "";
  input.on("data", (chunk: Buffer | string) => {
    pending += chunk.toString();
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) {
      level = SERVER_LOG_LEVEL.exec(line)?.[1] ?? level; // a traceback keeps its record's level
      if (level === "ERROR" || level === "CRITICAL") {
        log.error(line);
      } else if (level === "WARNING") {
        log.warn(line);
      } else if (level === "DEBUG") {
        log.debug(line);
      } else {
        log.info(line);
      }
    }
  });
}

async function startClient(): Promise<void> {
  const config = configuration();
  const command = (config.serverCommand as string[] | undefined) ?? ["codeassist", "serve"];
  const languages = (config.languages as string[] | undefined) ?? ["python"];
  const executable = command.length > 0 ? findExecutable(command[0]) : undefined;
  if (executable === undefined) {
    statusBar.failed("server command not found");
    output.error(`the server command ${JSON.stringify(command)} was not found`);
    void offerServerCommandFix(command);
    return;
  }
  const serverOptions: ServerOptions = { command: executable, args: command.slice(1) };
  const clientOptions: LanguageClientOptions = {
    documentSelector: languages.map((language) => ({ scheme: "file", language })),
    initializationOptions: serverSettings(config),
    outputChannel: output,
    revealOutputChannelOn: RevealOutputChannelOn.Never,
    stdioOptions: { stdout: pipeServerLog, stderr: pipeServerLog }, // stdout: only off stdio transports
    middleware: {
      // VS Code asks for menu items and ghost text on the same keystroke; the ghost text is the
      // suggestion, so the menu is left to the language's own extension.
      provideCompletionItem: () => undefined,
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        const started = Date.now();
        const result = await next(document, position, context, token);
        if (!token.isCancellationRequested) {
          const items = Array.isArray(result) ? result : result?.items ?? [];
          statusBar.answered(Date.now() - started, items.length > 0);
        }
        return result;
      },
    },
  };
  const started = new LanguageClient("codeassist", "codeassist", serverOptions, clientOptions);
  client = started;
  started.onDidChangeState((event) => {
    if (event.newState === State.Stopped && client === started) {
      statusBar.failed("server stopped");
    }
  });
  statusBar.starting();
  try {
    await started.start();
  } catch (error: unknown) {
    statusBar.failed("could not start");
    output.error(`could not start ${command.join(" ")}: ${error}`);
    const showLog = "Show Log";
    if (await vscode.window.showErrorMessage(`codeassist: the server did not start (${command.join(" ")}).`,
      showLog) === showLog) {
      output.show(true);
    }
    return;
  }
  statusBar.watch(() => serverStatus(started));
}

async function serverStatus(from: LanguageClient): Promise<ServerStatus | undefined> {
  if (client !== from || !from.isRunning()) {
    return undefined;
  }
  return (await from.sendRequest(ExecuteCommandRequest.type, { command: "codeassist.status", arguments: [] })) as
    ServerStatus;
}

/** Stop the present client whatever its state (a failed start cannot be stopped), then start. */
function restart(): Promise<void> {
  restarting = restarting.then(async () => {
    const old = client;
    client = undefined;
    statusBar.stop();
    if (old) {
      try {
        if (old.isRunning()) {
          await old.stop(5000);
        }
        await old.dispose(1000);
      } catch (error: unknown) {
        output.info(`the previous server was not running: ${error}`);
      }
    }
    await startClient();
  });
  return restarting;
}

async function showStatus(): Promise<void> {
  const status = client ? await serverStatus(client).catch(() => undefined) : undefined;
  if (!status) {
    output.show(true);
    void vscode.window.showWarningMessage("codeassist: the server is not running; see its log.");
    return;
  }
  output.info(`server status:\n${JSON.stringify(status, null, 2)}`);
  output.show(true);
}

interface SearchHit {
  uri: string;
  range: { start: { line: number; character: number }; end: { line: number; character: number } };
  symbol: string;
  kind: string;
  score: number;
  snippet: string;
}

async function search(): Promise<void> {
  const running = client;
  if (!running || !running.isRunning()) {
    void vscode.window.showWarningMessage("codeassist: the server is not running.");
    return;
  }
  const query = await vscode.window.showInputBox({ prompt: "codeassist: search the workspace by meaning" });
  if (!query) {
    return;
  }
  const hits = (await running.sendRequest(ExecuteCommandRequest.type, {
    command: "codeassist.search", arguments: [{ query, k: 20 }],
  })) as SearchHit[] | null;
  if (!hits || hits.length === 0) {
    void vscode.window.showInformationMessage(`codeassist: nothing found for "${query}"`);
    return;
  }
  const items = hits.map((hit) => ({
    label: hit.symbol || vscode.Uri.parse(hit.uri).path.split("/").pop() || hit.uri,
    description: `${vscode.workspace.asRelativePath(vscode.Uri.parse(hit.uri))}:${hit.range.start.line + 1}`,
    detail: (hit.snippet || "").split("\n").find((line) => line.trim())?.trim() ?? "",
    hit,
  }));
  const chosen = await vscode.window.showQuickPick(items, {
    matchOnDescription: true, matchOnDetail: true, title: `codeassist: "${query}"`,
  });
  if (chosen) {
    const start = new vscode.Position(chosen.hit.range.start.line, 0);
    await vscode.window.showTextDocument(vscode.Uri.parse(chosen.hit.uri), { selection: new vscode.Range(start, start) });
  }
}

export interface ServerStatus {
  modelStatus: string;
  indexStatus: string;
  model: string | null;
}

export function activate(context: vscode.ExtensionContext): void {
  const properties = context.extension.packageJSON?.contributes?.configuration?.properties ?? {};
  declaredSettings = Object.keys(properties).map((key) => key.replace(/^codeassist\./, ""));
  output = vscode.window.createOutputChannel("codeassist", { log: true });
  statusBar = new StatusBar("codeassist.showStatus");
  void restart();
  context.subscriptions.push(
    output,
    statusBar,
    // Client command ids must differ from the server's executeCommand ids: vscode-languageclient
    // registers a VS Code command for each of those, and a clash stops the client from starting.
    vscode.commands.registerCommand("codeassist.showStatus", showStatus),
    vscode.commands.registerCommand("codeassist.searchCode", search),
    vscode.commands.registerCommand("codeassist.restartServer", restart),
    vscode.commands.registerCommand("codeassist.showLog", () => output.show(true)),
    vscode.commands.registerCommand("codeassist.acceptWord",
      () => vscode.commands.executeCommand("editor.action.inlineSuggest.acceptNextWord")),
    vscode.commands.registerCommand("codeassist.acceptLine",
      () => vscode.commands.executeCommand("editor.action.inlineSuggest.acceptNextLine")),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration("codeassist")) {
        return;
      }
      const running = client;
      if (event.affectsConfiguration("codeassist.serverCommand") || event.affectsConfiguration("codeassist.languages")
          || !running || !running.isRunning()) {
        await restart();
        return;
      }
      // The server reloads the model or reopens the index itself when those settings change.
      await running.sendNotification("workspace/didChangeConfiguration", { settings: serverSettings(configuration()) });
    }),
  );
}

export async function deactivate(): Promise<void> {
  statusBar?.stop();
  await client?.stop(5000).catch(() => undefined);
}
