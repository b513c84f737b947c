"""Prints the README's result tables from the committed files under results/.

python scripts/report.py
"""

from __future__ import annotations

from pathlib import Path

from esmeta_core import report

if __name__ == "__main__":
    print(report.results_tables(Path(__file__).resolve().parents[1] / "results"))
