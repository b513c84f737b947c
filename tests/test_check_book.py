"""scripts/check_book.py can fail: a page with each defect is reported, a clean one is not.

The defects are those a reader meets in a bad build: a table that a code cell printed as
Markdown left as raw ``|`` text, TeX delimiters left raw (no MathJax, or math outside a
math element), and code or output lines wider than the column.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_book", ROOT / "scripts" / "check_book.py")
check_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_book)

CLEAN = """<html><head><script src="_static/mathjax/tex-chtml.js"></script></head><body>
<p>The loss <span class="math notranslate nohighlight">\\(|x|^2\\)</span> is small.</p>
<div class="math notranslate nohighlight">\\[ \\theta \\]</div>
<table><tr><td>1</td><td>2</td></tr></table>
<div class="cell_output"><pre>| a | b |  (printed text in an output is not prose)
short line</pre></div>
<p>One | in prose is fine.</p>
</body></html>"""

DEFECTS = {
    "pipe table": "<p>| method | accuracy |\n|---|---|\n| ES | 71.0 |</p>",
    "raw TeX delimiter \\(": "<p>the mean \\(\\mu\\) of the population</p>",
    "raw TeX delimiter $$": "<p>$$ x^2 $$</p>",
    "column 80": "<div class='cell_output'><pre>" + "x" * 81 + "</pre></div>",
    "code column 80": "<div class='cell_input'><pre><span>print(</span>" + "y" * 80 + ")</pre>",
}


@pytest.fixture
def page(tmp_path):
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    return tmp_path / "page.html"


def test_a_clean_page_passes(page):
    assert check_book.static_problems(CLEAN, page) == []


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_defect_is_reported(page, defect):
    html = CLEAN.replace("</body>", DEFECTS[defect] + "</body>")
    problems = check_book.static_problems(html, page)
    assert len(problems) >= 1, defect
    expected = {
        "pipe table": "raw pipe table",
        "raw TeX delimiter \\(": "raw TeX delimiter \\(",
        "raw TeX delimiter $$": "raw TeX delimiter $$",
        "column 80": "81-character line",
        "code column 80": "87-character line",
    }[defect]
    assert any(expected in p for p in problems), problems


def test_math_without_its_mathjax_script_is_reported(tmp_path):
    """The build that skipped scripts/build_book.sh: the page points at a missing MathJax."""
    problems = check_book.static_problems(CLEAN, tmp_path / "page.html")
    assert any("MathJax script" in p and "missing" in p for p in problems), problems
    no_script = CLEAN.replace('<script src="_static/mathjax/tex-chtml.js"></script>', "")
    problems = check_book.static_problems(no_script, tmp_path / "page.html")
    assert any("no MathJax script" in p for p in problems), problems


def test_the_script_fails_on_a_built_page_with_a_defect(page, capsys):
    """main() over a folder laid out like a build: exit status 1 and the page named."""
    html = page.parent / "html"
    (html / "notebooks").mkdir(parents=True)
    (html / "_static" / "mathjax").mkdir(parents=True)
    (html / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    good = CLEAN.replace("_static/", "../_static/")
    (html / "notebooks" / "good.html").write_text(good)
    (html / "notebooks" / "bad.html").write_text(good.replace("</body>", DEFECTS["pipe table"]))
    status = check_book.main(["--no-build", "--static", "--html", str(html)])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL notebooks_bad" in out and "ok   notebooks_good" in out
    (html / "notebooks" / "bad.html").unlink()
    assert check_book.main(["--no-build", "--static", "--html", str(html)]) == 0
