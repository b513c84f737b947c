"""Executes the MyST notebooks and writes their paired .ipynb with outputs.

  python scripts/execute_notebooks.py                  # every notebook, full mode
  python scripts/execute_notebooks.py notebooks/01_*.md --quick

The .md file is the source of truth; the .ipynb is regenerated from it, run top
to bottom in a fresh kernel from the notebooks/ folder, and stripped of
execution timestamps and other metadata noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbclient

ROOT = Path(__file__).resolve().parents[1]
NOISE_KEYS = ("execution", "collapsed", "scrolled", "ExecuteTime", "colab", "id", "outputId")


def clean(nb) -> None:
    for cell in nb.cells:
        for key in NOISE_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                output.get("metadata", {}).pop("execution", None)
    for key in ("widgets", "papermill"):  # accelerator/colab/kaggle come from the .md header
        nb.metadata.pop(key, None)


def execute(md: Path, *, quick: bool, timeout: int) -> float:
    nb = jupytext.read(md)
    env_quick = os.environ.get("ESMETA_QUICK")
    os.environ["ESMETA_QUICK"] = "1" if quick else "0"
    start = time.perf_counter()
    try:
        nbclient.NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(md.parent)}},
        ).execute()
    finally:
        if env_quick is None:
            os.environ.pop("ESMETA_QUICK", None)
        else:
            os.environ["ESMETA_QUICK"] = env_quick
    clean(nb)
    jupytext.write(nb, md.with_suffix(".ipynb"))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--quick", action="store_true", help="quick mode (ESMETA_QUICK=1)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.md"))
    for md in paths:
        seconds = execute(md.resolve(), quick=args.quick, timeout=args.timeout)
        print(f"{md}: executed in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
