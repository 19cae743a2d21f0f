"""The protocol class the server runs on: pygls' with two fixes. pygls logs a request whose
params do not parse and never answers it, so the client waits forever: it is answered with
the JSON-RPC error (-32602). And pygls runs async handlers after later messages: the
request's document is snapshotted as the request is read (`at_arrival`)."""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass

from pygls.exceptions import JsonRpcException

from . import pygls_adapter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DocumentSnapshot:
    """A document as it was when a request arrived."""

    uri: str
    text: str
    version: int | None
    path: str
    language_id: str | None


# Set for each request as it is read, before later messages are: an async handler starts
# only after the didChange notifications queued behind its request were applied, and the
# request's position refers to the text before them.
_AT_ARRIVAL: contextvars.ContextVar[DocumentSnapshot | None] = contextvars.ContextVar(
    "document_at_arrival", default=None
)


def at_arrival() -> DocumentSnapshot | None:
    """The document of the request being handled, as it was when the request was read."""
    return _AT_ARRIVAL.get()


class AnsweringProtocol(pygls_adapter.RequestHookProtocol):
    def request_read(self, params) -> None:
        _AT_ARRIVAL.set(self._snapshot(params))

    def _snapshot(self, params) -> DocumentSnapshot | None:
        uri = getattr(getattr(params, "text_document", None), "uri", None)
        try:
            document = self.workspace.text_documents.get(uri) if uri else None
        except RuntimeError:  # no workspace before initialize
            return None
        if document is None:
            return None
        return DocumentSnapshot(uri, document.source, document.version, document.path, document.language_id)

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if isinstance(data, dict) and "id" in data and "method" in data:
                logger.warning("malformed %s request %s answered with %s",
                               data.get("method"), data["id"], type(error).__name__)
                pygls_adapter.send_error_response(self, data["id"], error.to_response_error())
            raise
