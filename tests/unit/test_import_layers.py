"""No import cycles between the top-level packages of cilium_py, and the API's manners.

How: every ``.py`` file under the directories setup.cfg maps into ``cilium_py`` is parsed
with :mod:`ast`; each ``import``/``from ... import`` (relative ones resolved, those inside
functions and ``TYPE_CHECKING`` blocks included: a lazy import is still a dependency)
that names another top-level package (``agent``, ``api``, ``datapath``, ..., ``cni``,
``mesos``; single modules such as ``errors`` count as packages) becomes an edge of a
graph, and the graph must have no cycle. A cycle is reported with the files that make
each of its edges. Imports from outside cilium_py are ignored.
"""

from __future__ import annotations

import ast
import configparser
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = "cilium_py"

Graph = dict[str, dict[str, set[str]]]  # package -> imported package -> files


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """setup.cfg's package_dir: ``cilium_py`` -> plugin, ``cilium_py.cni`` -> cni, ..."""
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    out = {}
    for line in cfg["options"]["package_dir"].strip().splitlines():
        name, _, rel = line.partition("=")
        out[name.strip()] = root / rel.strip()
    return out


def modules(dirs: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the mapped directories.

    A sub-directory mapped on its own (cilium_py.cni = cni) is named by its own mapping.
    """
    found: dict[str, Path] = {}
    for name, base in sorted(dirs.items(), key=lambda item: len(item[0])):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if any(p.startswith(".") for p in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts]) if parts else name] = path
    return found


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names of everything ``tree`` imports (``from a import b`` yields a.b)."""
    package = module if is_package else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names += [f"{prefix}.{alias.name}" for alias in node.names]
    return names


def top_of(name: str) -> str | None:
    """The top-level package under cilium_py that ``name`` belongs to (None: outside)."""
    parts = name.split(".")
    if parts[0] != TOP:
        return None
    return parts[1] if len(parts) > 1 else TOP


def import_graph(root: Path = ROOT) -> Graph:
    graph: Graph = defaultdict(lambda: defaultdict(set))
    mods = modules(package_dirs(root))
    for module, path in mods.items():
        source = top_of(module)
        tree = ast.parse(path.read_text(), str(path))
        for name in imported_modules(tree, module, path.name == "__init__.py"):
            target = top_of(name)
            if target is None or target == source:
                continue
            if target not in {top_of(m) for m in mods}:
                target = TOP  # an attribute of the root package (``__version__``)
            if target != source:
                graph[source][target].add(str(path.relative_to(root)))
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def describe(graph: Graph, cycle: list[str]) -> str:
    return "\n".join(f"  {a} -> {b}: {', '.join(sorted(graph[a][b]))}"
                     for a, b in zip(cycle, cycle[1:], strict=False))


def test_no_import_cycle_between_top_level_packages() -> None:
    graph = import_graph()
    # The graph is real: the agent composes its subsystems.
    assert {"endpoint", "datapath", "api"} <= set(graph["agent"])
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between packages:\n" + describe(graph, cycle or [])


def test_the_checker_finds_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "setup.cfg").write_text("[options]\npackage_dir =\n    cilium_py = src\n")
    for pkg, body in {"a": "from ..b import thing\n", "b": "def f():\n    from ..c import x\n",
                      "c": "from cilium_py.a.mod import y\n"}.items():
        (tmp_path / "src" / pkg).mkdir(parents=True)
        (tmp_path / "src" / pkg / "__init__.py").write_text("")
        (tmp_path / "src" / pkg / "mod.py").write_text(body)
    (tmp_path / "src" / "__init__.py").write_text("")
    graph = import_graph(tmp_path)
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert "src/b/mod.py" in describe(graph, ["a", "b", "c", "a"])


def test_only_the_agent_imports_the_api() -> None:
    graph = import_graph()
    importers = sorted(pkg for pkg, targets in graph.items() if "api" in targets)
    assert importers == ["agent"]


# Underscored names that are the public API of Flask/werkzeug, not anybody's internals.
FLASK_API = {"_get_current_object"}


def test_api_routes_use_public_surfaces_only() -> None:
    """No ``obj._private`` in plugin/api: routes reach the agent's subsystems (the endpoint
    manager, the policy manager, the datapath) through their public methods."""
    offenders = []
    for path in sorted((package_dirs()[TOP] / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not own and not node.attr.startswith("__") and node.attr not in FLASK_API:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert offenders == []
