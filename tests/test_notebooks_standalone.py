"""Every chapter runs alone, as readers open it: on the installed package, not the checkout.

nbval runs each chapter with esmeta_core from a wheel of this checkout, installed
into a folder of its own and put first on the kernel's ``PYTHONPATH`` (the root
``conftest.py``). These tests check the two halves of that claim: such a kernel
imports the wheel (whose committed results travel as package data), and no chapter
reaches into the checkout around it (``../results``, repository scripts, ``sys.path``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.md"))
REACHES_INTO_THE_CHECKOUT = re.compile(
    r"\.\./|sys\.path|\b(from|import) (scripts|benchmarks)\b|Path\(__file__\)|os\.chdir"
)


def _kernel_environment(installed: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(installed))
    env.pop("ESMETA_RESULTS_DIR", None)
    return env


def test_the_kernel_imports_the_wheel_and_finds_the_committed_results_in_it(
    installed_package, tmp_path
):
    probe = (
        "import json, esmeta_core\n"
        "from esmeta_core import resources\n"
        "print(json.dumps([esmeta_core.__file__, str(resources.results_dir()),"
        " sorted(p.name for p in resources.results_dir().iterdir())]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=_kernel_environment(installed_package),
        cwd=tmp_path,  # an empty folder: nothing of the checkout around
        check=True,
    )
    module, results, folders = json.loads(done.stdout)
    assert module.startswith(str(installed_package)), "the kernel must run the installed wheel"
    assert results.startswith(str(installed_package)), "results come with the package"
    assert {"protonet", "evograd", "vsml", "benchmarks"} <= set(folders)


@pytest.mark.parametrize("md", SOURCES, ids=[p.stem for p in SOURCES])
def test_chapter_code_never_reaches_into_the_checkout(md):
    code = [c.source for c in jupytext.read(md).cells if c.cell_type == "code"]
    for i, source in enumerate(code):
        found = REACHES_INTO_THE_CHECKOUT.search(source)
        assert found is None, f"{md.name}, code cell {i}: {found.group(0)!r} needs a checkout"


def test_notebook_cells_run_on_the_installed_wheel(request):
    """The hook that gives nbval's kernels the wheel is active for the notebooks."""
    hook = request.config.pluginmanager.get_plugin(str(ROOT / "conftest.py"))
    assert hook is not None and hasattr(hook, "pytest_runtest_setup")
