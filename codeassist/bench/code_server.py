"""A real VS Code driven like a person: code-server (VS Code in a server process) with the
packaged extension installed, in headless Chromium driven by Playwright. The VS Code tests
and `codeassist bench vscode` use it. The tools come from editors/vscode/install_e2e_tools.sh
(installed once, outside the repository); Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / "editors" / "vscode" / "install_e2e_tools.sh"
# What a new user's VS Code would ask a person about, or fetch from the internet, turned off;
# and editor help that would change what typed keys produce (brackets, word suggestions).
QUIET_SETTINGS = {
    "workbench.startupEditor": "none", "workbench.tips.enabled": False,
    "workbench.secondarySideBar.defaultVisibility": "hidden", "chat.disableAIFeatures": True,
    "telemetry.telemetryLevel": "off", "security.workspace.trust.enabled": False,
    "extensions.autoCheckUpdates": False, "extensions.autoUpdate": False, "update.mode": "none",
    "editor.inlineSuggest.enabled": True, "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
    "editor.suggestOnTriggerCharacters": False, "editor.wordBasedSuggestions": "off",
    "editor.autoClosingBrackets": "never", "editor.autoClosingQuotes": "never", "editor.autoIndent": "none",
    "editor.autoSurround": "never", "editor.formatOnType": False, "files.insertFinalNewline": False,
    "files.trimTrailingWhitespace": False, "editor.hover.delay": 300, "git.enabled": False,
}


class ToolsUnavailable(RuntimeError):
    """The install script failed; its message says why."""


@dataclass(frozen=True)
class Tools:
    node: str
    code_server: str  # code-server's entry script, run with `node`
    chromium: str
    vsix: str  # the extension, packaged from editors/vscode


def install_tools() -> Tools:
    """Run the install script (idempotent; minutes the first time, seconds after)."""
    try:
        run = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ToolsUnavailable(f"{INSTALL_SCRIPT.name} could not run: {error}") from error
    if run.returncode != 0:
        raise ToolsUnavailable(f"{INSTALL_SCRIPT.name} failed: {run.stderr[-1500:]}")
    found = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
    return Tools(found["CODEASSIST_NODE"], found["CODEASSIST_CODE_SERVER"], found["CODEASSIST_CHROMIUM"],
                 found["CODEASSIST_VSIX"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CodeServer:
    """code-server on a loopback port with its own user data, extensions and settings."""

    def __init__(self, tools: Tools, workspace: Path, scratch: Path, settings: dict, env: dict | None = None,
                 workspace_trust: bool = False):
        """`workspace_trust`: VS Code's Workspace Trust on, the folder left untrusted (restricted
        mode, no prompt); off by default, as a user who trusts the folder has it."""
        self.tools, self.workspace, self.scratch = tools, workspace, scratch
        self.workspace_trust = workspace_trust
        self.user_data = scratch / "user-data"
        self.extensions = scratch / "extensions"
        self.port = _free_port()
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(scratch / "xdg-config"),
                    "XDG_DATA_HOME": str(scratch / "xdg-data"),
                    # A gallery on a dead loopback port: nothing is fetched from the internet.
                    "EXTENSIONS_GALLERY": json.dumps({"serviceUrl": "http://127.0.0.1:9/gallery",
                                                      "itemUrl": "http://127.0.0.1:9/item"}),
                    **(env or {})}
        self.write_settings(settings)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?folder={self.workspace}"

    def write_settings(self, settings: dict) -> None:
        """The user's settings (VS Code reloads them when the file changes), in the user's
        file and in the machine's: code-server is VS Code's remote setup, where settings of
        `machine` scope (the extension's server command, models, engine) are read from the
        machine's file only."""
        trust = ({"security.workspace.trust.enabled": True, "security.workspace.trust.startupPrompt": "never",
                  "security.workspace.trust.banner": "never"} if self.workspace_trust else {})
        for kind in ("User", "Machine"):
            folder = self.user_data / kind
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "settings.json").write_text(json.dumps({**QUIET_SETTINGS, **trust, **settings}, indent=1))

    def start(self) -> None:
        installed = subprocess.run(
            [self.tools.node, self.tools.code_server, "--install-extension", self.tools.vsix, "--force",
             "--extensions-dir", str(self.extensions), "--user-data-dir", str(self.user_data)],
            env=self.env, capture_output=True, text=True, timeout=300)
        if installed.returncode != 0:
            raise RuntimeError(f"code-server could not install the extension: {installed.stderr[-1000:]}")
        log = open(self.scratch / "code-server.log", "w")
        self.process = subprocess.Popen(
            [self.tools.node, self.tools.code_server, "--bind-addr", f"127.0.0.1:{self.port}", "--auth", "none",
             "--disable-telemetry", "--disable-update-check",
             *([] if self.workspace_trust else ["--disable-workspace-trust"]),
             "--reconnection-grace-time", "5", "--user-data-dir", str(self.user_data),
             "--extensions-dir", str(self.extensions), str(self.workspace)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"code-server exited: {(self.scratch / 'code-server.log').read_text()[-1000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("code-server did not listen within 120 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def extension_log(self) -> str:
        """The extension's output channel ("codeassist"), as VS Code wrote it to disk."""
        logs = sorted(self.user_data.glob("logs/*/exthost*/codeassist.codeassist/codeassist.log"))
        return "\n".join(path.read_text(errors="replace") for path in logs)


class Workbench:
    """The VS Code page in the browser, used through the keyboard and the mouse."""

    def __init__(self, page, port: int):
        self.page = page
        # Only code-server itself may be reached from the page.
        page.route("**/*", lambda route: route.continue_()
                   if route.request.url.startswith(f"http://127.0.0.1:{port}/") else route.abort())

    def load(self, url: str, timeout_s: float = 120) -> None:
        self.page.goto(url)
        self.page.wait_for_selector(".monaco-workbench .part.statusbar", timeout=timeout_s * 1000)

    def open_file(self, relative: str, timeout_s: float = 60) -> None:
        """Quick Open (Ctrl+P), the file's name, Enter; waits until its editor has focus."""
        self.page.keyboard.press("Control+p")
        self.page.keyboard.type(relative)
        self.page.locator(".quick-input-list .monaco-list-row", has_text=Path(relative).name).first.wait_for(
            timeout=timeout_s * 1000)
        self.page.keyboard.press("Enter")
        self.page.locator(f".tab.active[data-resource-name='{Path(relative).name}']").wait_for(timeout=timeout_s * 1000)
        self.page.locator(".monaco-editor.focused").wait_for(timeout=timeout_s * 1000)

    def run_command(self, title: str) -> None:
        """The command palette (F1), the command's title, Enter."""
        self.page.keyboard.press("F1")
        self.page.locator(".quick-input-widget input").wait_for()
        self.page.keyboard.type(title)
        self.page.locator(".quick-input-list .monaco-list-row", has_text=title).first.wait_for(timeout=30_000)
        self.page.keyboard.press("Enter")

    def search_by_meaning(self, query: str, symbol: str, timeout_s: float = 60):
        """"codeassist: Search Code by Meaning" for `query`; the quick pick's row of `symbol`."""
        self.run_command("codeassist: Search Code by Meaning")
        self.page.locator(".quick-input-widget", has_text="search the workspace by meaning").wait_for()
        self.page.keyboard.type(query)
        self.page.keyboard.press("Enter")
        row = self.page.locator(".quick-input-list .monaco-list-row", has_text=symbol).first
        row.wait_for(timeout=timeout_s * 1000)
        return row

    def status_item(self) -> str:
        """The codeassist status-bar item's text ("" when it is not shown)."""
        texts = self.page.locator(".statusbar-item").all_inner_texts()
        return next((text.strip() for text in texts if "codeassist" in text), "")

    def wait_status(self, pattern: str, timeout_s: float = 300) -> str:
        """Wait until the status item's text matches `pattern` (a regex); returns the text."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.status_item()
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"the status item says {text!r}, never matched {pattern!r}")
            time.sleep(0.2)

    def ghost_text(self) -> str:
        """The inline suggestion's text on the cursor's line (editor spaces made plain)."""
        parts = self.page.locator(".monaco-editor.focused .ghost-text-decoration").all_inner_texts()
        return "".join(parts).replace("\u00a0", " ")

    def wait_ghost_text(self, timeout_s: float = 60, want: str | None = None, prefix: str = "") -> str:
        """The ghost text once one is shown (or once it equals `want`, or starts with
        `prefix`); the last one seen when the time is up and one was shown."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.ghost_text()
            if text and (want is None or text == want) and text.startswith(prefix):
                return text
            if time.monotonic() > deadline:
                if text:
                    return text
                raise TimeoutError("no ghost text appeared")
            time.sleep(0.02)

    def wait_no_ghost_text(self, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while self.ghost_text():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the ghost text stayed: {self.ghost_text()!r}")
            time.sleep(0.02)

    def cursor_position(self) -> tuple[int, int]:
        """(line, column), 1-based, from the status bar's "Ln L, Col C"."""
        for text in self.page.locator(".statusbar-item").all_inner_texts():
            found = re.search(r"Ln (\d+), Col (\d+)", text)
            if found:
                return int(found.group(1)), int(found.group(2))
        raise LookupError("no cursor position in the status bar")

    def wait_cursor(self, position: tuple[int, int], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while self.cursor_position() != position:
            if time.monotonic() > deadline:
                raise AssertionError(f"the cursor is at {self.cursor_position()}, not {position}")
            time.sleep(0.1)

    def hover_word(self, word: str, timeout_s: float = 60) -> str:
        """Move the mouse over the last `word` token in the editor; returns the hover's text
        once it shows one."""
        token = self.page.locator(".monaco-editor.focused .view-line span span", has_text=re.compile(rf"^{word}$"))
        token.last.hover()
        hover = self.page.locator(".monaco-hover:not(.hidden) .hover-contents").first
        hover.wait_for(timeout=timeout_s * 1000)
        return hover.inner_text()
