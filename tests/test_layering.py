"""The import graph of our packages, read from the sources: data flows one way
(codeassist → lsp_server → completion/retrieval → kernels), with no back edge and no cycle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("codeassist", "lsp_server", "retrieval", "completion", "kernels")
# package -> the packages of ours it may import
ALLOWED = {
    "codeassist": {"lsp_server", "retrieval", "completion", "kernels"},  # the CLI and benches
    "lsp_server": {"retrieval", "completion"},
    "retrieval": {"completion"},  # languages (completion.syntax) and the snippet type
    "completion": {"kernels"},
    "kernels": set(),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that `name` imports (a name imported from a package counts as its
    submodule when it is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_goes_against_the_layers():
    back_edges = [f"{source} imports {target}" for source, targets in _graph().items() for target in targets
                  if target.split(".")[0] != source.split(".")[0]
                  and target.split(".")[0] not in ALLOWED[source.split(".")[0]]]
    assert back_edges == []


def test_no_import_cycle_between_modules():
    assert _cycles(_graph()) == []


def test_the_graph_reader_sees_relative_and_package_imports():
    # Guards the two tests above against reading nothing.
    graph = _graph()
    assert "completion.kv_cache" in graph["completion.engine"]  # from .kv_cache import ...
    assert "retrieval.search" in graph["retrieval.definitions"]  # from . import search
    assert "completion" in graph["lsp_server.server"]  # from completion import ...
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_retrieval_imports_without_torch_or_transformers():
    # What retrieval shares with completion (syntax, prompt files, the cache folder) must not
    # load the engine: `codeassist index` and the search CLI start without torch's seconds.
    import subprocess
    import sys

    probe = ("import sys, retrieval, retrieval.context, retrieval.definitions; "
             "print(sorted(m for m in ('torch', 'transformers', 'completion.engine') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
