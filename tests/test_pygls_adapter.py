"""The pygls private members lsp_server/pygls_adapter.py relies on exist in the installed
pygls, with the meaning the adapter gives them (checked on a real server and protocol)."""

from lsprotocol import types
from pygls.workspace import Workspace

from lsp_server import build_server
from lsp_server import pygls_adapter
from lsp_server.documents import LspWorkspace


def test_the_workspace_members():
    workspace = Workspace("file:///tmp/root", types.TextDocumentSyncKind.Incremental)
    assert pygls_adapter.sync_kind(workspace) == types.TextDocumentSyncKind.Incremental
    assert pygls_adapter.position_codec(workspace) is not None
    assert callable(getattr(workspace, pygls_adapter.CREATE_TEXT_DOCUMENT))
    ours = LspWorkspace.like(workspace)
    ours.put_text_document(types.TextDocumentItem("file:///tmp/root/a.py", "python", 1, "x = 1\n"))
    assert type(ours.get_text_document("file:///tmp/root/a.py")).__name__ == "LspTextDocument"


def test_the_protocol_members():
    server = build_server()
    protocol = server.protocol
    assert not pygls_adapter.is_pending_request(protocol, 1)
    assert not pygls_adapter.is_shut_down(protocol)
    workspace = LspWorkspace("file:///tmp/root", types.TextDocumentSyncKind.Incremental)
    pygls_adapter.replace_workspace(protocol, workspace)
    assert server.workspace is workspace
    written = []

    class Writer:
        def write(self, data):
            written.append(data)

        def close(self):
            pass

    protocol.set_writer(Writer())
    pygls_adapter.send_error_response(protocol, 7, types.ResponseError(code=-32600, message="bad"))
    pygls_adapter.send_raw(protocol, {"jsonrpc": "2.0", "id": 8, "error": {"code": -32700, "message": "x"}})
    body = b"".join(w if isinstance(w, bytes) else w.encode() for w in written)
    assert b'"id": 7' in body and b'"code": -32600' in body and b'"id": 8' in body


def test_the_request_hook_runs_before_the_handler():
    from pygls.protocol import LanguageServerProtocol

    assert callable(getattr(LanguageServerProtocol, "_handle_request"))  # what RequestHookProtocol overrides
    server = build_server()
    assert isinstance(server.protocol, pygls_adapter.RequestHookProtocol)
