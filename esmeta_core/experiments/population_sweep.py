"""ES-ProtoNet accuracy against population size at a fixed budget of member evaluations.

Each run gets the same number of perturbed-model evaluations (population x
steps), so a larger population means fewer, better-estimated steps. Everything
else is the ``main`` preset.

  esmeta experiment population-sweep --out results/protonet   # the committed file
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from esmeta_core import configs, report
from esmeta_core.configs import ABLATION_BASELINE
from esmeta_core.experiments.sweep import train_or_reload
from esmeta_core.report import write_result


@dataclasses.dataclass(frozen=True)
class Config:
    """The sweep: populations, the shared budget of member evaluations, test episodes."""

    populations: tuple[int, ...] = (16, 32, 64, 128)
    budget: int = 19_200  # member evaluations per run (population x steps)
    eval_episodes: int = 1000


def train_config(config: Config, population: int):
    """``ABLATION_BASELINE`` at ``population`` for ``budget // population`` steps."""
    return dataclasses.replace(
        ABLATION_BASELINE,
        population=population,
        steps=config.budget // population,
        eval_episodes=config.eval_episodes,
        checkpoint_every=max(1, config.budget // population),
    )


def train_configs(config: Config) -> list[configs.TrainConfig]:
    """Every run's ``TrainConfig`` (the CLI checks them all before the first trains)."""
    return [train_config(config, population) for population in config.populations]


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Trains one ``main``-preset run per population into ``out_dir/sweep/N<population>``.

    Writes ``out_dir/population_sweep.json``; run again, it reloads the finished runs
    and resumes an interrupted one.
    """
    out_dir = Path(out_dir)
    start = time.perf_counter()
    rows = []
    for population in config.populations:
        run_config = train_config(config, population)
        summary = train_or_reload(run_config, out_dir / "sweep" / f"N{population}")
        rows.append(
            {
                "population": population,
                "steps": run_config.steps,
                **summary["eval"]["5w5s"],
                "train_wall_s": summary["train_wall_s"],
            }
        )
        print(rows[-1], flush=True)
    payload = {
        "budget": f"{config.budget} member evaluations (population x steps), main preset otherwise",
        "rows": rows,
    }
    return write_result(
        out_dir / "population_sweep.json",
        payload,
        config=config,
        command=report.experiment_command("population-sweep", config, out_dir),
        wall_s=time.perf_counter() - start,
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The sweep's table from ``population_sweep.json``: accuracy and wall time per population."""
    rows = [
        [
            r["population"],
            r["steps"],
            report.pm(r["accuracy"], r["ci95"]),
            f"{r['train_wall_s'] / 60:.1f}",
        ]
        for r in result["rows"]
    ]
    budget = f"Budget: {result['budget']}.\n\n"
    return budget + report.table(["population", "steps", "5w5s accuracy", "train min"], rows)
