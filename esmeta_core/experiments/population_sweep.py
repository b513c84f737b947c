"""ES-ProtoNet accuracy against population size at a fixed budget of member evaluations.

Each run gets the same number of perturbed-model evaluations (population x
steps), so a larger population means fewer, better-estimated steps. Everything
else is the ``main`` preset.

  esmeta experiment population-sweep   # writes results/protonet/population_sweep.json
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from esmeta_core.configs import PRESETS
from esmeta_core.train import train_and_evaluate

POPULATIONS = (16, 32, 64, 128)
BUDGET = 19_200  # member evaluations per run (population x steps)


def run(
    out_dir: str | Path = "results/protonet",
    *,
    populations=POPULATIONS,
    budget: int = BUDGET,
    eval_episodes: int = 1000,
) -> dict[str, Any]:
    out_dir = Path(out_dir)
    rows = []
    for population in populations:
        config = dataclasses.replace(
            PRESETS["main"],
            population=population,
            steps=budget // population,
            eval_episodes=eval_episodes,
            checkpoint_every=max(1, budget // population),
        )
        workdir = out_dir / "sweep" / f"N{population}"
        summary = train_and_evaluate(config, workdir, resume=workdir.exists(), progress=False)
        result = summary["eval"]["5w5s"]
        rows.append(
            {
                "population": population,
                "steps": config.steps,
                **result,
                "train_wall_s": summary["train_wall_s"],
            }
        )
        print(rows[-1], flush=True)
    out = {
        "command": "esmeta experiment population-sweep",
        "budget": f"{budget} member evaluations (population x steps), main preset otherwise",
        "rows": rows,
    }
    (out_dir / "population_sweep.json").write_text(json.dumps(out, indent=1))
    return out
