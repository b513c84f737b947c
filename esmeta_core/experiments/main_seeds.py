"""The main job's spread: the ``main`` preset trained with several seeds.

One number from one seed says little: rank shaping amplifies differences of
1e-7 between machines into different runs, and seeds move the result further.
This trains the ``main`` preset once per seed and reports every accuracy,
their mean and their sample standard deviation.

  esmeta experiment main-seeds --out results/protonet   # writes .../main_seeds.json

Each seed's run lives in ``<out_dir>/main-seeds/s<seed>/`` and is not trained again once
finished.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from esmeta_core import configs
from esmeta_core.configs import PRESETS
from esmeta_core.experiments.sweep import train_or_reload


@dataclasses.dataclass(frozen=True)
class Config:
    """The committed run's settings (``results/protonet/main_seeds.json``).

    ``lr``, ``shaping``: the preset's unless given (``--lr 0.006`` measured the spread
    of a larger rate, ``results/protonet/main-lr6e-3/main_seeds.json``).
    """

    preset: str = "main"
    seeds: tuple[int, ...] = (0, 1, 2)
    lr: float | None = None
    shaping: str | None = None


RULES = {  # the fields whose type says too little (configs.validate_settings)
    "preset": configs.one_of(PRESETS),
    "shaping": configs.optional(configs.one_of(configs.SHAPINGS)),
}


def preset_config(config: Config):
    """The preset with ``config``'s overrides (the seed is set per run)."""
    overrides = {k: getattr(config, k) for k in ("lr", "shaping") if getattr(config, k) is not None}
    return dataclasses.replace(PRESETS[config.preset], **overrides)


def train_configs(config: Config) -> list[configs.TrainConfig]:
    """Every run's ``TrainConfig`` (the CLI checks them all before the first trains)."""
    return [dataclasses.replace(preset_config(config), seed=seed) for seed in config.seeds]


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Trains ``config.preset`` once per seed and writes ``main_seeds.json``."""
    from esmeta_core import report

    out_dir = Path(out_dir)
    wall0 = time.perf_counter()
    per_seed = []
    for seed in config.seeds:
        train_config = dataclasses.replace(preset_config(config), seed=seed)
        summary = train_or_reload(train_config, out_dir / "main-seeds" / f"s{seed}")
        per_seed.append(
            {"seed": seed, **summary["eval"]["5w5s"], "train_wall_s": summary["train_wall_s"]}
        )
        print(per_seed[-1], flush=True)
    accs = np.array([r["accuracy"] for r in per_seed])
    payload = {
        "train_config": preset_config(config).to_json(),
        "seeds": per_seed,
        "mean": float(accs.mean()),
        "std": float(accs.std(ddof=1)) if len(accs) > 1 else None,  # JSON null, not NaN
    }
    return report.write_result(
        out_dir / "main_seeds.json",
        payload,
        config=config,
        command=report.experiment_command("main-seeds", config, out_dir),
        wall_s=round(time.perf_counter() - wall0, 1),
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The seeds table from ``main_seeds.json``: accuracy (95 % CI) and wall time per seed,
    then mean +- sample standard deviation over seeds."""
    from esmeta_core import report

    rows = [
        [r["seed"], report.pm(r["accuracy"], r["ci95"]), r["train_wall_s"]] for r in result["seeds"]
    ]
    rows.append(["mean +- std", report.pm(result["mean"], result["std"]), ""])
    return report.table(["seed", "5w5s accuracy", "train wall time (s)"], rows)
