"""What pip installs: every subpackage, and the committed results as package data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

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


@pytest.mark.slow
def test_wheel_ships_the_committed_results(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    committed = {
        "esmeta_core/results/" + p.relative_to(ROOT / "results").as_posix()
        for p in (ROOT / "results").rglob("*")
        if p.suffix in (".json", ".png") and "checkpoint" not in p.name
    }
    assert committed and committed <= names, sorted(committed - names)[:5]


def test_environment_yml_lists_the_core_dev_and_tfds_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {*project["dependencies"], *extras["dev"], *extras["tfds"], "-e ."}
    listed = {
        line.strip()[len("- ") :].strip('"')
        for line in (ROOT / "environment.yml").read_text().splitlines()
        if line.startswith("      - ")
    }
    assert listed == wanted
