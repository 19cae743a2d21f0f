"""VS Code as a user meets it: code-server (VS Code 1.139) with the extension packaged from
editors/vscode, in headless Chromium driven by Playwright, against the real `codeassist serve`.
What is asserted is what the page shows: the status bar, the ghost text (and an explicit
request's alternatives, cycled with VS Code's keys), the hover, the quick pick, and the file
saved after Tab.

The tools are installed by editors/vscode/install_e2e_tools.sh (once, cached outside the
repository; `.ci/run` calls it first). Where they cannot be installed the tests are skipped
with the script's message. CODEASSIST_E2E_SCREENSHOTS=DIR keeps screenshots of each step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from codeassist.bench.code_server import CodeServer, ToolsUnavailable, Workbench, install_tools
from tests.lsp_helpers import expected_completion
from tests.scripts import console_script
from tests.tiny_models import build_plain_text_model

SHAPES = '''import math


def area(r):
    """Area of a circle of radius r."""
    return math.pi * r * r


def ring(outer, inner):
    return area(outer) - area(inner)
'''
UNITS = '''def inches_to_centimetres(value):
    """Convert a length in inches to centimetres."""
    return value * 2.54
'''
READY = r"codeassist: (ready|\d+ ms)"


@pytest.fixture(scope="module")
def tools():
    try:
        return install_tools()
    except ToolsUnavailable as error:
        pytest.skip(f"VS Code end-to-end tools could not be installed: {error}")


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium")
        yield launched
        launched.close()


def _workspace(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "shapes.py").write_text(SHAPES)
    (root / "pkg" / "units.py").write_text(UNITS)
    return root


def _screenshot(workbench: Workbench, name: str) -> None:
    folder = os.environ.get("CODEASSIST_E2E_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        workbench.page.wait_for_timeout(700)  # widgets fade in
        workbench.page.screenshot(path=str(Path(folder) / f"{name}.png"))


def _open_vscode(tools, browser, tmp_path, settings: dict, env: dict | None = None):
    workspace = _workspace(tmp_path / "shapes_repo")
    server = CodeServer(tools, workspace, tmp_path / "vscode", settings, env)
    server.start()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    workbench = Workbench(page, server.port)
    workbench.load(server.url)
    return server, workbench


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> Path:
    """A tiny model whose suggestions are printable (they are read off the screen)."""
    return build_plain_text_model(tmp_path_factory.mktemp("plain_model"))


def test_ghost_text_tab_hover_and_search_in_vscode(tools, browser, tmp_path, plain_model):
    model = plain_model
    settings = {
        "codeassist.serverCommand": [console_script("codeassist"), "serve"],
        "codeassist.model": str(model), "codeassist.device": "cpu", "codeassist.dtype": "fp32",
        "codeassist.repoContext": False,  # the oracle below builds the prompt without it
        "codeassist.summaryBudgetMs": 60_000,
        "codeassist.noSuchSetting": 1,  # the server warns: a warning, not an [error] line
    }
    typed = " + "
    text = SHAPES.rstrip("\n") + typed
    want = expected_completion(model, text, len(text), "pkg/shapes.py", "shapes_repo", time_budget_ms=5000).text
    assert len(want) > 3
    first_line = want.split("\n", 1)[0]
    # After accepting it, an explicit request there gets alternatives too: each told apart by
    # its start, up to the first letter where it leaves the first suggestion (the tiny model
    # writes one letter over and over).
    accepted = text + want
    asked = expected_completion(model, accepted, len(accepted), "pkg/shapes.py", "shapes_repo", alternatives=2,
                                time_budget_ms=5000)
    other = asked.alternatives[0]
    split = next(i for i, (mine, theirs) in enumerate(zip(asked.text, other)) if mine != theirs) + 1
    heads = (asked.text[:split], other[:split])
    home = tmp_path / "home"
    server, workbench = _open_vscode(tools, browser, tmp_path, settings, {"CODEASSIST_HOME": str(home)})
    try:
        workbench.open_file("pkg/shapes.py")
        workbench.wait_status("loading model", 300)

        # Typed while the model loads: the ghost text comes once it is ready, and it equals
        # the server's answer there; Tab inserts it.
        page = workbench.page
        page.keyboard.press("Control+End")
        page.keyboard.press("Backspace")  # the file's final newline: type at the end of its last line
        page.keyboard.insert_text(typed)  # one edit, so one request
        assert workbench.wait_ghost_text(120, first_line) == first_line
        assert workbench.wait_status(r"codeassist: \d+ ms", 30)
        _screenshot(workbench, "tiny-ghost-text")

        # Typing the suggestion's first characters keeps the rest on screen.
        page.keyboard.type(first_line[:2])
        assert workbench.wait_ghost_text(30, first_line[2:]) == first_line[2:]
        page.keyboard.press("Tab")
        page.keyboard.press("Control+s")
        _wait_for_file(server.workspace / "pkg" / "shapes.py", SHAPES.rstrip("\n") + typed + want)

        # Asked for explicitly (Trigger Inline Suggestion: an Invoked request): VS Code's own
        # keys cycle the alternatives.
        workbench.run_command("Trigger Inline Suggestion")
        assert workbench.wait_ghost_text(60, prefix=heads[0]).startswith(heads[0])
        page.keyboard.press("Alt+BracketRight")
        assert workbench.wait_ghost_text(30, prefix=heads[1]).startswith(heads[1])
        page.keyboard.press("Alt+BracketLeft")
        assert workbench.wait_ghost_text(30, prefix=heads[0]).startswith(heads[0])
        page.keyboard.press("Escape")

        # Hover over the definition: VS Code's own hover with the signature, docstring, summary.
        hover = _hover_with_summary(workbench, "area")
        assert "def area(r)" in hover and "Area of a circle of radius r." in hover
        _screenshot(workbench, "tiny-hover")
        page.keyboard.press("Escape")

        # Search by meaning: the quick pick lists the function and opens it.
        row = workbench.search_by_meaning("convert inches to centimetres", "inches_to_centimetres")
        assert "pkg/units.py:1" in row.inner_text()
        _screenshot(workbench, "tiny-search")
        page.keyboard.press("Enter")
        page.locator(".tab.active[data-resource-name='units.py']").wait_for(timeout=30_000)
        workbench.wait_cursor((1, 1))

        # The index lives in CODEASSIST_HOME, not in the user's workspace; nothing logged as an error.
        assert (home / "indexes").is_dir() and not (server.workspace / ".codeassist").exists()
        log = server.extension_log()
        assert "ready on cpu" in log and "[error]" not in log, log[-3000:]
        assert "[warning]" in log and "noSuchSetting" in log
    except Exception:
        _keep_failure(workbench, server)
        raise
    finally:
        server.stop()


@pytest.mark.parametrize("workspace_trust", [False, True], ids=["trusted", "restricted"])
def test_a_repository_cannot_choose_what_runs_or_where_data_goes(tools, browser, tmp_path, plain_model,
                                                                 workspace_trust):
    """A cloned repository's .vscode/settings.json names its own server command, engine,
    model and index folder: all ignored (machine-scoped settings; in restricted mode also
    restricted ones), and a key the extension does not declare never reaches the server.
    The user's own settings run, trusted or not."""
    planted = tmp_path / "planted-command-ran"
    hostile = tmp_path / "hostile-serve.sh"
    hostile.write_text(f"#!/bin/sh\ntouch {planted}\nexec sleep 600\n")
    hostile.chmod(0o755)
    workspace = _workspace(tmp_path / "cloned_repo")
    (workspace / ".vscode").mkdir()
    (workspace / ".vscode" / "settings.json").write_text(json.dumps({
        "codeassist.serverCommand": [str(hostile), "serve"], "codeassist.engine": "http://127.0.0.1:9",
        "codeassist.model": str(tmp_path / "nowhere"), "codeassist.indexDir": str(workspace),
        "codeassist.engineApiKeyEnv": "HOME"}))
    settings = {"codeassist.serverCommand": [console_script("codeassist"), "serve"],
                "codeassist.model": str(plain_model), "codeassist.device": "cpu", "codeassist.dtype": "fp32"}
    server = CodeServer(tools, workspace, tmp_path / "vscode", settings, {"CODEASSIST_HOME": str(tmp_path / "home")},
                        workspace_trust=workspace_trust)
    server.start()
    workbench = Workbench(browser.new_page(viewport={"width": 1280, "height": 800}), server.port)
    try:
        workbench.load(server.url)
        workbench.open_file("pkg/shapes.py")
        workbench.wait_status(READY, 300)
        log = server.extension_log()
        assert f"{plain_model} ready on cpu" in log, log[-3000:]  # the user's model in the local engine
        assert not planted.exists()
        assert "unknown setting codeassist.engineApiKeyEnv ignored" in log
        assert "127.0.0.1:9" not in log and "engineApiKeyEnv' ignored" not in log  # never sent
        assert "code search is off" not in log and not (workspace / "manifest.json").exists()
        page = workbench.page
        page.keyboard.press("Control+End")
        page.keyboard.insert_text(" + ")
        assert workbench.wait_ghost_text(120)
    except Exception:
        _keep_failure(workbench, server)
        raise
    finally:
        server.stop()


def _choose_in_file_dialog(page, dialog, path: str, button: str, attempts: int = 5) -> None:
    """Pick `path` in VS Code's own file dialog. It fills in its start folder and lists
    folders as it resolves them, asynchronously, and may rewrite the path while that runs:
    set the path at once, wait for its folder's listing, accept, and try again if the dialog
    is still open."""
    name = Path(path).name
    for _ in range(attempts):
        dialog.locator("input").first.fill(path)
        try:
            dialog.locator(".monaco-list-row", has_text=re.compile(rf"^{re.escape(name)}$")).first.wait_for(
                timeout=10_000)
            if dialog.locator("input").first.input_value() == path:
                dialog.locator(".monaco-button", has_text=button).click()
            dialog.wait_for(state="hidden", timeout=5_000)
            return
        except Exception:  # Playwright's timeout: the dialog was still settling
            page.wait_for_timeout(500)
    raise AssertionError(f"the file dialog did not take {path}")


def _keep_failure(workbench: Workbench, server: CodeServer) -> None:
    """A screenshot and the extension's log next to the test's files, for the failure report."""
    shot = server.scratch / "failure.png"
    workbench.page.screenshot(path=str(shot))
    print(f"screenshot: {shot}\nextension log:\n{server.extension_log()[-3000:]}")


def _wait_for_file(path: Path, want: str, timeout_s: float = 30, exact: bool = True) -> None:
    """Wait until the saved file is `want` (or, not `exact`, starts with it)."""
    import time

    def matches() -> bool:
        text = path.read_text()
        return text == want if exact else text.startswith(want)

    deadline = time.monotonic() + timeout_s
    while not matches():
        if time.monotonic() > deadline:
            assert path.read_text() == want
        time.sleep(0.1)


def _hover_with_summary(workbench: Workbench, word: str, timeout_s: float = 180) -> str:
    """Hover `word` until the hover carries a model summary (generated in the background)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        text = workbench.hover_word(word)
        if "Summary" in text:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"no summary in the hover: {text!r}")
        workbench.page.keyboard.press("Escape")
        workbench.page.mouse.move(5, 5)
        time.sleep(1)


def test_a_missing_server_command_is_fixed_from_the_settings_without_reloading(tools, browser, tmp_path,
                                                                                plain_model):
    model = plain_model
    missing = str(tmp_path / "no-venv" / "bin" / "codeassist")
    settings = {"codeassist.serverCommand": [missing, "serve"], "codeassist.model": str(model),
                "codeassist.device": "cpu", "codeassist.dtype": "fp32", "codeassist.indexEnabled": False}
    server, workbench = _open_vscode(tools, browser, tmp_path, settings, {"CODEASSIST_HOME": str(tmp_path / "home")})
    try:
        workbench.open_file("pkg/shapes.py")
        assert "not found" in workbench.wait_status("not found", 120)
        page = workbench.page
        toast = page.locator(".notification-toast", has_text="was not found")
        toast.wait_for(timeout=30_000)
        assert toast.locator("a.monaco-button", has_text="Choose the codeassist script").count() == 1
        assert page.locator(".notification-toast").count() == 1  # one clear message, no stack trace
        _screenshot(workbench, "missing-command")

        # One click: the user picks the venv's script in VS Code's file dialog; the setting
        # changes and the server starts, without reloading the window.
        toast.locator("a.monaco-button", has_text="Choose the codeassist script").click()
        dialog = page.locator(".quick-input-widget", has_text="The codeassist script")
        dialog.wait_for(timeout=30_000)
        _choose_in_file_dialog(page, dialog, console_script("codeassist"), "Use this codeassist")
        workbench.wait_status(READY, 300)
        # A machine-scoped setting: code-server (VS Code's remote setup) keeps it in the
        # machine's settings, where the desktop app uses the user's.
        assert f'"{console_script("codeassist")}"' in (server.user_data / "Machine" / "settings.json").read_text()
        page.keyboard.press("Control+End")
        page.keyboard.insert_text(" + ")
        workbench.wait_ghost_text(120)

        # Restart Server stops this server and starts another.
        workbench.run_command("codeassist: Restart Server")
        workbench.wait_status("starting|loading", 60)
        workbench.wait_status(READY, 300)
    except Exception:
        _keep_failure(workbench, server)
        raise
    finally:
        server.stop()


CIRCLE = '''import math


class Circle:
    """A circle in the plane."""

    def __init__(self, x, y, radius):
        self.x = x
        self.y = y
        self.radius = radius

    def area(self):
        """The area enclosed by the circle."""
        return math.pi * self.radius ** 2

    def contains(self, px, py):
        return math.hypot(px - self.x, py - self.y) <= self.radius

'''


@pytest.mark.embedded
def test_the_embedded_model_in_vscode(tools, browser, tmp_path):
    """The real model: a suggestion a person would take, Tab, a hover summary, search."""
    from retrieval import IndexConfig

    settings = {"codeassist.serverCommand": [console_script("codeassist"), "serve"],
                "codeassist.summaryBudgetMs": 60_000}
    server, workbench = _open_vscode(tools, browser, tmp_path, settings)
    (server.workspace / "pkg" / "circle.py").write_text(CIRCLE)
    index_folder = IndexConfig().folder_for(server.workspace.resolve())  # in the user's CODEASSIST_HOME
    page = workbench.page
    try:
        workbench.open_file("pkg/circle.py")
        workbench.wait_status(READY, 600)
        page.keyboard.press("Control+End")
        page.keyboard.insert_text("    def perimeter(self):\n        return ")
        shown = workbench.wait_ghost_text(180)
        assert "radius" in shown or "math.pi" in shown, shown
        _screenshot(workbench, "vscode-ghost-text")
        page.keyboard.press("Tab")
        page.keyboard.press("Control+s")
        _wait_for_file(server.workspace / "pkg" / "circle.py",
                       CIRCLE + "    def perimeter(self):\n        return " + shown, exact=False)

        hover = _hover_with_summary(workbench, "area")
        assert "def area(self)" in hover and "The area enclosed by the circle." in hover
        _screenshot(workbench, "vscode-hover")
        page.keyboard.press("Escape")

        row = workbench.search_by_meaning("is a point inside the circle", "Circle.contains")
        _screenshot(workbench, "vscode-search")
        row.click()
        workbench.wait_cursor((CIRCLE.splitlines().index("    def contains(self, px, py):") + 1, 1))
    except Exception:
        _keep_failure(workbench, server)
        raise
    finally:
        server.stop()
        shutil.rmtree(index_folder, ignore_errors=True)
