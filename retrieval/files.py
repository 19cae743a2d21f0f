"""Which files of a workspace are indexed: .gitignore rules (nested files too), vendored and
generated folders, binary files and files over a size limit are left out. A workspace never
makes the walk unbounded: it stops (with a log line) at a file count and a total size, and
does not go deeper than MAX_DEPTH folders."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

import pathspec

logger = logging.getLogger(__name__)

DEFAULT_EXCLUDE = (
    ".git/", ".hg/", ".svn/", ".codeassist/", "node_modules/", "vendor/", "third_party/",
    "__pycache__/", ".venv/", "venv/", ".tox/", ".nox/", ".mypy_cache/", ".pytest_cache/",
    ".ruff_cache/", "site-packages/", "dist/", "build/", "target/", "*.egg-info/",
    "*.min.js", "*.min.css", "*.map", "*.lock", "package-lock.json", "*.pb.go", "*_pb2.py",
    "*.svg", "*.ipynb",
)
DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_MAX_FILES = 20_000
DEFAULT_MAX_TOTAL_BYTES = 256_000_000
MAX_DEPTH = 64  # folders below the root; deeper ones are skipped (logged)
MAX_IGNORE_FILE_BYTES = 1_000_000
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class FileFilter:
    """What to leave out, in gitignore syntax on top of the workspace's own .gitignore files."""

    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    max_bytes: int = DEFAULT_MAX_BYTES  # per file
    use_gitignore: bool = True
    max_files: int = DEFAULT_MAX_FILES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES

    def __post_init__(self):
        for name in ("max_bytes", "max_files", "max_total_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class FileState:
    path: str  # relative to the root, forward slashes
    size: int
    mtime_ns: int


def walk(root: Path, file_filter: FileFilter = FileFilter()) -> Iterator[FileState]:
    """Candidate files under `root` (not read: binary and undecodable files are caught by
    `read_text`), up to the filter's file count and total size."""
    excluded = pathspec.GitIgnoreSpec.from_lines(file_filter.exclude)
    # (folder relative to root, its .gitignore) for the folders being walked
    ignores: list[tuple[str, pathspec.GitIgnoreSpec]] = []
    count = total = 0
    for folder, relative, dirs, files in _folders(root):
        ignores = [(base, spec) for base, spec in ignores if relative.startswith(base)]
        if file_filter.use_gitignore and ".gitignore" in files:
            spec = _read_gitignore(Path(folder) / ".gitignore")
            if spec is not None:
                ignores.append((relative, spec))
        dirs[:] = sorted(d for d in dirs if not _ignored(relative + d + "/", excluded, ignores))
        for name in sorted(files):
            path = relative + name
            if _ignored(path, excluded, ignores):
                continue
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.st_size > file_filter.max_bytes:
                logger.info("skipped %s: %d bytes (limit %d)", path, stat.st_size, file_filter.max_bytes)
                continue
            if os.path.islink(os.path.join(folder, name)) or stat.st_size == 0 or not S_ISREG(stat.st_mode):
                continue
            count, total = count + 1, total + stat.st_size
            if count > file_filter.max_files or total > file_filter.max_total_bytes:
                logger.warning("stopped listing %s at %d files / %d bytes (limits %d files, %d bytes); "
                               "the rest is not indexed", root, count - 1, total - stat.st_size,
                               file_filter.max_files, file_filter.max_total_bytes)
                return
            yield FileState(path, stat.st_size, stat.st_mtime_ns)


def _folders(root: Path) -> Iterator[tuple[str, str, list[str], list[str]]]:
    """(folder, its path relative to root with a trailing slash, subfolder names, file names),
    top-down like os.walk without following links; callers may prune the subfolder list.
    Iterative: os.walk recurses (a folder 1,100 levels deep raised RecursionError)."""
    stack = [(str(root), "", 0)]
    while stack:
        folder, relative, depth = stack.pop()
        dirs, files = [], []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        (dirs if entry.is_dir(follow_symlinks=False) else files).append(entry.name)
                    except OSError:
                        continue
        except OSError as error:
            logger.info("cannot list %s: %s", folder, error)
            continue
        yield folder, relative, dirs, files
        if dirs and depth >= MAX_DEPTH:
            logger.warning("not indexing below %s: deeper than %d folders", folder, MAX_DEPTH)
            continue
        for name in reversed(dirs):  # popped in order
            stack.append((os.path.join(folder, name), f"{relative}{name}/", depth + 1))


def is_indexable(root: Path, path: str, file_filter: FileFilter = FileFilter()) -> bool:
    """Whether `walk` would consider the file `path` (relative to `root`), by the same
    rules, reading only the .gitignore files on its way."""
    excluded = pathspec.GitIgnoreSpec.from_lines(file_filter.exclude)
    parts = path.split("/")
    ignores = []
    for depth in range(len(parts)):
        base = "".join(part + "/" for part in parts[:depth])
        gitignore = root / base / ".gitignore"
        if file_filter.use_gitignore and os.path.lexists(gitignore):
            spec = _read_gitignore(gitignore)
            if spec is not None:
                ignores.append((base, spec))
        partial = base + parts[depth] + ("/" if depth < len(parts) - 1 else "")
        if _ignored(partial, excluded, ignores):
            return False
    return True


def read_text(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> str | None:
    """The file's text, or None (logged) when it is missing, too large, binary or not UTF-8,
    or not a regular file of its own (see `read_bytes`)."""
    data = read_bytes(path, max_bytes)
    if data is None:
        return None
    if b"\0" in data[:_SNIFF_BYTES]:
        logger.debug("skipped binary file %s", path)
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        logger.info("skipped %s: not UTF-8 text", path)
        return None


def read_bytes(path: Path, max_bytes: int) -> bytes | None:
    """Every file the walk reads comes through here: the bytes of a regular file that is not
    a symbolic link, at most `max_bytes`; None (logged) otherwise. The open never blocks (a
    FIFO is opened non-blocking, then refused), a link to /dev/zero or outside the workspace
    is refused by the open itself, and no more than `max_bytes` + 1 bytes are ever read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ENOENT:  # asked for by name (an import's module): no news
            logger.debug("no file %s", path)
            return None
        why = "a symbolic link" if error.errno == errno.ELOOP else error.strerror
        logger.info("skipped %s: %s", path, why)
        return None
    try:
        stat = os.fstat(descriptor)
        if not S_ISREG(stat.st_mode):
            logger.info("skipped %s: not a regular file", path)
            return None
        if stat.st_size > max_bytes:
            logger.info("skipped %s: %d bytes (limit %d)", path, stat.st_size, max_bytes)
            return None
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        logger.info("skipped %s: %s", path, error)
        return None
    finally:
        os.close(descriptor)
    if len(data) > max_bytes:  # grew since the check
        logger.info("skipped %s: over %d bytes", path, max_bytes)
        return None
    return data


def _read_gitignore(path: Path) -> pathspec.GitIgnoreSpec | None:
    data = read_bytes(path, MAX_IGNORE_FILE_BYTES)
    if data is None:
        return None
    try:
        return pathspec.GitIgnoreSpec.from_lines(data.decode("utf-8", errors="replace").splitlines())
    except ValueError as error:
        logger.warning("ignoring %s: %s", path, error)
        return None


def _ignored(path: str, excluded, ignores) -> bool:
    if excluded.match_file(path):
        return True
    return any(spec.match_file(path[len(base):]) for base, spec in ignores)
