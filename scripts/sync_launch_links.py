"""Rewrites every chapter's setup cell, launch badges and the book's repository URL.

The repository URL and the pinned revision live in one place,
``esmeta_core/runtime.py`` (``REPOSITORY``, ``REVISION``). After changing them
(to publish a fork), run

  python scripts/sync_launch_links.py

It rewrites, in every ``notebooks/*.md``, the first code cell (the bootstrap
cell) and the Colab/Kaggle badge line, then updates the paired ``.ipynb``
keeping its outputs; and the repository URL in ``book/_config.yml`` and the
README's badge. ``tests/test_runtime.py`` fails when they are out of sync.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jupytext
import jupytext.cli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from esmeta_core import runtime  # noqa: E402

CPU_DEVICES = re.compile(r"setup\(cpu_devices=(\d+)\)")


def badges(notebook: str) -> str:
    """The Colab and Kaggle badges of one chapter, at the pinned revision."""
    path = runtime.REPOSITORY.removeprefix("https://github.com/")
    target = f"{path}/blob/{runtime.REVISION}/notebooks/{notebook}"
    return (
        f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{target}) "
        f"[![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]"
        f"(https://kaggle.com/kernels/welcome?src=https://github.com/{target})"
    )


def sync_notebook(md: Path) -> bool:
    text = md.read_text()
    nb = jupytext.reads(text, fmt="md:myst")
    first = next(c for c in nb.cells if c.cell_type == "code")
    found = CPU_DEVICES.search(first.source) or re.search(r"simulate_cpu_devices\((\d+)\)", text)
    cell = runtime.bootstrap_cell(cpu_devices=int(found.group(1)) if found else None)
    new = text.replace(first.source, cell, 1)
    new = new.replace(":tags: [hide-cell]\n\n" + cell, cell, 1)  # the call is shown
    new = re.sub(
        r"^\[!\[Open in Colab\].*$", badges(md.with_suffix(".ipynb").name), new, count=1, flags=re.M
    )
    if new == text:
        return False
    md.write_text(new)
    ipynb = md.with_suffix(".ipynb")
    if ipynb.exists():  # keep the outputs of unchanged cells
        jupytext.cli.jupytext([str(md), "--to", "ipynb", "--update", "--quiet"])
    return True


def main() -> int:
    changed = [md.name for md in sorted((ROOT / "notebooks").glob("*.md")) if sync_notebook(md)]
    config = ROOT / "book" / "_config.yml"
    text = config.read_text()
    text = re.sub(r"(\n\s+url:\s*)\S+", rf"\g<1>{runtime.REPOSITORY}", text, count=1)
    config.write_text(re.sub(r"(\n\s+branch:\s*)\S+", rf"\g<1>{runtime.REVISION}", text, count=1))
    readme = ROOT / "README.md"
    text = readme.read_text()
    readme.write_text(
        re.sub(
            r"https://colab\.research\.google\.com/github/[^)]*?/notebooks/00_setup\.ipynb",
            f"https://colab.research.google.com/github/"
            f"{runtime.REPOSITORY.removeprefix('https://github.com/')}/blob/"
            f"{runtime.REVISION}/notebooks/00_setup.ipynb",
            text,
        )
    )
    print("rewrote:", ", ".join(changed) or "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
