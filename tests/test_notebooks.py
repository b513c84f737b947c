"""The book: jupytext pairs in sync, quick mode under CI, conventions, and the build.

nbval itself runs every notebook (``--nbval-lax`` in pyproject's pytest options).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from esmeta_core import runtime

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.md"))


def test_there_are_notebooks():
    assert len(SOURCES) >= 8


@pytest.mark.parametrize("md", SOURCES, ids=[p.stem for p in SOURCES])
def test_md_and_ipynb_pair_is_in_sync(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run scripts/execute_notebooks.py {md.name}"
    source = [(c.cell_type, c.source.strip()) for c in jupytext.read(md).cells]
    paired = [(c.cell_type, c.source.strip()) for c in jupytext.read(ipynb).cells]
    assert source == paired, f"{md.name} changed: run scripts/execute_notebooks.py {md.name}"


@pytest.mark.parametrize("md", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_follows_the_conventions(md):
    text = md.read_text()
    nb = jupytext.read(md)
    first = nb.cells[0].source
    assert first.startswith("# ") and "colab.research.google.com" in first and "kaggle" in first
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "import esmeta_core" in code[0].source and "except ImportError" in code[0].source
    assert 'os.environ.get("ESMETA_QUICK"' in text
    assert not any("setup_tpu" in c.source for c in code), "setup_tpu() is obsolete"
    executed = jupytext.read(md.with_suffix(".ipynb"))
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code"), (
        f"{md.with_suffix('.ipynb').name} has no outputs: execute it in full mode"
    )


@pytest.mark.parametrize("md", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_code_cell_with_outputs_was_executed(md):
    """nbval refuses a cell that has outputs but no execution count ("Unrun reference cell")."""
    executed = jupytext.read(md.with_suffix(".ipynb"))
    unrun = [
        i
        for i, c in enumerate(executed.cells)
        if c.cell_type == "code" and c.get("outputs") and c.get("execution_count") is None
    ]
    assert not unrun, (
        f"cells {unrun} of {md.with_suffix('.ipynb').name} have outputs but were never run: "
        f"run scripts/execute_notebooks.py notebooks/{md.name}"
    )


def test_quick_mode_is_on_under_ci():
    if os.environ.get("CI"):
        assert os.environ.get("ESMETA_QUICK") == "1"
    else:
        pytest.skip("not under CI")


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """The book built by the README's command (scripts/build_book.sh, which fetches the
    local MathJax) with ``-W -n`` (warnings are errors)."""
    out = tmp_path_factory.mktemp("book")
    cmd = ["bash", str(ROOT / "scripts" / "build_book.sh")]
    cmd += ["--path-output", str(out), "-W", "-n", "--keep-going"]
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, check=False, env=env
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out / "_build" / "html"


def test_readme_builds_the_book_with_the_ci_command():
    """One build command: the README's is the one the tests and scripts/check_book.py run."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The book") :]
    section = section[: section.index("\n## ", 1)]
    assert "bash scripts/build_book.sh" in section
    assert "jupyter-book build ." not in section


def test_book_builds_without_warnings(built_book):
    html = built_book
    index = (html / "book" / "intro.html").read_text()
    for md in SOURCES:
        assert f"{md.stem}.html" in index, f"the front page does not link {md.stem}"
        page = (html / "notebooks" / f"{md.stem}.html").read_text()
        repository = runtime.REPOSITORY.removeprefix("https://github.com/")
        launch = f"github/{repository}/blob/{runtime.REVISION}/notebooks/{md.stem}.ipynb"
        assert f"colab.research.google.com/{launch}" in page


def test_book_serves_mathjax_locally_so_math_renders_offline(built_book):
    page = (built_book / "notebooks" / "01_es_from_scratch.html").read_text()
    assert 'src="../_static/mathjax/tex-chtml.js' in page
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists()


def test_rendered_book_has_no_math_errors_raw_tex_missing_images_or_broken_links(built_book):
    """scripts/check_book.py on the built book, in headless Chromium (about 2 minutes)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium here (.ci/run installs it: apt-get install -y chromium)")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "check_book.py"),
            "--no-build",
            "--html",
            str(built_book),
            "--chromium",
            chromium,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_rendered_book_has_no_raw_tables_raw_tex_or_overflowing_lines(built_book):
    """The static pass of scripts/check_book.py (no Chromium needed): raw ``|`` tables,
    raw TeX delimiters, a missing MathJax and code or output lines wider than the column."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_book.py"), "--no-build", "--static"]
        + ["--html", str(built_book)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_tpu_chapter_opens_on_a_tpu_runtime():
    metadata = jupytext.read(ROOT / "notebooks" / "06_tpu_meta_training.ipynb").metadata
    assert metadata["accelerator"] == "TPU"
    assert metadata["kaggle"]["accelerator"].startswith("tpu")
