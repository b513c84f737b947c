"""The README stays a short front door whose numbers and code are true.

Its headline table is regenerated from the result files (``scripts/readme_figure.py``), its
Python snippet is executed, its length is bounded, and the files and pages it links exist.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 200


def load_script():
    spec = importlib.util.spec_from_file_location(
        "readme_figure", ROOT / "scripts" / "readme_figure.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def between(text: str, name: str) -> str:
    start, end = f"<!-- {name}: start -->", f"<!-- {name}: end -->"
    return text.split(start, maxsplit=1)[1].split(end, maxsplit=1)[0]


def test_readme_is_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_headline_table_matches_the_result_files():
    script = load_script()
    text = README.read_text()
    assert script.with_table(text, script.headline_table()) == text, (
        "README.md's headline table is out of date: run python scripts/readme_figure.py"
    )
    rows = script.headline_rows()
    assert 1 <= len(rows) <= 8
    for _, _, files in rows:  # each row names a committed file or run folder
        for name in re.findall(r"`([^`]+)`", files):
            assert (ROOT / name).exists(), name


def test_headline_table_is_regenerated_from_the_files(tmp_path):
    """Changing a number in a result file changes the table (it is not copied text)."""
    script = load_script()
    for name in dir(script):  # the result files and run folders the script reads
        value = getattr(script, name)
        if name.isupper() and isinstance(value, str) and value.startswith("results/"):
            source, target = ROOT / value, tmp_path / value
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy(source, target)
    path = tmp_path / script.VS_EVOSAX
    path.write_text(path.read_text().replace('"speedup": 0.94', '"speedup": 0.5'))
    assert "0.5-1.09x the speed" in script.headline_table(tmp_path)
    assert "0.5-1.09x" not in script.headline_table()


def test_figure_is_committed_and_small():
    figure = ROOT / "docs" / "figures" / "es_vs_backprop.png"
    assert figure.is_file() and figure.stat().st_size < 150_000
    text = README.read_text()
    assert "docs/figures/es_vs_backprop.png" in text
    script = load_script()  # the caption names the runs the figure reads
    for run in (script.BACKPROP_RUN, script.MAIN_RUN, script.LONG_RUN):
        assert f"`{run}/`" in text, run


def test_snippet_runs_and_the_loss_falls():
    block = between(README.read_text(), "snippet")
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 15  # ruff-formatted
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md snippet", "exec"), {"__name__": "readme_snippet"})
    losses = [float(x) for x in re.findall(r"loss ([0-9.]+)", out.getvalue())]
    assert len(losses) == 4, out.getvalue()
    # What the README says it prints: 0.431 at step 0, about 0.003 at step 300.
    claim = re.search(
        r"from ([0-9.]+) at\s+step 0\s+to\s+about\s+([0-9.]+)\s+at\s+step\s+300", README.read_text()
    )
    assert claim, "the README no longer says what the snippet prints"
    assert f"{losses[0]:.3f}" == claim[1], (losses, claim[0])
    assert abs(losses[-1] - float(claim[2])) <= 0.005, (losses, claim[0])
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses


def test_local_links_resolve():
    """Relative links and image paths in the README name files in the repository."""
    targets = set(re.findall(r"\]\(([^)#]+)\)", README.read_text()))
    local = {t for t in targets if not t.startswith("http")}
    assert local, "the README links no local file"
    assert not [t for t in local if not (ROOT / t).exists()]


def test_license_is_the_apache_2_text_and_the_metadata_says_so():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0")
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)  # SPDX, setuptools >= 77
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.M)
