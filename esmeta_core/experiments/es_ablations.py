"""Which ES options make each step count: short ES-ProtoNet runs, one change per row.

Every row is the ``main`` preset as committed at run c34dde7
(``configs.ABLATION_BASELINE``: Conv4-16, N = 64, 5-way 5-shot) with a few
fields changed, trained for ``steps`` steps with each seed and tested on
``eval_episodes`` test episodes. Rows are compared at equal steps, so at equal
member evaluations (N x steps) and, since no option changes the work per step,
at about equal compute.

  esmeta experiment es-ablations --out results/protonet   # writes .../ablations.json

Each run lives in ``<out_dir>/ablations/<row>/s<seed>/``; a finished one is not trained
again, so the table can be extended a few rows at a time (``--rows``).

``results/protonet/ablations.json`` also holds rows of options that were measured and
not kept, and have since left the library: relative sigma, AdamW (``adamw_0.1``),
Guided ES (``guided_*``) and subspace ES (``subspace_*``). Those rows were run at
commit de88ab2, where git keeps the options; the research notes
(``docs/research-notes.md``) give their numbers.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from esmeta_core import configs
from esmeta_core.configs import ABLATION_BASELINE
from esmeta_core.experiments.sweep import is_finished, train_or_reload

# row name -> TrainConfig fields changed from ``configs.ABLATION_BASELINE``.
ROWS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "cosine_lr": {"lr_schedule": "cosine", "lr_final_fraction": 0.1},
    "unit_kernels": {"unit_kernels": True},
    "no_conv_bias_noise": {"perturb_conv_bias": False},
    "pair_z_score": {"shaping": "pair_z_score"},
    "adam_b1_0.99": {"adam_b1": 0.99},
    "unit_kernels+cosine+no_bias": {
        "unit_kernels": True,
        "lr_schedule": "cosine",
        "lr_final_fraction": 0.1,
        "perturb_conv_bias": False,
    },
    "all+adam_b1_0.99": {
        "unit_kernels": True,
        "lr_schedule": "cosine",
        "lr_final_fraction": 0.1,
        "perturb_conv_bias": False,
        "adam_b1": 0.99,
    },
}
# The order the committed table was run in (most informative first).
ORDER = (
    "baseline",
    "adam_b1_0.99",
    "unit_kernels+cosine+no_bias",
    "all+adam_b1_0.99",
    "cosine_lr",
    "unit_kernels",
    "pair_z_score",
    "no_conv_bias_noise",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """The committed run's settings (``results/protonet/ablations.json``)."""

    rows: tuple[str, ...] = ORDER
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 200
    eval_episodes: int = 300


RULES = {  # the fields whose type says too little (configs.validate_settings)
    "rows": configs.tuple_of(configs.one_of(ROWS)),
}


def train_config(config: Config, row: str, seed: int):
    """``ABLATION_BASELINE`` with ``row``'s changes, ``config.steps`` steps."""
    if row not in ROWS:
        raise ValueError(f"Unknown row {row!r}; choose from {sorted(ROWS)}.")
    return dataclasses.replace(
        ABLATION_BASELINE,
        **ROWS[row],
        steps=config.steps,
        seed=seed,
        eval_episodes=config.eval_episodes,
        checkpoint_every=50,
    )


def train_configs(config: Config) -> list[configs.TrainConfig]:
    """Every run's ``TrainConfig`` (the CLI checks them all before the first trains)."""
    return [train_config(config, row, seed) for row in config.rows for seed in config.seeds]


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Trains every (row, seed) of ``config.rows`` not yet trained; writes ``ablations.json``.

    The table holds the rows asked for and every other row of :data:`ORDER` whose
    seeds have all finished under ``out_dir``, so running a few rows at a time
    extends the table instead of replacing it.
    """
    from esmeta_core import report

    out_dir = Path(out_dir)
    wall0 = time.perf_counter()

    def finished(row: str) -> bool:
        return all(is_finished(out_dir / "ablations" / row / f"s{seed}") for seed in config.seeds)

    for row in config.rows:  # unknown rows fail before anything trains
        if row not in ROWS:
            raise ValueError(f"Unknown row {row!r}; choose from {sorted(ROWS)}.")
    table = [r for r in ORDER if r in config.rows or finished(r)]
    table += [r for r in config.rows if r not in table]
    rows = []
    for row in table:
        per_seed, summaries = [], []
        for seed in config.seeds:
            summary = train_or_reload(
                train_config(config, row, seed), out_dir / "ablations" / row / f"s{seed}"
            )
            summaries.append(summary)
            result = summary["eval"]["5w5s"]
            per_seed.append({"seed": seed, **result, "train_wall_s": summary["train_wall_s"]})
            print(row, per_seed[-1], flush=True)
        accs = np.array([r["accuracy"] for r in per_seed])
        rows.append(
            {
                "row": row,
                "changes": ROWS[row],
                "seeds": per_seed,
                "mean": float(accs.mean()),
                "std": float(accs.std(ddof=1)) if len(accs) > 1 else float("nan"),
                **row_provenance(summaries),
            }
        )
    payload = {
        "base": "main preset (Conv4-16, N = 64, sigma 0.01, lr 3e-3, 5 training queries)",
        "steps": config.steps,
        "rows": rows,
    }
    return report.write_result(
        out_dir / "ablations.json",
        payload,
        config=config,
        # The table gathers every finished row, so the call without --rows reproduces it.
        command=report.experiment_command(
            "es-ablations", dataclasses.replace(config, rows=ORDER), out_dir
        ),
        wall_s=round(time.perf_counter() - wall0, 1),
    )


def row_provenance(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The commit and command a row's seeds were trained with, from their ``summary.json``.

    Rows are trained a few at a time by different calls, so the file's own provenance
    (its last call) does not hold for every row. ``git_commit`` is one commit when
    every seed agrees, else the list of each seed's.

    Example:
      >>> s = {"command": "esmeta experiment x --rows a", "provenance": {"git_commit": "c1"}}
      >>> row_provenance([s, s])
      {'git_commit': 'c1', 'command': 'esmeta experiment x --rows a'}
    """
    commits = [s.get("provenance", {}).get("git_commit") for s in summaries]
    commands = [s.get("command") for s in summaries]
    return {
        "git_commit": commits[0] if len(set(commits)) == 1 else commits,
        "command": commands[0] if len(set(commands)) == 1 else commands,
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The ablations table from ``ablations.json``: per row its changes to the baseline, the
    accuracy of each seed, and their mean +- sample standard deviation."""
    from esmeta_core import report

    rows = [
        [
            r["row"],
            ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-",
            ", ".join(f"{100 * s['accuracy']:.2f}" for s in r["seeds"]),
            report.pm(r["mean"], r["std"]),
        ]
        for r in result["rows"]
    ]
    lead = f"{result['steps']} steps, two seeds per row.\n\n"
    return lead + report.table(["row", "changes", "accuracy per seed", "mean +- std"], rows)
