"""Reading a source file named on the command line and turning FILE:LINE:COL into an offset."""

from __future__ import annotations

from pathlib import Path

MAX_FILE_BYTES = 4 * 1024 * 1024


def parse_location(spec: str, need_column: bool = True) -> tuple[Path, int, int]:
    """Split `FILE:LINE[:COL]` (1-based, like compiler messages). COL defaults to 1."""
    parts = spec.rsplit(":", 2 if need_column else 1)
    count = 3 if need_column else 2
    if len(parts) < count or not all(p.isdigit() for p in parts[1:]):
        form = "FILE:LINE:COL" if need_column else "FILE:LINE"
        raise ValueError(f"expected {form} with 1-based numbers, got {spec!r}")
    numbers = [int(p) for p in parts[1:]]
    return Path(parts[0]), numbers[0], numbers[1] if need_column else 1


def read_source(path: Path) -> str:
    """The text of a UTF-8 source file; ValueError for what is not one."""
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: too large ({size:,} bytes; limit {MAX_FILE_BYTES:,})")
    data = path.read_bytes()
    if b"\0" in data:
        raise ValueError(f"{path}: binary file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def offset_of(text: str, line: int, column: int) -> int:
    """Character offset of 1-based `line`/`column`; the column may be one past the line's end."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise ValueError(f"line {line} is out of range (the file has {len(lines)} lines)")
    content = lines[line - 1].rstrip("\r")
    if not 1 <= column <= len(content) + 1:
        raise ValueError(f"column {column} is out of range (line {line} has {len(content)} characters)")
    return sum(len(ln) + 1 for ln in lines[: line - 1]) + column - 1


def repository_of(path: Path) -> tuple[str, str]:
    """(repository name, path relative to it): the nearest folder holding .git, else the
    file's own folder."""
    absolute = path.resolve()
    for folder in absolute.parents:
        if (folder / ".git").exists():
            return folder.name, absolute.relative_to(folder).as_posix()
    return absolute.parent.name, absolute.name
