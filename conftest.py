"""nbval runs every chapter the way a reader opens it: esmeta_core from a wheel, not the checkout.

For each notebook nbval runs (``notebooks/*.ipynb``), the kernel starts with
``PYTHONPATH`` set to a folder holding esmeta_core installed from a wheel of this
checkout (built once per test process), and without ``ESMETA_RESULTS_DIR``. So a
chapter passes only if the installed package is enough: its committed results
must travel as package data. The dependencies come from the test environment.
``tests/test_notebooks_standalone.py`` checks that the wheel is what such a kernel
imports, and that no chapter reaches into the checkout around it.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
_INSTALLED: list[Path] = []  # this process's wheel install, built on first use


def _quiet(command: list[str]) -> None:
    """Runs ``command``; its output (setuptools' warnings) is shown only if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def installed_package_dir() -> Path:
    """A folder with esmeta_core installed from a wheel of this checkout (built once)."""
    if not _INSTALLED:
        work = Path(tempfile.mkdtemp(prefix="esmeta-wheel-"))
        atexit.register(shutil.rmtree, work, True)
        wheels, target = work / "wheel", work / "site"
        pip = [sys.executable, "-m", "pip"]
        # setuptools builds in the checkout's build/: one build at a time (xdist workers).
        with open(Path(tempfile.gettempdir()) / "esmeta-wheel-build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _quiet([*pip, "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)])
        (wheel,) = wheels.glob("*.whl")
        _quiet([*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)])
        _INSTALLED.append(target)
    return _INSTALLED[0]


@pytest.fixture(scope="session")
def installed_package() -> Path:
    return installed_package_dir()


def _is_notebook_cell(item: pytest.Item) -> bool:
    return item.path.suffix == ".ipynb"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Starts nbval's kernel (set up with a notebook's first cell) on the installed wheel."""
    if not _is_notebook_cell(item):
        yield
        return
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "ESMETA_RESULTS_DIR")}
    os.environ["PYTHONPATH"] = str(installed_package_dir())
    os.environ.pop("ESMETA_RESULTS_DIR", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
