"""The VS-ML experiments end to end on tiny settings: parts, gathering, resuming, invariance."""

from __future__ import annotations

import pytest

from esmeta_core.experiments import vsml_generalisation as gen
from esmeta_core.experiments import vsml_invariance


def test_unknown_learner_is_rejected():
    with pytest.raises(ValueError, match="unknown learners"):
        gen.validate_config(gen.Config(learners=("vsml-es", "hopfield")))


def test_run_writes_one_part_per_seed_gathers_them_and_skips_them_next_time(
    omniglot_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("ESMETA_DATA_DIR", str(omniglot_dir))
    config = gen.Config(
        learners=("sgd", "vsml-es"), seeds=(0, 1), steps=2, population=4, tasks_per_step=1,
        test_tasks=4, eval_every=1,
    )  # fmt: skip
    result = gen.run(config, tmp_path)
    learners = result["learners"]
    assert learners["vsml-es"]["seeds"] == [0, 1]
    assert len(learners["vsml-es"]["digits_last10_per_seed"]) == 2
    assert learners["sgd"]["seeds"] == [0]  # nothing random to meta-train
    part = gen.part_path(tmp_path, "vsml-es", 1)
    assert part.with_suffix(".npz").exists()
    assert "--learners sgd,vsml-es --seeds 0,1" in learners["vsml-es"]["parts"][1]["command"]
    assert result["command"].startswith("esmeta experiment vsml --out")
    assert len(learners["vsml-es"]["meta_training"][0]["eval"]) == 3  # steps 0, 1 and 2
    before = part.stat().st_mtime_ns
    gen.run(config, tmp_path)  # the parts are there: nothing is retrained
    assert part.stat().st_mtime_ns == before
    assert "VS-ML, ES from scratch" in gen.markdown_table(result)

    inv = vsml_invariance.run(
        vsml_invariance.Config(params_dir=str(tmp_path), tasks_short=2, tasks_long=1,
                               settings=("digits-64in-10way-500", "digits-16in-3way")),
        tmp_path,
    )  # fmt: skip
    first = inv["settings"]["digits-64in-10way-500"]
    assert (first["n_in"], first["way"], first["length"]) == (64, 10, 500)
    assert len(first["VS-ML"]["last10_per_seed"]) == 2  # both cells, unchanged
    assert {"SGD", "Adam"} <= set(first)
    assert "digits-16in-3way" in vsml_invariance.markdown_table(inv)
