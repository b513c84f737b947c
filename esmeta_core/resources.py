"""The committed result files, found in a checkout or in the installed package.

The chapters read the small result files under ``results/`` (metrics, summaries,
figures) instead of re-running long training. In a checkout they are the
repository's ``results/``; in an installed package (``pip install`` from the
repository, as on Colab or Kaggle) the same files ship as package data in
``esmeta_core/results/``. ``ESMETA_RESULTS_DIR`` overrides both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


def results_dir() -> Path:
    """The folder of committed results: ``$ESMETA_RESULTS_DIR``, the checkout's, or the package's.

    Raises:
      FileNotFoundError: none of them exists (say where it looked).
    """
    candidates = []
    if os.environ.get("ESMETA_RESULTS_DIR"):
        candidates.append(Path(os.environ["ESMETA_RESULTS_DIR"]))
    candidates += [_PACKAGE.parent / "results", _PACKAGE / "results"]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "No committed results found (looked in "
        + ", ".join(str(p) for p in candidates)
        + "). Install esmeta_core from the repository (its wheel ships them), or set "
        "ESMETA_RESULTS_DIR to a copy of the repository's results/ folder."
    )


def result_path(relative: str | Path) -> Path:
    """The path of one committed result, e.g. ``result_path("evograd/mwn.json")``.

    Raises:
      FileNotFoundError: the file is not among the committed results.
    """
    path = results_dir() / relative
    if not path.exists():
        raise FileNotFoundError(
            f"{relative} is not among the committed results in {results_dir()}; the command "
            "that writes it is named in the chapter and in the README."
        )
    return path


def load_result(relative: str | Path) -> dict[str, Any]:
    """A committed JSON result file as a dict."""
    return json.loads(result_path(relative).read_text())
