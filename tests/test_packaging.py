"""What pip installs: every subpackage, and the result files the chapters read as package data."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "esmeta_core").rglob("__init__.py")
    }
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"


# The result files each chapter reads when it runs (through esmeta_core.resources), so a
# chapter opened from an installed package finds them. The wheel ships these and no other
# file of results/.
_RUN = ("config.json", "eval.json", "metrics.jsonl", "summary.json")
CHAPTER_READS = {
    "03_protonet_backprop": [f"protonet/backprop-5w5s/{f}" for f in _RUN],
    "04_es_protonet": [
        *(f"protonet/{run}/{f}" for run in ("main", "long", "es-5w5s") for f in _RUN),
        *(
            f"protonet/main-before-issue-17/{f}"
            for f in ("config.json", "metrics.jsonl", "summary.json")
        ),
        *(
            f"protonet/{run}/{f}"
            for run in ("long-18500steps", "long-conv4-32", "long-pop64")
            for f in ("config.json", "eval.json", "metrics.jsonl", "summary.json")
        ),
        *(
            f"protonet/long-sep32-lr1e-2/{f}"
            for f in ("config.json", "metrics.jsonl", "summary.json")
        ),
        *(
            f"protonet/{run}/{f}"
            for run in ("main-zscore-lr6e-3/main-seeds/s0", "long-conv4-32")
            for f in ("es_plateau.json", "es_plateau_at_init.json")
        ),
        "protonet/ablations.json",
        "protonet/capacity.json",
        "protonet/capacity-2000steps/capacity.json",
        "protonet/main_seeds.json",
        *(
            f"protonet/{r}/main_seeds.json"
            for r in ("main-2400steps", "main-lr6e-3", "main-zscore-lr6e-3")
        ),
    ],
    "06_tpu_meta_training": [
        "protonet/population_sweep.json",
        "protonet/scaling.json",
        "protonet/capacity.json",
    ],
    "07_memory_and_throughput": [
        f"benchmarks/{name}.json"
        for name in ("conv4_forward", "es_efficiency", "memory_vs_backprop", "vs_evosax")
    ],
    "08_evograd": [
        "benchmarks/evograd_scaling.json",
        "evograd/toy_1d.json",
        "evograd/rotation.json",
        "evograd/mwn.json",
        "evograd/fwt-tseng-init/fwt.json",
    ],
    "09_vsml": ["vsml/generalisation.json", "vsml/invariance.json", "vsml/long.json"],
}
SHIPPED = {f for files in CHAPTER_READS.values() for f in files}


def _package_data() -> list[str]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return setuptools["package-data"]["esmeta_core.results"]


def test_package_data_lists_the_files_the_chapters_read_and_no_other():
    listed = _package_data()
    assert len(listed) == len(set(listed)), "a result file is listed twice"
    assert set(listed) == SHIPPED, {
        "missing": sorted(SHIPPED - set(listed)),
        "not read by a chapter": sorted(set(listed) - SHIPPED),
    }
    missing = [f for f in listed if not (ROOT / "results" / f).is_file()]
    assert not missing, f"listed in pyproject.toml but not under results/: {missing}"


def test_every_result_file_a_chapter_names_in_its_code_is_shipped():
    """Paths in the chapters' code cells (load_result, result_path, results_dir() / ...)."""
    pattern = re.compile(
        r"(?:load_result|result_path)\(f?\"([^\"]+)\"\)|results_dir\(\) / \"([^\"]+)\""
    )
    for chapter in CHAPTER_READS:
        text = (ROOT / "notebooks" / f"{chapter}.md").read_text()
        code = "\n".join(re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S))
        for match in pattern.finditer(code):
            path = match.group(1) or match.group(2)
            if "{" in path:  # an f-string: its expansions are listed by hand above
                continue
            assert path in SHIPPED or any(f.startswith(path + "/") for f in SHIPPED), (
                f"{chapter} reads results/{path}: add it to CHAPTER_READS and pyproject.toml"
            )


def test_shipped_results_are_small():
    total = sum((ROOT / "results" / f).stat().st_size for f in SHIPPED)
    assert total < 1.5e6, f"the shipped result files take {total / 1e6:.2f} MB"


@pytest.mark.slow
def test_wheel_ships_exactly_the_chapters_result_files(tmp_path):
    # Built from a copy: an in-tree build reuses a stale build/ folder of an earlier build.
    source = tmp_path / "source"
    for name in ("esmeta_core", "results"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("LICENSE*")]:
        shutil.copy(path, source / path.name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    prefix = "esmeta_core/results/"
    names = {n[len(prefix) :] for n in zipfile.ZipFile(wheel).namelist() if n.startswith(prefix)}
    assert names - {"__init__.py"} == SHIPPED, sorted(names ^ SHIPPED)[:5]
    assert "esmeta_core/data/digits.npz" in zipfile.ZipFile(wheel).namelist()
    assert wheel.stat().st_size < 1.5e6, f"the wheel is {wheel.stat().st_size / 1e6:.2f} MB"


def _by_name(requirements) -> dict[str, str]:
    """``{"jax": ">=0.7.0", ...}``: each requirement's name and its specifier and marker."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    parsed = [Requirement(r) for r in requirements]
    names = [canonicalize_name(r.name) for r in parsed]
    assert len(set(names)) == len(names), f"a package is listed twice: {names}"
    return {n: f"{r.specifier}; {r.marker or ''}" for n, r in zip(names, parsed, strict=True)}


def test_environment_yml_has_the_core_and_dev_floors_and_no_tensorflow():
    """environment.yml and pyproject.toml name the same packages with the same floors;
    the base environment forces no TensorFlow (the tfds extra is added with pip)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "environment.yml").read_text()
    pip = [
        line.strip()[len("- ") :].strip('"')
        for line in text.splitlines()
        if line.startswith("      - ")
    ]
    assert "-e ." in pip, "environment.yml installs esmeta_core itself"
    listed = _by_name(r for r in pip if r != "-e .")
    wanted = _by_name([*project["dependencies"], *project["optional-dependencies"]["dev"]])
    assert listed == wanted, {
        "pyproject.toml only": sorted(set(wanted.items()) - set(listed.items())),
        "environment.yml only": sorted(set(listed.items()) - set(wanted.items())),
    }
    assert not any(name.startswith("tensorflow") for name in listed)
    python = re.search(r"^  - python=([\d.]+)$", text, re.M).group(1)
    floor = re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"]).groups()
    assert tuple(map(int, python.split("."))) >= tuple(map(int, floor)), (
        f"environment.yml's python={python} is below requires-python"
    )


def test_shipped_digits_equal_scikit_learns():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from esmeta_core.data.digits import raw_digits

    images, labels = raw_digits()
    expected = sklearn_datasets.load_digits()
    assert images.dtype == labels.dtype == np.uint8
    np.testing.assert_array_equal(images, expected.images)
    np.testing.assert_array_equal(labels, expected.target)


def test_every_data_file_of_the_package_is_package_data():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = setuptools["package-data"].get("esmeta_core.data", [])
    files = [
        p.name
        for p in (ROOT / "esmeta_core" / "data").iterdir()
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert sorted(files) == sorted(listed), "list esmeta_core/data's files in package-data"


_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def _guarded_nodes(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside a ``try:`` body whose handlers catch ImportError."""
    guarded = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {t.id for t in types if isinstance(t, ast.Name)}
        if caught & _IMPORT_ERRORS:
            guarded |= {id(n) for statement in node.body for n in ast.walk(statement)}
    return guarded


def _imported_modules(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """Top-level names of ``import x``, ``from x import y`` and ``import_module("x")``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.args[0].value, node))
    return [(name.split(".")[0], node) for name, node in found]


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distribution_names(module: str) -> set[str]:
    """The distributions that install ``module`` (``PIL``: pillow), else the module's name."""
    names = _packages_distributions().get(module) or [module]
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {
        re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]).lower()
        for r in requirements
    }


def test_every_core_import_is_declared():
    """Each third-party import of esmeta_core is a declared dependency; an optional one
    (inside ``try: ... except ImportError``, which turns it into a message naming what to
    install) is declared in an extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = _requirement_names(project["dependencies"])
    optional = _requirement_names(
        [r for extra in project["optional-dependencies"].values() for r in extra]
    )
    undeclared = []
    for path in sorted((ROOT / "esmeta_core").rglob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = _guarded_nodes(tree)
        for module, node in _imported_modules(tree):
            if module in sys.stdlib_module_names or module == "esmeta_core":
                continue
            allowed = required | (optional if id(node) in guarded else set())
            if not _distribution_names(module) & allowed:
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                undeclared.append(f"{where} imports {module}")
    assert not undeclared, "declare in pyproject.toml [project] dependencies: " + "; ".join(
        undeclared
    )
