"""The CLI's side of a running server's endpoint (retrieval/search_endpoint.py): its answer,
or None when there is no server to ask and the command does the work itself."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def answer_from_server(endpoint: Path | None, command: str, arguments: dict):
    """The server's result (stderr says the server answered); None without a server that can
    answer. ValueError: the server's message for a bad request."""
    from retrieval.search_endpoint import NoServer, ask

    if endpoint is None:
        return None
    try:
        result = ask(endpoint, command, arguments)
    except NoServer as reason:
        logger.debug("%s in this process: %s", command, reason)
        return None
    print("answered by the running codeassist server", file=sys.stderr)
    return result
