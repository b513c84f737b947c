"""Copies cell sources and tags from each MyST notebook into its paired .ipynb, keeping outputs.

For edits that leave the full-mode code path unchanged (for example a smaller quick-mode
size): the committed outputs stay those of the full-mode run, so no re-execution is due.
Refuses when the two files' cells do not line up one to one.

  python scripts/sync_sources.py notebooks/05_sharding.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat


def sync(md: Path) -> int:
    source = jupytext.read(md)
    ipynb = md.with_suffix(".ipynb")
    paired = nbformat.read(ipynb, as_version=4)
    if [c.cell_type for c in source.cells] != [c.cell_type for c in paired.cells]:
        raise SystemExit(f"{md}: cells differ from {ipynb.name}; re-execute it instead")
    changed = 0
    for new, old in zip(source.cells, paired.cells, strict=True):
        tags = new.metadata.get("tags")
        if new.source != old.source or tags != old.metadata.get("tags"):
            old.source = new.source
            if tags:
                old.metadata["tags"] = tags
            else:
                old.metadata.pop("tags", None)
            changed += 1
    nbformat.write(paired, ipynb)
    return changed


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {sync(Path(arg))} cell(s) updated")
