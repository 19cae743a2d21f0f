"""The language server: pygls handlers that turn LSP requests into engine calls."""

from .handlers import build_server
from .server import CodeassistServer
from .settings import ServerSettings

__all__ = ["build_server", "CodeassistServer", "ServerSettings"]
