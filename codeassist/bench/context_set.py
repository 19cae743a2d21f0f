"""The repository-level FIM set of `codeassist bench context`: holes in lines of standard
library packages that call a function or class defined in another file of the package.

Each package is copied into a scratch folder (the index never lands in the stdlib); a hole
starts at the called name and runs to the end of its line (the expected middle). Which
function is called is often not decidable from the code, so each such hole with arguments
also gives an "args" hole: the name and "(" typed, the arguments to the end of the line
expected, which the callee's signature can tell.
"""

from __future__ import annotations

import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from retrieval.definitions import DefinitionFinder
from retrieval.outline import called_names, definitions, enclosing

PACKAGES = ("json", "concurrent/futures", "urllib", "http", "logging", "importlib", "email")
QUICK_PACKAGES = ("json", "logging", "urllib")


@dataclass(frozen=True)
class Hole:
    package: str
    path: str  # relative to the scratch root, e.g. "json/decoder.py"
    line: int  # 1-based
    text: str  # the file without the hole's middle
    cursor: int
    expected: str  # the middle: from the called name to the end of the line
    callee: str  # "path:name" of the definition in another file
    kind: str = "call"  # call: from the called name; args: from after its "("


def argument_holes(holes: list[Hole]) -> list[Hole]:
    """The "args" hole of each hole whose call has arguments on its line."""
    moved = []
    for hole in holes:
        at = hole.expected.find("(")
        if at < 0 or hole.expected[at + 1 :].strip() in ("", ")"):
            continue
        typed = hole.expected[: at + 1]
        moved.append(Hole(hole.package, hole.path, hole.line,
                          hole.text[: hole.cursor] + typed + hole.text[hole.cursor :],
                          hole.cursor + len(typed), hole.expected[at + 1 :], hole.callee, "args"))
    return moved


def copy_packages(names: tuple[str, ...], root: Path) -> list[str]:
    """Copy the packages' .py files under `root` (keeping their dotted folders)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    copied = []
    for name in names:
        source = stdlib / name
        if not (source / "__init__.py").is_file():
            continue
        for file in sorted(source.glob("*.py")):
            target = root / name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
        copied.append(name)
    if not copied:
        raise ValueError(f"none of the packages {', '.join(names)} found in {stdlib}")
    return copied


def find_holes(root: Path, package: str, limit: int) -> list[Hole]:
    """Up to `limit` holes in `package`, spread evenly over the candidates (deterministic)."""
    finder = DefinitionFinder(root)
    candidates: list[Hole] = []
    for file in sorted((root / package).glob("*.py")):
        path = file.relative_to(root).as_posix()
        text = file.read_text(encoding="utf-8")
        candidates += _holes_in(finder, package, path, text)
    if len(candidates) <= limit:
        return candidates
    step = len(candidates) / limit
    return [candidates[int(i * step)] for i in range(limit)]


def _holes_in(finder: DefinitionFinder, package: str, path: str, text: str) -> list[Hole]:
    lines = text.split("\n")
    defs = definitions(path, text, "python")
    holes, seen_lines = [], set()
    for scope in (d for d in defs if d.kind in ("function", "method")):
        for name, owner in called_names(text, "python", scope.start_line + 1, scope.end_line):
            target = finder.resolve(name, owner, path, text, scope.start_line)
            if target is None or target.path == path:
                continue
            for number in range(scope.start_line + 1, scope.end_line + 1):
                line = lines[number - 1]
                column = _call_column(line, name, owner)
                if column < 0 or number in seen_lines or enclosing(defs, number) != scope:
                    continue
                expected = line[column:].rstrip()
                if len(expected) < 6 or line.lstrip().startswith(("#", "def ", "class ")):
                    continue
                start = sum(len(l) + 1 for l in lines[: number - 1])
                hole_text = text[: start + column] + text[start + len(line):]
                holes.append(Hole(package, path, number, hole_text, start + column, expected,
                                  f"{target.path}:{target.qualified_name}"))
                seen_lines.add(number)
    return holes


def _call_column(line: str, name: str, owner: str) -> int:
    """Where the called `name` starts in `line` (after `owner.` when given), or -1."""
    needle = f"{owner}.{name}(" if owner else f"{name}("
    at = line.find(needle)
    if at < 0 or (not owner and at > 0 and (line[at - 1].isalnum() or line[at - 1] in "._")):
        return -1
    return at + (len(owner) + 1 if owner else 0)
