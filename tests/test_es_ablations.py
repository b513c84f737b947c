"""The ES ablation table (esmeta_core/experiments/es_ablations.py) without training."""

import json

import pytest

from esmeta_core.experiments import es_ablations


def _finished(out_dir, row, seeds, accuracy):
    for seed in seeds:
        workdir = out_dir / "ablations" / row / f"s{seed}"
        workdir.mkdir(parents=True)
        summary = {
            "eval": {"5w5s": {"accuracy": accuracy + 0.01 * seed, "ci95": 0.01, "episodes": 300}},
            "train_wall_s": 1.0,
            "command": f"esmeta experiment es-ablations --rows {row}",
            "provenance": {"git_commit": f"commit-of-{row}"},
        }
        (workdir / "summary.json").write_text(json.dumps(summary))


def test_running_some_rows_keeps_the_finished_rows_in_the_table(tmp_path):
    _finished(tmp_path, "baseline", (0, 1), 0.70)
    _finished(tmp_path, "unit_kernels", (0, 1), 0.75)
    _finished(tmp_path, "cosine_lr", (0,), 0.60)  # one seed missing: not in the table
    config = es_ablations.Config(rows=("unit_kernels",), seeds=(0, 1))
    es_ablations.run(config, tmp_path)
    table = json.loads((tmp_path / "ablations.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["baseline", "unit_kernels"]
    assert table["rows"][1]["mean"] == pytest.approx(0.755)
    # Each row keeps the commit and call its seeds were trained with, not the last call's.
    assert [r["git_commit"] for r in table["rows"]] == [
        "commit-of-baseline",
        "commit-of-unit_kernels",
    ]
    assert table["rows"][0]["command"] == "esmeta experiment es-ablations --rows baseline"
    # The call without --rows reproduces the whole (gathered) table.
    assert table["command"] == f"esmeta experiment es-ablations --out {tmp_path}"


def test_an_unknown_row_is_refused_before_anything_trains(tmp_path):
    with pytest.raises(ValueError, match="Unknown row 'nope'"):
        es_ablations.run(es_ablations.Config(rows=("nope",)), tmp_path)
    assert not (tmp_path / "ablations").exists()
