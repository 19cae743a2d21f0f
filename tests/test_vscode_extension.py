"""The VS Code extension's own command ids never clash with the commands the server
advertises: vscode-languageclient registers a VS Code command for each server command, and
an id registered twice stops the client from starting (no ghost text, no hover)."""

import json
import re
from pathlib import Path

from tests.lsp_helpers import start_server

EXTENSION = Path(__file__).resolve().parents[1] / "editors" / "vscode"


def extension_command_ids() -> set[str]:
    manifest = json.loads((EXTENSION / "package.json").read_text())
    declared = {c["command"] for c in manifest["contributes"]["commands"]}
    registered = set(re.findall(r'registerCommand\("([^"]+)"', (EXTENSION / "src" / "extension.ts").read_text()))
    assert registered == declared  # every palette entry has a handler, and no more
    return declared


async def test_extension_commands_differ_from_the_servers(tmp_path, tiny_model_dir):
    client, result = await start_server(tmp_path, tmp_path / "server.log",
                                        {"model": str(tiny_model_dir("qwen2.5-coder")), "dtype": "fp32"})
    try:
        server_commands = set(result.capabilities.execute_command_provider.commands)
        assert {"codeassist.status", "codeassist.search"} <= server_commands
        assert not extension_command_ids() & server_commands
    finally:
        await client.shutdown_session()
