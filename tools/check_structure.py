"""Check the package's structure rules; exit 1 with one line per breach (``make test`` runs it).

- no import cycle between modules of ``mllm_nb`` (imports inside functions count too);
- no module imports another module's underscore name (``from mllm_nb.x import _y``);
- no module over ``MAX_LINES`` lines;
- no fixture-training code in the package (``train_*.py``);
- no test module imports another (shared helpers live in ``tests/*.py`` files not named ``test_*``).

    python tools/check_structure.py [package folder, default mllm_nb] [tests folder, default tests]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 650  # "about 600"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(tree: ast.AST, package: str) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` for every import of ``package`` modules in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == package or node.module.startswith(package + "."):
                found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith(package + ".")]
    return found


def resolve(target: str, name: str, modules: set[str]) -> str:
    """``from target import name``: the submodule ``target.name`` when there is one, else ``target``."""
    return f"{target}.{name}" if f"{target}.{name}" in modules else target


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def check(root: Path) -> list[str]:
    package = root.name
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(path, root)
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n") + 1
        if lines > MAX_LINES:
            problems.append(f"{path}: {lines} lines (at most {MAX_LINES})")
        if path.name.startswith("train_"):
            problems.append(f"{path}: fixture training code belongs outside the package")
        edges = graph.setdefault(name, set())
        for target, names in imports_of(ast.parse(text), package):
            for imported in names or [""]:
                dependency = resolve(target, imported, modules) if imported else target
                is_parent_package = name.startswith(dependency + ".") and path.name != "__init__.py"
                if dependency != name and dependency in modules and not is_parent_package:
                    edges.add(dependency)
                if imported.startswith("_") and dependency != name and not imported.startswith("__"):
                    problems.append(f"{path}: imports the underscore name {target}.{imported}")
    # a package's __init__ re-exports its submodules; importing the package from a submodule is not a cycle
    graph = {node: {d for d in deps if not node.startswith(d + ".")} for node, deps in graph.items()}
    problems += [f"import cycle: {' -> '.join(group)}" for group in find_cycles(graph)]
    return problems + shadowed_exports(root)


def shadowed_exports(root: Path) -> list[str]:
    """A lazy export named like a submodule is replaced by that module once anything imports it."""
    init = root / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    exports: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in targets):
                exports |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    submodules = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    return [
        f"{init}: the export {name!r} has a submodule's name; importing mllm_nb.{name} would replace it"
        for name in sorted(exports & submodules)
    ]


def check_tests(folder: Path) -> list[str]:
    """Test modules that import another test module (or conftest)."""
    problems = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            problems += [f"{path}: imports the test module {name}" for name in names
                         if name.startswith(("test_", "conftest"))]
    return sorted(set(problems))


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "mllm_nb")
    tests = Path(sys.argv[2] if len(sys.argv) > 2 else "tests")
    problems = check(root) + (check_tests(tests) if tests.is_dir() else [])
    for problem in problems:
        print(problem)
    print(f"{root}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
