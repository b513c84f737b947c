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

from esmeta_core import report
from esmeta_core.configs import ABLATION_BASELINE
from esmeta_core.report import write_result
from esmeta_core.train import train_and_evaluate


@dataclasses.dataclass(frozen=True)
class Config:
    """The sweep: populations, the shared budget of member evaluations, test episodes."""

    populations: tuple[int, ...] = (16, 32, 64, 128)
    budget: int = 19_200  # member evaluations per run (population x steps)
    eval_episodes: int = 1000


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Trains one ``main``-preset run per population into ``out_dir/sweep/N<population>``.

    Writes ``out_dir/population_sweep.json``; an interrupted sweep resumes its runs.
    """
    out_dir = Path(out_dir)
    start = time.perf_counter()
    rows = []
    for population in config.populations:
        train_config = dataclasses.replace(
            ABLATION_BASELINE,
            population=population,
            steps=config.budget // population,
            eval_episodes=config.eval_episodes,
            checkpoint_every=max(1, config.budget // population),
        )
        workdir = out_dir / "sweep" / f"N{population}"
        summary = train_and_evaluate(train_config, workdir, resume=workdir.exists(), progress=False)
        rows.append(
            {
                "population": population,
                "steps": train_config.steps,
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
