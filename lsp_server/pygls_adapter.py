"""Every use of pygls' private members, in one place. pygls keeps these as implementation
details, so a release that renames one breaks this module only, and
tests/test_pygls_adapter.py checks each against the installed pygls."""

from __future__ import annotations

from typing import Any

from pygls.protocol import LanguageServerProtocol


def sync_kind(workspace) -> Any:
    """The text document sync kind the workspace was made with."""
    return workspace._sync_kind


def position_codec(workspace) -> Any:
    return workspace._position_codec


def replace_workspace(protocol, workspace) -> None:
    """Make `workspace` the one the protocol's handlers (and `server.workspace`) use."""
    protocol._workspace = workspace


def is_pending_request(protocol, msg_id) -> bool:
    """Whether a request of this id is still being answered (a second one is a duplicate)."""
    return msg_id in protocol._request_futures


def is_shut_down(protocol) -> bool:
    """Whether `shutdown` was received (requests after it are refused)."""
    return bool(protocol._shutdown)


def send_error_response(protocol, msg_id, error) -> None:
    protocol._send_response(msg_id, error=error)


def send_raw(protocol, message: dict) -> None:
    """Write an already-built JSON-RPC message (an error for input pygls never saw)."""
    protocol._send_data(message)


class RequestHookProtocol(LanguageServerProtocol):
    """pygls' protocol calling `request_read` as each request is read, before pygls runs
    its handler (an async handler runs only after later messages were handled)."""

    def request_read(self, params) -> None:
        pass

    def _handle_request(self, msg_id, method_name, params):
        self.request_read(params)
        super()._handle_request(msg_id, method_name, params)


# The document factory pygls' Workspace calls; documents.py overrides it.
CREATE_TEXT_DOCUMENT = "_create_text_document"
