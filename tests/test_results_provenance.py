"""Every committed result file records its command, config, provenance and wall time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esmeta_core import report

RESULTS = Path(__file__).resolve().parents[1] / "results"
FILES = report.result_files(RESULTS)


def test_results_folder_holds_result_files():
    assert len(FILES) >= 10, FILES  # the walk below is not vacuous


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(RESULTS)) for p in FILES])
def test_every_result_file_carries_provenance(path):
    data = json.loads(path.read_text())
    assert report.provenance_problems(data) == [], (
        f"{path} lacks recorded fields: regenerate it with its command, "
        "or run scripts/backfill_provenance.py if it predates report.write_result"
    )
    commit = data["provenance"]["git_commit"]
    assert isinstance(commit, str) and len(commit) == 40, commit


def test_a_result_without_provenance_is_reported():
    assert report.provenance_problems({"rows": []}) == list(report.RECORDED_FIELDS)
    made_up = {"command": "x", "config": {}, "wall_s": 1.0, "provenance": {"git_commit": "a"}}
    assert report.provenance_problems(made_up) == ["provenance.jax_version", "provenance.machine"]
