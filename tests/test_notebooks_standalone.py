"""Every chapter runs alone, as readers open it: one .ipynb in an empty folder.

The package comes from a wheel built from this checkout (so the committed
results must travel as package data), installed into a private folder that is
put first on the kernel's path; the dependencies come from the test
environment. No checkout is around the notebook: a chapter that reads
``../results`` or imports a repository script fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def installed_package(tmp_path_factory) -> Path:
    """esmeta_core installed from a wheel of this checkout into a folder of its own."""
    wheels, target = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    return target


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapter_runs_alone_in_an_empty_folder(notebook, installed_package, tmp_path, monkeypatch):
    alone = tmp_path / notebook.name
    shutil.copy(notebook, alone)
    monkeypatch.setenv("PYTHONPATH", str(installed_package))  # the kernel imports the wheel
    monkeypatch.setenv("ESMETA_QUICK", "1")
    monkeypatch.delenv("ESMETA_RESULTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(alone, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    where = "".join(o.get("text", "") for o in code[0].outputs)
    assert "backend" in where, "the setup cell reports the runtime"
    imported = subprocess.run(
        [sys.executable, "-c", "import esmeta_core; print(esmeta_core.__file__)"],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=True,
    ).stdout
    assert str(installed_package) in imported, "the test must run the installed wheel"
