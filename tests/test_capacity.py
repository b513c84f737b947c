"""The capacity experiment's configs (esmeta_core/experiments/capacity.py), without training."""

import dataclasses

from esmeta_core import cli
from esmeta_core.configs import PRESETS
from esmeta_core.experiments import capacity


def test_each_row_is_the_backprop_preset_at_its_width_and_kind():
    config = capacity.Config(steps=40, query=5, lr=0.002, separable_widths=(48,))
    dense = capacity.train_config(config, 32)
    separable = capacity.train_config(config, 48, separable=True)
    assert dense == dataclasses.replace(separable, width=32, separable=False)
    assert separable.separable and separable.width == 48
    assert dataclasses.replace(separable, width=64, separable=False, steps=2000) == (
        dataclasses.replace(
            PRESETS["backprop-5w5s"],
            query=5,
            lr=0.002,
            eval_episodes=1000,
            checkpoint_every=40,
            log_every=20,
        )
    )


def test_separable_is_a_train_override_and_an_experiment_field():
    args = cli.build_parser().parse_args(
        ["train", "--preset", "long", "--separable", "true", "--width", "32", "--workdir", "w"]
    )
    config = cli.config_from_args(args)
    assert config == dataclasses.replace(PRESETS["long"], separable=True, width=32)
    parsed = cli.experiment_config(
        capacity.Config, ["--separable-widths", "32,48"], "esmeta experiment capacity"
    )
    assert parsed.separable_widths == (32, 48)
