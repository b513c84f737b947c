"""The main-seeds experiment's config (esmeta_core/experiments/main_seeds.py), without training."""

import dataclasses

from esmeta_core.configs import PRESETS
from esmeta_core.experiments import main_seeds


def test_an_lr_override_changes_only_the_learning_rate_of_the_preset():
    assert main_seeds.preset_config(main_seeds.Config()) == PRESETS["main"]
    changed = main_seeds.preset_config(main_seeds.Config(lr=0.006))
    assert changed == dataclasses.replace(PRESETS["main"], lr=0.006)


def test_overrides_combine_and_leave_the_rest_of_the_preset():
    changed = main_seeds.preset_config(main_seeds.Config(lr=0.006, shaping="pair_z_score"))
    assert changed == dataclasses.replace(PRESETS["main"], lr=0.006, shaping="pair_z_score")
