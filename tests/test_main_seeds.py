"""The main-seeds experiment (esmeta_core/experiments/main_seeds.py), without training.

Each override below is checked to differ from the preset first, so that an override
the code ignored would fail the test (an override equal to the preset's value could
not).
"""

import dataclasses
import json

import numpy as np

from esmeta_core.configs import PRESETS
from esmeta_core.experiments import main_seeds

MAIN = PRESETS["main"]


def test_without_overrides_the_seeds_run_the_preset():
    assert main_seeds.preset_config(main_seeds.Config()) == MAIN


def test_an_lr_override_changes_only_the_learning_rate_of_the_preset():
    lr = MAIN.lr * 2
    changed = main_seeds.preset_config(main_seeds.Config(lr=lr))
    assert changed != MAIN
    assert changed == dataclasses.replace(MAIN, lr=lr)


def test_overrides_combine_and_leave_the_rest_of_the_preset():
    shaping = "centered_rank" if MAIN.shaping != "centered_rank" else "z_score"
    lr = MAIN.lr / 2
    changed = main_seeds.preset_config(main_seeds.Config(lr=lr, shaping=shaping))
    assert (changed.lr, changed.shaping) != (MAIN.lr, MAIN.shaping)
    assert changed == dataclasses.replace(MAIN, lr=lr, shaping=shaping)


def test_run_trains_the_preset_once_per_seed_and_reports_the_sample_std(tmp_path, monkeypatch):
    """``run`` trains exactly the preset with each seed, in its own folder; the spread is ddof=1."""
    trained = []
    accuracies = {3: 0.90, 5: 0.92, 8: 0.97}

    def fake_train(config, workdir):
        trained.append((config, workdir))
        result = {"accuracy": accuracies[config.seed], "ci95": 0.01, "episodes": 10}
        return {"eval": {"5w5s": result}, "train_wall_s": 1.0}

    monkeypatch.setattr(main_seeds, "train_or_reload", fake_train)
    out = main_seeds.run(main_seeds.Config(seeds=(3, 5, 8)), tmp_path)
    assert [c for c, _ in trained] == [dataclasses.replace(MAIN, seed=s) for s in (3, 5, 8)]
    assert [w for _, w in trained] == [tmp_path / "main-seeds" / f"s{s}" for s in (3, 5, 8)]
    values = list(accuracies.values())
    assert out["mean"] == np.mean(values)
    assert out["std"] == np.std(values, ddof=1) != np.std(values)
    written = json.loads((tmp_path / "main_seeds.json").read_text())
    assert [r["seed"] for r in written["seeds"]] == [3, 5, 8]
    assert written["train_config"] == MAIN.to_json()
