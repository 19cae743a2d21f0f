"""The language server: pygls handlers that turn LSP requests into engine calls."""

__all__: list[str] = []
