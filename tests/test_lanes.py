"""The CI lanes (scripts/lane.sh): the minimum lane installs exactly the declared floors."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins(name: str) -> dict[str, Version]:
    """``{package: version}`` of a constraints file's ``name==version`` lines."""
    pins = {}
    for raw in (ROOT / ".ci" / f"constraints-{name}.txt").read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line:
            package, version = line.split("==")
            pins[package.lower().replace("_", "-")] = Version(version)
    return pins


def _floors() -> dict[str, Version]:
    """``{package: lower bound}`` of pyproject.toml's run-time dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for text in project["dependencies"]:
        requirement = Requirement(text)
        (floor,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        floors[requirement.name.lower().replace("_", "-")] = floor
    return floors


def test_every_declared_floor_is_what_the_minimum_lane_installs():
    """A floor below the pinned version would claim support the lane never tested; a pin
    above the floor would leave the floor untested."""
    floors, pins = _floors(), _pins("min")
    assert sorted(floors) == sorted(set(pins) - {"jaxlib"})
    assert {name: pins[name] for name in floors} == floors
    assert pins["jaxlib"] == floors["jax"]


def test_requires_python_is_the_minimum_lane_interpreter():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lane = (ROOT / "scripts" / "lane.sh").read_text()
    (minor,) = re.findall(r'min\) DEFAULT_PYTHON=".*?/(3\.\d+)\.\d+/bin/python"', lane)
    assert project["requires-python"] == f">={minor}"


def test_colab_constraints_name_their_source_and_pin_colabs_jax():
    text = (ROOT / ".ci" / "constraints-colab.txt").read_text()
    assert "googlecolab/backend-info" in text and "pip-freeze.tpu.txt" in text
    pins = _pins("colab")
    assert pins["jax"] == pins["jaxlib"] == Version("0.7.2")
    assert "tensorflow" not in pins  # Colab's TPU image has no TensorFlow
    for name, floor in _floors().items():  # Colab's versions satisfy every floor
        assert pins[name] >= floor, name
