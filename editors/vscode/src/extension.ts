// codeassist for VS Code: a thin client of `codeassist serve`.
//
// Ghost text comes from VS Code's own inline-completion UI: vscode-languageclient 10 wires
// the server's `textDocument/inlineCompletion` to it. Hover, workspace symbols and menu
// completion are plain LSP too. This file adds the server's settings, a status command and
// a search command that opens what the code index finds.
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";

// Settings of this extension only; every other `codeassist.*` setting goes to the server.
const CLIENT_ONLY = new Set(["serverCommand", "languages"]);

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;

/** The server's settings: the `codeassist` section without client-only keys or empty names. */
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

function configuration(): { [key: string]: unknown } {
  const section = vscode.workspace.getConfiguration("codeassist");
  const plain: { [key: string]: unknown } = {};
  for (const key of Object.keys(section)) {
    const value = section.get(key);
    if (typeof value !== "function") {
      plain[key] = value;
    }
  }
  return plain;
}

function startClient(): LanguageClient {
  const config = configuration();
  const command = (config.serverCommand as string[] | undefined) ?? ["codeassist", "serve"];
  const languages = (config.languages as string[] | undefined) ?? ["python"];
  const serverOptions: ServerOptions = { command: command[0], args: command.slice(1) };
  const clientOptions: LanguageClientOptions = {
    documentSelector: languages.map((language) => ({ scheme: "file", language })),
    initializationOptions: serverSettings(config),
    outputChannel: output,
  };
  const started = new LanguageClient("codeassist", "codeassist", serverOptions, clientOptions);
  started.start().catch((error: unknown) => {
    void vscode.window.showErrorMessage(
      `codeassist: could not start ${command.join(" ")}: ${error}. Set "codeassist.serverCommand".`);
  });
  return started;
}

async function showStatus(): Promise<void> {
  if (!client) {
    return;
  }
  const status = await client.sendRequest("workspace/executeCommand", { command: "codeassist.status", arguments: [] });
  output.appendLine(JSON.stringify(status, null, 2));
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
  if (!client) {
    return;
  }
  const query = await vscode.window.showInputBox({ prompt: "codeassist: search the workspace by meaning" });
  if (!query) {
    return;
  }
  const hits = (await client.sendRequest("workspace/executeCommand", {
    command: "codeassist.search", arguments: [{ query, k: 20 }],
  })) as SearchHit[] | null;
  if (!hits || hits.length === 0) {
    void vscode.window.showInformationMessage(`codeassist: nothing found for "${query}"`);
    return;
  }
  const items = hits.map((hit) => ({
    label: hit.symbol || vscode.Uri.parse(hit.uri).path.split("/").pop() || hit.uri,
    description: `${vscode.workspace.asRelativePath(vscode.Uri.parse(hit.uri))}:${hit.range.start.line + 1}`,
    detail: (hit.snippet || "").split("\n").find((line) => line.trim()) ?? "",
    hit,
  }));
  const chosen = await vscode.window.showQuickPick(items, { matchOnDescription: true, matchOnDetail: true });
  if (chosen) {
    const start = new vscode.Position(chosen.hit.range.start.line, 0);
    await vscode.window.showTextDocument(vscode.Uri.parse(chosen.hit.uri), { selection: new vscode.Range(start, start) });
  }
}

export function activate(context: vscode.ExtensionContext): void {
  output = vscode.window.createOutputChannel("codeassist", { log: true });
  client = startClient();
  context.subscriptions.push(
    output,
    // Client command ids must differ from the server's executeCommand ids: vscode-languageclient
    // registers a VS Code command for each of those, and a clash stops the client from starting.
    vscode.commands.registerCommand("codeassist.showStatus", showStatus),
    vscode.commands.registerCommand("codeassist.searchCode", search),
    vscode.commands.registerCommand("codeassist.restartServer", async () => {
      await client?.stop();
      client = startClient();
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration("codeassist") || !client) {
        return;
      }
      if (event.affectsConfiguration("codeassist.serverCommand") || event.affectsConfiguration("codeassist.languages")) {
        await client.stop();
        client = startClient();
        return;
      }
      // The server reloads the model or reopens the index itself when those settings change.
      await client.sendNotification("workspace/didChangeConfiguration", { settings: serverSettings(configuration()) });
    }),
  );
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
