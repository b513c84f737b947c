"""Numbers in the prose match the result files they come from (docs/claims.toml).

Every number that the README, docs/ and the chapters' summaries quote from a file under
results/ (and that no code prints) is listed in docs/claims.toml with the file, the JSON
path of its value, a scale (100 for a fraction quoted in percent) and the decimals it
is rounded to. Each claim is checked both ways: the file's value, scaled and rounded,
is the text; and the text stands in the page (inside its ``context``, if one is given).
So editing a result file without the prose, or the prose without the file, fails here.

A JSON path is dot-separated keys and list selectors: ``rows[2]`` (by position) or
``rows[row=baseline]`` (the one element whose ``row`` is ``baseline``). A claim may
instead name ``function = "module:name"``: a function of the loaded file that derives the
number (e.g. where two interpolated memory curves cross), or, with a path too, a
function of the value there (``statistics:stdev`` of a list of per-seed values).
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_FILE = ROOT / "docs" / "claims.toml"
CLAIMS = tomllib.loads(CLAIMS_FILE.read_text())["claim"]
REQUIRED = ("page", "text", "file", "scale", "decimals")
TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]|\[([^=\]]+)=([^\]]+)\]")

sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed: import it from the checkout


def resolve(data: Any, path: str) -> Any:
    """The value at ``path`` (``a.b[2].c``, ``rows[row=baseline].mean``) in ``data``."""
    pos = 0
    path = path.replace("].", "]")
    while pos < len(path):
        match = TOKEN.match(path, pos)
        if not match:
            raise KeyError(f"cannot parse {path!r} at {pos}")
        key, index, field, wanted = match.groups()
        if key is not None:
            data = data[key]
        elif index is not None:
            data = data[int(index)]
        else:
            found = [x for x in data if isinstance(x, dict) and str(x.get(field)) == wanted]
            if len(found) != 1:
                raise KeyError(f"{len(found)} elements with {field} = {wanted} in {path!r}")
            data = found[0]
        pos = match.end()
        if pos < len(path) and path[pos] == ".":
            pos += 1
    return data


def value_of(claim: dict[str, Any], root: Path) -> float:
    """The claim's number: the value at its path, or its function of the file (or of
    the value at its path, when it has both)."""
    data = json.loads((root / claim["file"]).read_text())
    if "path" in claim:
        data = resolve(data, claim["path"])
    if "function" in claim:
        module, name = claim["function"].split(":")
        data = getattr(importlib.import_module(module), name)(data)
    return float(data)


def formatted(value: float, *, scale: float, decimals: int) -> str:
    """``value * scale`` rounded to ``decimals`` (negative: to tens, hundreds, ...).

    Example:
      >>> formatted(0.91567, scale=100, decimals=2), formatted(472.3, scale=1, decimals=-1)
      ('91.57', '470')
    """
    scaled = round(value * scale, decimals)
    return f"{scaled:.{max(decimals, 0)}f}"


def in_text(needle: str, text: str) -> bool:
    """``needle`` stands in ``text`` as a whole number (not inside a longer one)."""
    return re.search(rf"(?<![\d.,]){re.escape(needle)}(?![\d]|[.,]\d)", text) is not None


def claim_problems(claim: dict[str, Any], root: Path = ROOT) -> list[str]:
    """What is wrong with one claim, read from the files under ``root``; [] if nothing."""
    problems = [f"lacks {k}" for k in REQUIRED if k not in claim]
    if "path" not in claim and "function" not in claim:
        problems.append("needs a path or a function")
    if problems:
        return problems
    text = claim["text"]
    want = formatted(value_of(claim, root), scale=claim["scale"], decimals=claim["decimals"])
    if want != text.replace(",", ""):
        problems.append(f"{claim['file']} gives {want}, the page says {text}")
    page = (root / claim["page"]).read_text()
    context = claim.get("context", text)
    if not in_text(text, context):
        problems.append(f"context {context!r} does not hold {text!r}")
    if _flat(context) not in _flat(page):
        problems.append(f"{claim['page']} does not hold {context!r}")
    elif not in_text(text, page):
        problems.append(f"{claim['page']} does not hold {text!r}")
    return problems


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _id(claim: dict[str, Any]) -> str:
    return f"{claim.get('page')}:{claim.get('text')}:{claim.get('path', claim.get('function'))}"


@pytest.mark.parametrize("claim", CLAIMS, ids=[_id(c) for c in CLAIMS])
def test_claim_matches_its_file_and_stands_in_its_page(claim):
    assert claim_problems(claim) == []


def test_claims_cover_the_pages():
    """Not vacuous: the README, the research notes and the chapters' summaries have claims."""
    pages = {c["page"] for c in CLAIMS}
    assert {"README.md", "docs/research-notes.md"} <= pages
    assert any(p.startswith("notebooks/") for p in pages)
    assert len(CLAIMS) >= 50
    assert "docs/results.md" not in pages  # generated from the files: checked by test_report


def test_every_claimed_file_is_under_results():
    assert all(c["file"].startswith("results/") for c in CLAIMS)


def _copy(tmp_path: Path, claim: dict[str, Any]) -> Path:
    for name in (claim["file"], claim["page"]):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


MAIN = next(c for c in CLAIMS if (c["page"], c["text"]) == ("README.md", "91.57"))


def test_an_edited_result_file_fails_its_claim(tmp_path):
    root = _copy(tmp_path, MAIN)
    assert claim_problems(MAIN, root) == []
    data = json.loads((root / MAIN["file"]).read_text())
    data["mean"] += 0.001  # one tenth of a point
    (root / MAIN["file"]).write_text(json.dumps(data))
    assert claim_problems(MAIN, root) == [f"{MAIN['file']} gives 91.67, the page says 91.57"]


def test_edited_prose_fails_its_claim(tmp_path):
    root = _copy(tmp_path, MAIN)
    page = root / MAIN["page"]
    page.write_text(page.read_text().replace(MAIN["text"], "91.58"))
    assert claim_problems(MAIN, root) == [f"README.md does not hold {MAIN['context']!r}"]


def test_a_number_inside_a_longer_one_does_not_count():
    assert in_text("91.5", "about 91.5 %") and not in_text("91.5", "91.57 %")
    assert not in_text("1.5", "91.5") and not in_text("470", "4,470")


def test_a_list_selector_must_match_one_element():
    data = {"rows": [{"row": "a", "v": 1}, {"row": "b", "v": 2}, {"row": "b", "v": 3}]}
    assert resolve(data, "rows[row=a].v") == 1 and resolve(data, "rows[2].v") == 3
    with pytest.raises(KeyError, match="2 elements"):
        resolve(data, "rows[row=b].v")
