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


def test_multi_layer_imitation_and_its_mlp_baseline_run_end_to_end(
    omniglot_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("ESMETA_DATA_DIR", str(omniglot_dir))
    # one compiled learner per rate tried makes tuning most of the time: take grid[2]
    monkeypatch.setattr(gen, "tune_learner_lr", lambda make, pool, grid, **_: grid[2])
    config = gen.Config(
        learners=("sgd-mlp", "vsml-imitation-mlp"), seeds=(0,), regression_steps=2,
        regression_tasks=1, test_tasks=4, eval_every=1,
    )  # fmt: skip
    result = gen.run(config, tmp_path)
    learners = result["learners"]
    assert learners["sgd-mlp"]["seeds"] == [0] and learners["sgd-mlp"]["num_params"] == 0
    imitation = learners["vsml-imitation-mlp"]
    assert len(imitation["meta_training"][0]["eval"]) == 3  # steps 0, 1 and 2
    part = gen.report.load_json(gen.part_path(tmp_path, "vsml-imitation-mlp", 0))
    assert part["sgd_mlp_lr"] == gen.MLP_LR_GRID[2]
    params = gen.load_params(gen.part_path(tmp_path, "vsml-imitation-mlp", 0))
    assert "bwd_w" in params  # a network with a hidden layer
    assert "VS-ML 16-8-5, backprop imitation by regression" in gen.markdown_table(result)
    with pytest.raises(ValueError, match="mlp_hidden"):
        gen.validate_config(gen.Config(mlp_hidden=()))


def test_hebbian_learner_is_also_meta_trained_by_gradient(omniglot_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ESMETA_DATA_DIR", str(omniglot_dir))
    config = gen.Config(
        learners=("hebbian-grad",), seeds=(0,), steps=2, tasks_per_step=1, test_tasks=4,
        eval_every=1,
    )  # fmt: skip
    result = gen.run(config, tmp_path)
    hebbian = result["learners"]["hebbian-grad"]
    assert len(hebbian["meta_training"][0]["loss"]) == 2
    params = gen.load_params(gen.part_path(tmp_path, "hebbian-grad", 0))
    assert {"w", "coeff", "b", "fw_lr"} <= set(params)  # the Hebbian learner's, not the RNN's
    assert "Hebbian fast weights, gradient descent" in gen.markdown_table(result)
