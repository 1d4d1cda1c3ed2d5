"""The architecture, checked on the source: every module of prtcore/ and plugins/ is parsed (ast), nothing imported.

- no module is over 500 lines;
- the import graph of prtcore.*, prt_mlx.*, prt_torch.* and prt_eagle2.* has no cycles (imports at the top of a
  module and inside functions alike, relative imports resolved);
- the floors (../shared/DESIGN.md, "Layers"): the library (prtcore/ except prtcore/cli and prtcore/apps; the
  conformance suite prtcore/testing is library too) imports neither applications nor plugins; applications
  (prtcore/apps) import no plugin; plugins import no application.

That `import prtcore` imports neither mlx nor torch is tested by test_core_import.py.

An edge of the graph goes to the module an import statement names: `from P import m` to the submodule P.m when
there is one, else to P itself (its __init__). Importing a submodule does not count as importing the packages
above it, so a package's __init__ that imports its own submodules makes no cycle with them unless one of them
imports the package itself (`from P import name` where name is not a submodule).
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {  # top-level package -> its directory (pyproject.toml's package-dir)
    "prtcore": REPO_ROOT / "prtcore",
    "prt_mlx": REPO_ROOT / "plugins" / "prt_mlx",
    "prt_torch": REPO_ROOT / "plugins" / "prt_torch",
    "prt_eagle2": REPO_ROOT / "plugins" / "prt_eagle2",
}
PLUGINS = ("prt_mlx", "prt_torch", "prt_eagle2")
APPLICATIONS = ("prtcore.cli", "prtcore.apps")
MAX_LINES = 500


# ---------------------------------------------------------------------------------------------- the scanner
@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool
    source: str


@dataclass(frozen=True)
class Import:
    source: str      # the importing module
    target: str      # the module the statement names (a submodule where `from P import m` names one)
    lineno: int
    statement: str   # as written, for messages

    def where(self, modules: dict[str, Module], root: Path) -> str:
        return f"{_relative(modules[self.source].path, root)}:{self.lineno}"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def discover(packages: dict[str, Path]) -> dict[str, Module]:
    """{dotted name: Module} for every .py file under each package directory."""
    out = {}
    for top, directory in packages.items():
        for path in sorted(directory.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(directory).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([top, *parts])
            out[name] = Module(name, path, is_package, path.read_text(encoding="utf-8"))
    return out


def _base(module: Module, node: ast.ImportFrom) -> str:
    """The absolute name of what `from <base> import ...` names, relative levels resolved."""
    if not node.level:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    if not package:
        raise ValueError(f"{module.path}:{node.lineno}: relative import beyond the top-level package")
    return f"{package}.{node.module}" if node.module else package


def imports(modules: dict[str, Module], tops=tuple(PACKAGES)) -> list[Import]:
    """Every import of one of `tops` by a module, wherever it stands (module level, functions, try blocks)."""
    out = []
    for module in modules.values():
        tree = ast.parse(module.source, filename=str(module.path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, node)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            statement = ast.get_source_segment(module.source, node) or ast.unparse(node)
            for target in dict.fromkeys(targets):
                if target.split(".")[0] in tops:
                    out.append(Import(module.name, target, node.lineno, " ".join(statement.split())))
    return out


def _known(name: str, modules) -> str:
    """The longest prefix of `name` that is a module here (an import of a name that is gone maps to its package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def graph(modules, edges: list[Import]) -> dict[str, dict[str, Import]]:
    """{module: {imported module: the first import statement that makes the edge}}, self-imports left out."""
    out = {name: {} for name in modules}
    for edge in edges:
        target = _known(edge.target, modules)
        if target and target != edge.source:
            out[edge.source].setdefault(target, edge)
    return out


def _components(g: dict[str, dict]) -> list[list[str]]:
    """Strongly connected components (Tarjan), iteratively."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    out.append(sorted(component))
    return out


def _shortest_cycle(g, component: list[str], start: str) -> list[str]:
    """A shortest cycle through `start` inside its component: [start, b, ..., start]."""
    members = set(component)
    parent = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(g[node]):
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child in members and child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start} in its component {component}")


def cycles(modules, edges) -> list[list[str]]:
    """Cycles [a, b, ..., a] that cover every module of every strongly connected component of more than one module:
    a shortest cycle through the first module not yet on a reported cycle, until none is left."""
    g = graph(modules, edges)
    out = []
    for component in _components(g):
        if len(component) < 2:
            continue
        covered: set[str] = set()
        for start in component:
            if start not in covered:
                cycle = _shortest_cycle(g, component, start)
                covered.update(cycle)
                out.append(cycle)
    return out


def describe_cycle(cycle: list[str], modules, edges, root: Path) -> str:
    g = graph(modules, edges)
    steps = [f"{a} ({g[a][b].where(modules, root)}: {g[a][b].statement})" for a, b in zip(cycle, cycle[1:])]
    return " → ".join(cycle) + "\n      " + "\n      ".join(steps)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def floor(name: str) -> str:
    if name.split(".")[0] in PLUGINS:
        return "plugin"
    if any(within(name, app) for app in APPLICATIONS):
        return "application"
    return "library"


def layering_violations(modules, edges, root: Path = REPO_ROOT) -> dict[str, list[str]]:
    """{rule: ["path:line: statement (what it imports)", ...]} for every import across the floors it may not cross."""
    rules = {
        "the library imports an application (prtcore.cli, prtcore.apps)":
            lambda source, target: floor(source) == "library" and floor(target) == "application",
        "the library imports a plugin (prt_mlx, prt_torch, prt_eagle2)":
            lambda source, target: floor(source) == "library" and floor(target) == "plugin",
        "an application (prtcore/apps) imports a plugin":
            lambda source, target: within(source, "prtcore.apps") and floor(target) == "plugin",
        "a plugin imports an application (prtcore.cli, prtcore.apps)":
            lambda source, target: floor(source) == "plugin" and floor(target) == "application",
    }
    out = {}
    for rule, broken in rules.items():
        found = [f"{e.where(modules, root)}: {e.statement}  [{e.source} → {e.target}]"
                 for e in edges if broken(e.source, e.target)]
        if found:
            out[rule] = found
    return out


def _report(title: str, lines: list[str]) -> str:
    return f"{title} ({len(lines)}):\n  " + "\n  ".join(lines)


# ---------------------------------------------------------------------------------------------- the project
MODULES = discover(PACKAGES)
EDGES = imports(MODULES)


def test_the_scan_finds_the_packages():
    for top, directory in PACKAGES.items():
        assert top in MODULES, f"{directory}/__init__.py not found"
    assert "prtcore.testing.checks" in MODULES and MODULES["prtcore.testing"].is_package
    assert any(e.source == "prtcore.testing.checks" and e.target == "prtcore.testing.checks_forward" for e in EDGES)


def test_no_module_is_over_500_lines():
    long = sorted((len(m.source.splitlines()), _relative(m.path, REPO_ROOT)) for m in MODULES.values())
    offenders = [f"{path}: {n} lines" for n, path in reversed(long) if n > MAX_LINES]
    assert not offenders, _report(f"modules over {MAX_LINES} lines; split them into cohesive modules", offenders)


def test_the_import_graph_has_no_cycles():
    found = [describe_cycle(c, MODULES, EDGES, REPO_ROOT) for c in cycles(MODULES, EDGES)]
    assert not found, _report("import cycles (top-level and function-level imports; shortest cycles that cover "
                              "every module of each strongly connected component, with the import making each "
                              "step)", found)


def test_the_library_imports_no_application_and_no_plugin():
    found = layering_violations(MODULES, EDGES)
    library = {rule: lines for rule, lines in found.items() if rule.startswith("the library")}
    assert not library, "\n".join(_report(rule, lines) for rule, lines in library.items())


def test_applications_import_no_plugin():
    found = layering_violations(MODULES, EDGES).get("an application (prtcore/apps) imports a plugin", [])
    assert not found, _report("an application (prtcore/apps) imports a plugin", found)


def test_plugins_import_no_application():
    found = layering_violations(MODULES, EDGES).get("a plugin imports an application (prtcore.cli, prtcore.apps)", [])
    assert not found, _report("a plugin imports an application (prtcore.cli, prtcore.apps)", found)


# ---------------------------------------------------------------------------------------------- the scanner itself
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return discover({"pkg": tmp_path / "pkg"})


def test_scanner_resolves_relative_imports_and_imports_inside_functions(tmp_path):
    modules = _tree(tmp_path, {
        "pkg/__init__.py": "from .a import f\nfrom . import sub\n",
        "pkg/a.py": "import os\nfrom .sub.b import g\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "def g():\n    from ..a import f\n    return f\n",
        "pkg/sub/c.py": "from .. import a\n",
    })
    edges = {(e.source, e.target) for e in imports(modules, ("pkg",))}
    assert edges == {("pkg", "pkg.a"), ("pkg", "pkg.sub"), ("pkg.a", "pkg.sub.b"), ("pkg.sub.b", "pkg.a"),
                     ("pkg.sub.c", "pkg.a")}
    found = cycles(modules, imports(modules, ("pkg",)))
    assert found == [["pkg.a", "pkg.sub.b", "pkg.a"]]
    assert "pkg/sub/b.py:2" in describe_cycle(found[0], modules, imports(modules, ("pkg",)), tmp_path)


def test_scanner_a_package_importing_its_submodules_is_no_cycle_unless_they_import_it(tmp_path):
    files = {
        "pkg/__init__.py": "from .a import f\nfrom .b import g\nVERSION = 1\n",
        "pkg/a.py": "from . import b\ndef f():\n    return b.g()\n",
        "pkg/b.py": "def g():\n    return 1\n",
    }
    modules = _tree(tmp_path, files)
    assert cycles(modules, imports(modules, ("pkg",))) == []
    (tmp_path / "pkg/b.py").write_text("from . import VERSION\ndef g():\n    return VERSION\n")
    modules = discover({"pkg": tmp_path / "pkg"})
    assert cycles(modules, imports(modules, ("pkg",))) == [["pkg", "pkg.b", "pkg"], ["pkg.a", "pkg.b", "pkg", "pkg.a"]]


def test_floors():
    assert floor("prtcore.sampling") == floor("prtcore.testing.checks") == floor("prtcore") == "library"
    assert floor("prtcore.cli.main") == floor("prtcore.apps.demo.run") == floor("prtcore.apps") == "application"
    assert floor("prtcore.client") == "library" and floor("prt_torch.base") == "plugin"


def test_every_package_is_in_the_wheel():
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join((top, *init.parent.relative_to(root).parts))
             for top, root in PACKAGES.items() for init in root.rglob("__init__.py")}
    assert not found - listed, f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
