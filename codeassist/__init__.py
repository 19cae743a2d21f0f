"""codeassist command-line entry point (`codeassist complete|models|...`)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
