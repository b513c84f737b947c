"""Meta-training on real Omniglot: loss decreases, CLI runs, resume is exact, bad input fails."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

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
        chunk_size=1,  # lax.map over members: vmapped convolutions are slow on CPU
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
    with (broken / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "loss": 1.2')  # a write torn by the kill
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
        (["--sigma", "0"], "sigma must be a finite number > 0"),
        (["--method", "sgd"], "method must be one of"),
        (["--steps", "0"], "steps must be a whole number >= 1"),
        (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
        (["--train-way", "-1"], "train_way must be a whole number >= 2"),
        (["--seed", "-1"], "seed must be a whole number >= 0"),
    ],
    ids=[
        "unknown-preset",
        "way-too-large",
        "shot-plus-query",
        "odd-population",
        "zero-sigma",
        "unknown-method",
        "zero-steps",
        "infinite-lr",
        "negative-train-way",
        "negative-seed",
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


# ----------------------------------------------------------------------------
# Non-finite training stops (issue 15): exit 3, the last good checkpoint kept.


def test_nonfinite_parameters_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    make = train.make_train_step

    def poisoned(*args, **kwargs):
        step_fn, calls = make(*args, **kwargs), []

        def step(params, opt_state, key, episodes):
            params, opt_state, metrics = step_fn(params, opt_state, key, episodes)
            calls.append(1)
            if len(calls) == 3:  # step 3 makes the parameters NaN
                params = jax.tree.map(lambda x: x * np.nan, params)
                metrics = {**metrics, "params_finite": train.all_finite(params)}
            return params, opt_state, metrics

        return step

    monkeypatch.setattr(train, "make_train_step", poisoned)
    config = configs.PRESETS["smoke"]  # 4 steps, a checkpoint every 2
    with pytest.raises(train.TrainingDiverged, match="step 3 gave non-finite parameters"):
        train.train_and_evaluate(config, tmp_path, progress=False)
    assert checkpoint.latest_step(tmp_path) == 2
    kept = checkpoint.restore(tmp_path, train.init_state(config, protonet.Conv4(config.width)))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(kept.params))
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--sigma", "1e30"], "every ES member's loss was non-finite for 3 steps in a row"),
        (["--lr", "1e30"], "training stopped: step 2 gave"),
        (["--method", "backprop", "--lr", "1e30"], "training stopped: step 2 gave"),
    ],
    ids=["es-huge-sigma", "es-huge-lr", "backprop-huge-lr"],
)
def test_diverging_training_exits_3_and_never_writes_a_summary(tmp_path, capsys, argv, match):
    workdir = tmp_path / "run"
    code = cli.main(
        ["train", "--preset", "smoke", "--workdir", str(workdir), "--no-progress", *argv]
    )
    err = capsys.readouterr().err
    assert code == 3, err
    assert re.search(match, err), err
    assert "Traceback" not in err and not (workdir / "summary.json").exists()
    if checkpoint.latest_step(workdir) is not None:  # whatever was saved is finite
        config = configs.TrainConfig.load(workdir / "config.json")
        state = train.init_state(config, protonet.Conv4(config.width))
        kept = checkpoint.restore(workdir, state)
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(kept.params))


# ----------------------------------------------------------------------------
# Resume means resume (issue 15).


def test_readme_resume_example_continues_a_run_of_a_non_main_preset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def kill_after_3(step):
        if step == 3:
            raise KeyboardInterrupt

    config = configs.PRESETS["smoke"]  # width 8, unlike the main preset's 16
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, "runs/es", progress=False, on_step=kill_after_3)
    # Exactly the README's command:
    assert cli.main("train --workdir runs/es --resume".split()) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "runs/es/summary.json").read_text())
    assert summary["resumed_from_step"] == 2 and summary["config"] == config.to_json()

    # Overrides that change the run are refused, each difference listed ...
    argv = "train --workdir runs/es --resume --lr 0.5 --seed 3 --population 16".split()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    for diff in ("lr=0.001 (saved) vs 0.5", "seed=0 (saved) vs 3", "population=8 (saved) vs 16"):
        assert diff in err, err
    assert "--allow-config-change" in err
    # ... more steps are not.
    assert cli.main("train --workdir runs/es --resume --steps 5 --no-progress".split()) == 0
    assert checkpoint.latest_step("runs/es") == 5

    # A hand-edited config.json is re-validated, and a valid edit no longer matches the
    # config hash stored in the checkpoint.
    saved = json.loads(Path("runs/es/config.json").read_text())
    Path("runs/es/config.json").write_text(json.dumps({**saved, "lr": -0.003}))
    assert cli.main("train --workdir runs/es --resume".split()) == 2
    assert "config.json: lr must be a finite number > 0, got -0.003" in capsys.readouterr().err
    Path("runs/es/config.json").write_text(json.dumps({**saved, "lr": 0.5}))
    assert cli.main("train --workdir runs/es --resume --steps 6".split()) == 2
    assert "the config was changed after this checkpoint" in capsys.readouterr().err


def test_resume_where_there_is_no_run_is_an_error(tmp_path, capsys):
    assert cli.main(["train", "--workdir", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no run to continue" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="holds no run"):
        train.train_and_evaluate(configs.PRESETS["smoke"], tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_growing_steps_of_a_decaying_schedule_on_resume_is_refused(tmp_path, schedule):
    """The schedule decays to the saved ``steps``: growing it would bend the curve mid-run."""
    saved = dataclasses.replace(configs.PRESETS["smoke"], lr_schedule=schedule)
    checkpoint.write_config(tmp_path, saved)
    longer = dataclasses.replace(saved, steps=saved.steps + 10)
    with pytest.raises(configs.ConfigError, match="decays to its end") as err:
        checkpoint.resume_config(tmp_path, longer, resume=True)
    assert err.value.field == "steps"
    assert checkpoint.resume_config(tmp_path, saved, resume=True).steps == saved.steps
    allowed = checkpoint.resume_config(tmp_path, longer, resume=True, allow_changes=True)
    assert allowed.steps == longer.steps
    halving = dataclasses.replace(saved, lr_schedule="halving")  # steps do not move it
    checkpoint.write_config(tmp_path, halving)
    grown = dataclasses.replace(halving, steps=halving.steps + 10)
    assert checkpoint.resume_config(tmp_path, grown, resume=True).steps == grown.steps


# ----------------------------------------------------------------------------
# Files (issue 15).


def test_failed_first_run_leaves_no_config_that_blocks_a_rerun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ESMETA_DATA_DIR", str(tmp_path / "no-data"))
    workdir = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", "--workdir", str(workdir)]) == 2
    capsys.readouterr()
    assert not (workdir / "config.json").exists()
    checkpoint.resume_config(workdir, configs.PRESETS["smoke"], resume=False)  # a rerun may start


def test_workdir_under_a_file_or_read_only_gives_one_line_naming_the_path(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "file").write_text("")
    argv = ["train", "--preset", "smoke", "--no-progress", "--workdir"]
    assert cli.main([*argv, str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "file") in err, err

    def read_only(workdir, config):
        raise OSError(30, "Read-only file system", str(workdir / "config.json"))

    monkeypatch.setattr(checkpoint, "write_config", read_only)
    assert cli.main([*argv, str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"esmeta: error: cannot use {tmp_path / 'ro' / 'config.json'}: Read-only file system\n"
    )


def test_only_process_0_writes_config_metrics_and_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "is_writer", lambda: False)
    train.train_and_evaluate(configs.PRESETS["smoke"], tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


@pytest.mark.parametrize("name", sorted(configs.PRESETS), ids=sorted(configs.PRESETS))
def test_every_preset_validates(name):
    configs.validate_config(configs.PRESETS[name], num_devices=1)


def _two_steps(config, images, step_fn=None):
    """Two training steps from ``config``'s seed; ``step_fn`` (seed-free) may be reused."""
    model = protonet.Conv4(config.width)
    if step_fn is None:
        mesh = sharding.population_mesh(jax.local_devices()[:1])
        step_fn = train.make_train_step(config, model, mesh)
    state = train.init_state(config, model)
    params, opt_state = state.params, state.opt_state
    for step in range(2):
        episodes = sample_episodes(
            images, seed=config.seed, step=step, batch=1, way=5, shot=5, query=config.query
        )
        key = train.step_key(config.seed, step)
        params, opt_state, _ = step_fn(params, opt_state, key, episodes)
    return params


def test_runs_that_differ_only_in_seed_differ(train_images):
    config = dataclasses.replace(configs.PRESETS["smoke"], steps=2)
    mesh = sharding.population_mesh(jax.local_devices()[:1])
    step_fn = train.make_train_step(config, protonet.Conv4(config.width), mesh)  # seed-free
    a = _two_steps(config, train_images, step_fn)
    b = _two_steps(dataclasses.replace(config, seed=1), train_images, step_fn)
    again = _two_steps(config, train_images, step_fn)
    differences = [
        float(np.abs(x - y).max())
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    assert max(differences) > 1e-3
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(again), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_es_step_with_unit_kernels_and_fixed_biases_keeps_both_properties(train_images):
    config = dataclasses.replace(
        configs.PRESETS["smoke"],
        unit_kernels=True,
        perturb_conv_bias=False,
        lr_schedule="cosine",
        shaping="pair_z_score",
        adam_b1=0.99,
    )
    params = _two_steps(config, train_images)
    start = train.init_state(config, protonet.Conv4(config.width)).params
    for name, layer in params.items():
        if name.startswith("Conv"):
            kernel = np.asarray(layer["kernel"])
            norms = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0)
            np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
            np.testing.assert_array_equal(np.asarray(layer["bias"]), start[name]["bias"])


def test_a_run_saved_before_a_field_existed_resumes(tmp_path, monkeypatch):
    """A workdir of an older version: its config.json lacks ``separable`` (added later) and
    holds the removed fields at their off values, and its checkpoints carry the old hash
    (every saved field but the resumable ones, ``guide_fraction`` and ``subspace_dim``)."""
    import hashlib

    config = dataclasses.replace(configs.PRESETS["smoke"], steps=4, checkpoint_every=2)
    removed_off = {
        "first_width": None,
        "batch": 1,
        "lr_halving_every": 2000,
        "weight_decay": 0.0,
        "communication": "psum",
        "relative_sigma": False,
        "guide_fraction": 0.0,
        "subspace_dim": 0,
        "query_chunk": None,
    }
    old_json = {**config.to_json(), **removed_off}
    del old_json["separable"]
    skipped = {"steps", "eval_episodes", "log_every", "checkpoint_every", "max_nonfinite_steps"}
    skipped |= {"guide_fraction", "subspace_dim"}
    hashed = {k: v for k, v in old_json.items() if k not in skipped}
    old_hash = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]
    assert old_hash != configs.config_hash(config)
    workdir = tmp_path / "old"
    with monkeypatch.context() as m:  # the old version's checkpoints
        m.setattr(train, "config_hash", lambda c: old_hash)
        train.train_and_evaluate(config, workdir, progress=False)
    (workdir / "config.json").write_text(json.dumps(old_json, indent=2))
    longer = dataclasses.replace(config, steps=6)
    summary = train.train_and_evaluate(longer, workdir, resume=True, progress=False)
    assert summary["resumed_from_step"] == 4
    assert [r["step"] for r in report.read_metrics(workdir)] == [1, 2, 3, 4, 5, 6]
    # The same checkpoint under an edited config.json is refused.
    edited = tmp_path / "edited"
    with monkeypatch.context() as m:
        m.setattr(train, "config_hash", lambda c: old_hash)
        train.train_and_evaluate(config, edited, progress=False)
    (edited / "config.json").write_text(json.dumps({**old_json, "sigma": 0.02}))
    with pytest.raises(ValueError, match="config hash"):
        train.train_and_evaluate(
            dataclasses.replace(config, sigma=0.02, steps=6), edited, resume=True, progress=False
        )


def test_metrics_log_the_trend_cosine_not_the_estimate_norm(tmp_path, omniglot_dir, monkeypatch):
    """Each logged step has cos(g_t, mu_{t-1}) in [-1, 1]: exactly 0 at step 1 (mu = 0),
    then non-zero; the raw estimate norm (set by N, D and sigma) is no longer logged."""
    monkeypatch.setenv("ESMETA_DATA_DIR", str(omniglot_dir))
    config = dataclasses.replace(configs.get_preset("smoke"), eval_episodes=2)
    train.train_and_evaluate(config, tmp_path / "run", progress=False)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    cosines = [r["trend_cosine"] for r in rows]
    assert [r["step"] for r in rows] == list(range(1, config.steps + 1))
    assert cosines[0] == 0.0 and all(c != 0.0 for c in cosines[1:])
    assert all(-1.0 <= c <= 1.0 for c in cosines)
    assert not any("grad_norm" in r for r in rows)
