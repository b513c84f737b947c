"""Every committed result file records its command, config, provenance and wall time.

No file holds a null command (a run that predates the result writer has its command
reconstructed, marked "(reconstructed"), nor an absolute path (a folder on the machine
that ran it means nothing to a reader; runs are named by their folder in the repository).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from esmeta_core import report

RESULTS = Path(__file__).resolve().parents[1] / "results"
FILES = report.result_files(RESULTS)
ALL_JSON = sorted(RESULTS.rglob("*.json"))
# "/home/x", "C:\\x" or "~/x" at the start of a string or after a space, quote, = or (.
ABSOLUTE_PATH = re.compile(r"(?:^|[\s\"'=(,])(?:/[\w.~-]+/?|~/|[A-Za-z]:\\)")


def _strings(value):
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


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


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(RESULTS)) for p in FILES])
def test_no_result_file_has_a_null_command(path):
    command = json.loads(path.read_text())["command"]
    assert isinstance(command, str) and command.split()[0] in ("esmeta", "python"), command


@pytest.mark.parametrize("path", ALL_JSON, ids=[str(p.relative_to(RESULTS)) for p in ALL_JSON])
def test_no_json_file_under_results_names_an_absolute_path(path):
    found = [s for s in _strings(json.loads(path.read_text())) if ABSOLUTE_PATH.search(s)]
    assert found == [], f"{path}: name the run's folder in the repository instead"


@pytest.mark.parametrize(
    "text",
    ["/home/u/runs/main", "--workdir /tmp/x", "cd ~/esmeta", "C:\\runs", "path=/scratch/a"],
)
def test_the_absolute_path_check_finds_absolute_paths(text):
    assert ABSOLUTE_PATH.search(text)


@pytest.mark.parametrize(
    "text", ["results/protonet/main", "cpu:0", "5w5s", "https://github.com/x", "lr 3e-3 / 2"]
)
def test_the_absolute_path_check_passes_relative_text(text):
    assert not ABSOLUTE_PATH.search(text)


def test_ablation_rows_record_the_commit_they_were_trained_at():
    """The table's rows come from several calls: each row names its own commit and call."""
    rows = json.loads((RESULTS / "protonet/ablations.json").read_text())["rows"]
    for row in rows:
        assert isinstance(row["git_commit"], str) and len(row["git_commit"]) == 40, row["row"]
        assert "--rows" in row["command"] and row["row"] in row["command"], row["row"]
    assert len({row["git_commit"] for row in rows}) > 1


@pytest.mark.parametrize("path", ALL_JSON, ids=[str(p.relative_to(RESULTS)) for p in ALL_JSON])
def test_every_folder_a_json_file_names_under_results_exists(path):
    """Renamed run folders are renamed in the files that cite them too (a command's trailing
    ``# ...`` note may name the folder a run was made in)."""
    root = RESULTS.parent
    missing = [
        name
        for text in _strings(json.loads(path.read_text()))
        for name in re.findall(r"results/[\w./+-]*[\w+-]", text.split("  # ")[0])
        if not (root / name).exists()
    ]
    assert missing == [], f"{path} names {missing}"
