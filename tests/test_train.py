"""Meta-training on real Omniglot: loss decreases, CLI runs, resume is exact, bad input fails."""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import numpy as np
import pytest

from esmeta_core import checkpoint, cli, configs, protonet, report, sharding, train
from esmeta_core.data import load_split, sample_episodes


@pytest.fixture(scope="module")
def train_images(omniglot_dir):
    return load_split("train", data_dir=omniglot_dir).images


@pytest.fixture(autouse=True)
def _data_env(omniglot_dir, monkeypatch):
    monkeypatch.setenv("ESMETA_DATA_DIR", str(omniglot_dir))


@pytest.mark.parametrize("method", ["backprop", "es"])
def test_few_seeded_steps_lower_the_training_loss(train_images, method):
    config = dataclasses.replace(
        configs.PRESETS["smoke"],
        method=method,
        width=16,
        population=64,
        sigma=0.01,
        lr=3e-3,
        chunk_size=8,
        batch=4,
    )
    model = protonet.Conv4(config.width)
    mesh = sharding.population_mesh(jax.local_devices()[:1])
    step_fn = train.make_train_step(config, model, mesh)
    state = train.init_state(config, model)
    episodes = sample_episodes(train_images, seed=0, step=0, batch=4, way=5, shot=5, query=5)
    params, opt_state = state.params, state.opt_state
    losses = []
    for step in range(8):
        params, opt_state, metrics = step_fn(params, opt_state, train.step_key(0, step), episodes)
        losses.append(float(metrics["loss"]))  # loss before this step's update
    assert losses[-1] < 0.9 * losses[0], losses


def test_train_and_eval_commands_write_their_files(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", "--workdir", str(workdir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Test accuracy (5w5s, 20 episodes, test split)" in out
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        assert (workdir / name).is_file(), name
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
    summary = json.loads((workdir / "summary.json").read_text())
    assert {"command", "config", "provenance", "wall_s", "train_wall_s", "eval"} <= set(summary)
    assert {"git_commit", "jax_version", "devices", "machine"} <= set(summary["provenance"])
    assert summary["command"].startswith("esmeta train")
    result = summary["eval"]["5w5s"]
    assert 0.2 <= result["accuracy"] <= 1.0 and result["ci95"] > 0
    rows = report.read_metrics(workdir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert cli.main(["eval", "--workdir", str(workdir), "--episodes", "10", "--no-progress"]) == 0
    evaluation = json.loads((workdir / "eval.json").read_text())
    assert set(evaluation["results"]) == {"5w1s", "5w5s", "20w1s", "20w5s"}
    assert (
        evaluation["command"].startswith("esmeta eval") and "git_commit" in evaluation["provenance"]
    )


def test_resumed_run_ends_with_the_same_parameters(tmp_path):
    config = dataclasses.replace(configs.PRESETS["smoke"], steps=5, checkpoint_every=2)
    whole = tmp_path / "whole"
    train.train_and_evaluate(config, whole, progress=False)

    class Killed(Exception):
        pass

    def kill_after_3(step):
        if step == 3:  # step 3 is done but not checkpointed: the checkpoint is at step 2
            raise Killed

    broken = tmp_path / "broken"
    with pytest.raises(Killed):
        train.train_and_evaluate(config, broken, progress=False, on_step=kill_after_3)
    summary = train.train_and_evaluate(config, broken, resume=True, progress=False)
    assert summary["resumed_from_step"] == 2
    model = protonet.Conv4(config.width)
    a = checkpoint.restore(whole, train.init_state(config, model))
    b = checkpoint.restore(broken, train.init_state(config, model))
    assert a.step == b.step == 5
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert [r["step"] for r in report.read_metrics(broken)] == [1, 2, 3, 4, 5]


def test_existing_run_needs_resume(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(configs.PRESETS["smoke"].to_json()))
    with pytest.raises(FileExistsError, match="--resume"):
        train.train_and_evaluate(configs.PRESETS["smoke"], tmp_path, progress=False)


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--preset", "nope"], "Unknown preset 'nope'"),
        (["--way", "2000"], "way=2000 is larger than the 1692 classes"),
        (["--shot", "10", "--query", "11"], "shot \\+ query <= 20"),
        (["--population", "7"], "population=7 is odd"),
        (["--sigma", "0"], "sigma must be a positive number"),
        (["--method", "sgd"], "method must be one of"),
        (["--steps", "0"], "steps must be a positive integer"),
    ],
    ids=[
        "unknown-preset",
        "way-too-large",
        "shot-plus-query",
        "odd-population",
        "zero-sigma",
        "unknown-method",
        "zero-steps",
    ],
)
def test_bad_training_input_is_rejected_before_compute(argv, match, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ESMETA_DATA_DIR", str(tmp_path / "no-data"))  # data is never reached
    code = cli.main(["train", "--preset", "smoke", "--workdir", str(tmp_path / "w"), *argv])
    assert code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "w").exists()


def test_population_must_fit_the_devices():
    config = dataclasses.replace(configs.PRESETS["smoke"], population=12)
    with pytest.raises(ValueError, match="does not split evenly over 8 devices"):
        configs.validate_config(config, num_devices=8)


def test_checkpoint_of_another_width_is_rejected(tmp_path, capsys):
    workdir = tmp_path / "run"
    train.train_and_evaluate(configs.PRESETS["smoke"], workdir, progress=False)
    assert cli.main(["eval", "--workdir", str(workdir), "--width", "64"]) == 2
    assert "trained with width=8" in capsys.readouterr().err
    wider = dataclasses.replace(configs.PRESETS["smoke"], width=16)
    with pytest.raises(ValueError, match="width=8"):
        train.train_and_evaluate(wider, workdir, resume=True, progress=False)
    model = protonet.Conv4(16)
    with pytest.raises(ValueError, match="another shape"):
        checkpoint.restore(workdir, train.init_state(wider, model))


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    config = configs.PRESETS["smoke"]
    state = train.init_state(config, protonet.Conv4(config.width))
    with checkpoint.manager(tmp_path) as checkpoints:
        checkpoint.save(checkpoints, state._replace(step=2))
    for path in (tmp_path / "checkpoints" / "2").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoint.restore(tmp_path, state)


def test_checkpoint_of_the_old_msgpack_format_is_refused_with_a_way_forward(tmp_path, capsys):
    config = configs.PRESETS["smoke"]
    (tmp_path / "config.json").write_text(json.dumps(config.to_json()))
    (tmp_path / "checkpoint.msgpack").write_bytes(b"\x00old format")
    with pytest.raises(ValueError, match="older esmeta .* Retrain into a new --workdir"):
        train.train_and_evaluate(config, tmp_path, resume=True, progress=False)
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 2
    assert "checkpoint.msgpack is a checkpoint of an older esmeta" in capsys.readouterr().err
