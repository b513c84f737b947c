"""The import rules of docs/ARCHITECTURE.md hold for every module (imports parsed with ast).

Three rules, each with a self-test on a small tree that breaks it:

- every project import (``import``, ``from ... import``, also inside functions, and
  ``importlib.import_module`` / ``__import__`` with a literal or f-string name) stays
  inside what the module's part may import;
- no relative imports (``from . import x``, ``from .x import y``): they are resolved
  and checked against the table too, but forbidden, so every import names its module;
- no import cycles: no module reaches itself through project imports (lazy imports
  inside functions count, as they run in the same process).
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGES = ("esmeta_core", "benchmarks", "scripts")
CHECKED = PACKAGES[:2]  # what the table governs imports of (scripts import nothing from scripts)


def layering_table(text: str) -> list[tuple[str, list[str], set[str]]]:
    """``(part, module patterns, parts it may import)`` rows, in table order."""
    body = text.split("<!-- layering-table: start -->")[1].split(
        "<!-- layering-table: end -->", maxsplit=1
    )[0]
    rows = []
    for line in body.strip().splitlines()[2:]:  # after the header and the --- line
        part, modules, allowed = (cell.strip() for cell in line.strip().strip("|").split("|"))
        patterns = re.findall(r"`([^`]+)`", modules)
        rows.append((part, patterns, {a.strip() for a in allowed.split(",") if "(" not in a}))
    return rows


RULES = layering_table(DOC.read_text())


def part_of(module: str) -> str | None:
    for part, patterns, _ in RULES:
        if any(fnmatch.fnmatchcase(module, p) or f"{module}.*" == p for p in patterns):
            return part
    return None


def allowed_parts(part: str) -> set[str]:
    return next(a for p, _, a in RULES if p == part)


class Import(NamedTuple):
    """One project import: the module it reaches, its line and how it is written."""

    module: str
    line: int
    how: str  # "import", "from", "relative", "importlib"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path = ROOT) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module ``from``-import ``node`` starts from (relative ones resolved)."""
    if node.level == 0:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _import_call_name(node: ast.Call) -> str | None:
    """The literal module name of ``importlib.import_module("x")`` / ``__import__("x")``.

    For an f-string, the constant text before the first field, up to its last dot
    (``f"esmeta_core.experiments.{name}"`` reaches ``esmeta_core.experiments``). A
    relative name (``import_module(".x", package="p")``) is resolved against a literal
    ``package``, and left starting with ``.`` without one.
    """
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        name = arg.value
        package = next((k.value for k in node.keywords if k.arg == "package"), None)
        if name.startswith(".") and isinstance(package, ast.Constant):
            dots = len(name) - len(name.lstrip("."))
            base = package.value.split(".")
            return ".".join([*base[: len(base) - (dots - 1)], name[dots:]])
        return name
    if isinstance(arg, ast.JoinedStr) and arg.values:
        first = arg.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value.rpartition(".")[0] or None
    return None


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    """Project imports in ``path`` anywhere (top level or inside functions), resolved."""
    name, is_package = module_name(path, root), path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [Import(a.name, node.lineno, "import") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, is_package)
            how = "relative" if node.level else "from"
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append(Import(sub if is_module(sub, root) else base, node.lineno, how))
        elif isinstance(node, ast.Call) and (target := _import_call_name(node)):
            relative = target.startswith(".") or any(k.arg == "package" for k in node.keywords)
            found.append(Import(target, node.lineno, "relative" if relative else "importlib"))
    return [i for i in found if i.how == "relative" or i.module.split(".")[0] in CHECKED]


def problems(path: Path, root: Path = ROOT) -> list[str]:
    """Every broken rule of one module (its part's row, no relative import), one line each."""
    name = module_name(path, root)
    part = part_of(name)
    if part is None:
        return [f"{name} is in no row of the table in {DOC.name}: add it there."]
    out = []
    for imp in imports_of(path, root):
        where = f"{path.relative_to(root)}:{imp.line}"
        if imp.how == "relative":
            out.append(f"{where}: relative import of {imp.module}; write it absolute.")
        target = part_of(imp.module)
        if target not in allowed_parts(part):
            out.append(
                f"{where}: {name} ({part}) imports {imp.module} ({target}) by {imp.how}; "
                f"{part} may import only {sorted(allowed_parts(part))}."
            )
    return out


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Module cycles among ``root``'s packages, each as its modules, sorted (Tarjan's SCCs)."""
    paths = [p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))]
    graph = {module_name(p, root): {i.module for i in imports_of(p, root)} for p in paths}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v] & graph.keys()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while not scc or scc[-1] != v:
                scc.append(stack.pop())
            if len(scc) > 1 or v in graph[v]:
                cycles.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


MODULES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_table_names_every_part_it_allows():
    parts = {part for part, _, _ in RULES}
    assert {"data", "models", "estimators", "benchmarks", "experiments"} <= parts
    for part, _, allowed in RULES:
        assert allowed <= parts, (part, allowed - parts)


def test_every_module_the_table_names_exists():
    for _, patterns, _ in RULES:
        for pattern in patterns:
            name = pattern.removesuffix(".*")
            exists = is_module(name) or ROOT.joinpath(*name.split(".")).is_dir()
            assert exists, f"{pattern} in {DOC.name} is gone: take it out of the table"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES])
def test_module_imports_only_what_its_part_may(path):
    assert not problems(path), "\n".join(problems(path))


def test_no_import_cycles():
    assert import_cycles() == [], "modules that import each other (break it with a third one)"


def test_the_rules_catch_a_model_importing_data():
    # The check itself can fail: a model importing data is outside its row.
    allowed = allowed_parts("models")
    assert part_of("esmeta_core.protonet") == "models"
    assert part_of("esmeta_core.data.episodes") not in allowed
    assert part_of("esmeta_core.experiments.mlp") not in allowed_parts("benchmarks")


BROKEN_TREE = {
    "esmeta_core/__init__.py": "",
    "esmeta_core/data/__init__.py": "",
    # a cycle inside a part, one side of it lazy
    "esmeta_core/data/a.py": "from esmeta_core.data import b\n",
    "esmeta_core/data/b.py": "def f():\n    from esmeta_core.data.a import x\n",
    # upward: a model importing data, inside a function
    "esmeta_core/protonet.py": "def f():\n    from esmeta_core.data import a\n",
    # relative, and upward through it: an estimator importing a model
    "esmeta_core/es.py": "from . import protonet\n",
    # through importlib and __import__: an estimator importing training and entry
    "esmeta_core/evograd.py": (
        "import importlib\n"
        "train = importlib.import_module('esmeta_core.train')\n"
        "cli = __import__('esmeta_core.cli')\n"
    ),
    "esmeta_core/optim.py": (
        "import importlib\n"
        "m = importlib.import_module(f'esmeta_core.{1}')\n"
        "t = importlib.import_module('.train', package='esmeta_core')\n"
    ),
    # allowed: what must not be reported
    "esmeta_core/nets.py": "import importlib\nfrom esmeta_core import es\nimport numpy\n",
    "esmeta_core/train.py": "",
    "esmeta_core/cli.py": "",
}


@pytest.fixture
def broken_tree(tmp_path):
    for rel, text in BROKEN_TREE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    for pkg in PACKAGES[1:]:
        (tmp_path / pkg).mkdir()
    return tmp_path


def test_the_checker_reports_each_broken_rule(broken_tree):
    def found(rel):
        return "\n".join(problems(broken_tree / rel, broken_tree))

    assert "esmeta_core.data.a (data) by from" in found("esmeta_core/protonet.py")
    assert "relative import of esmeta_core.protonet" in found("esmeta_core/es.py")
    assert "esmeta_core.protonet (models) by relative" in found("esmeta_core/es.py")
    evograd = found("esmeta_core/evograd.py")
    assert "esmeta_core.train (training) by importlib" in evograd
    assert "esmeta_core.cli (entry) by importlib" in evograd
    optim = found("esmeta_core/optim.py")
    assert "imports esmeta_core (entry) by importlib" in optim
    assert "relative import of esmeta_core.train" in optim
    assert "esmeta_core.train (training) by relative" in optim
    assert found("esmeta_core/nets.py") == ""  # allowed imports are not reported
    assert found("esmeta_core/data/a.py") == found("esmeta_core/data/b.py") == ""
    assert import_cycles(broken_tree) == [["esmeta_core.data.a", "esmeta_core.data.b"]]


def test_relative_imports_resolve_like_python(broken_tree):
    init = broken_tree / "esmeta_core" / "data" / "__init__.py"
    init.write_text("from . import a\nfrom .b import f\nfrom .. import es\n")
    assert [(i.module, i.how) for i in imports_of(init, broken_tree)] == [
        ("esmeta_core.data.a", "relative"),
        ("esmeta_core.data.b", "relative"),
        ("esmeta_core.es", "relative"),
    ]
