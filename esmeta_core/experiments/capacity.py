"""Backprop ProtoNet accuracy against Conv4 width: which models can reach 95-98 % at all.

Width 64 is the committed ``backprop-5w5s`` run (2000 steps, ``results/protonet/backprop-5w5s``).

Before asking ES to reach an accuracy, check that the model can reach it with
exact gradients. Every width is trained by backprop with the same protocol
(5-way 5-shot, Vinyals split, ``steps`` Adam steps, tested on 1000 test
episodes); only the width changes.

  esmeta experiment capacity --out results/protonet   # writes results/protonet/capacity.json

Each width's run lives in ``<out_dir>/capacity/w<width>/`` (``summary.json``,
``metrics.jsonl``); a finished one is not trained again, so the table can be
rewritten cheaply. ``separable_widths`` adds Conv4s with depthwise-separable layers
(:class:`esmeta_core.protonet.SeparableConv3x3`, runs in ``capacity/sep<width>/``):
ES needs few parameters, so capacity per parameter is the figure that matters.

  esmeta experiment capacity --out results/protonet/capacity-2000steps --steps 2000 \
      --query 5 --lr 0.002 --eval-episodes 400 --widths 16,32 --separable-widths 32,48,64

(The committed ``capacity-2000steps`` table also has rows with a narrower first layer,
``first_width``, an option git keeps at commit de88ab2.)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from esmeta_core import configs
from esmeta_core.configs import PRESETS
from esmeta_core.experiments.sweep import train_or_reload


@dataclasses.dataclass(frozen=True)
class Config:
    """The committed run's settings (``results/protonet/capacity.json``)."""

    widths: tuple[int, ...] = (8, 16, 32, 64)
    separable_widths: tuple[int, ...] = ()
    steps: int = 800
    query: int = 15
    lr: float = 1e-3
    eval_episodes: int = 1000
    seed: int = 0


RULES = {  # the fields whose type says too little (configs.validate_settings)
    "separable_widths": configs.tuple_of(configs.integer_at_least(1), allow_empty=True),
}


def train_config(config: Config, width: int, *, separable: bool = False):
    """The ``backprop-5w5s`` preset at ``width``, shortened to ``config.steps``."""
    return dataclasses.replace(
        PRESETS["backprop-5w5s"],
        width=width,
        separable=separable,
        steps=config.steps,
        query=config.query,
        lr=config.lr,
        eval_episodes=config.eval_episodes,
        seed=config.seed,
        checkpoint_every=config.steps,
        log_every=20,
    )


def train_configs(config: Config) -> list[configs.TrainConfig]:
    """Every run's ``TrainConfig`` (the CLI checks them all before the first trains)."""
    return [train_config(config, w) for w in config.widths] + [
        train_config(config, w, separable=True) for w in config.separable_widths
    ]


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Trains one backprop ProtoNet per width and writes ``capacity.json``."""
    from esmeta_core import report

    out_dir = Path(out_dir)
    rows = []
    wall0 = time.perf_counter()
    models = [(w, False) for w in config.widths] + [(w, True) for w in config.separable_widths]
    for width, separable in models:
        workdir = out_dir / "capacity" / f"{'sep' if separable else 'w'}{width}"
        summary = train_or_reload(train_config(config, width, separable=separable), workdir)
        rows.append(
            {
                "width": width,
                "separable": separable,
                "num_params": summary["num_params"],
                **summary["eval"]["5w5s"],
                "train_wall_s": summary["train_wall_s"],
                "workdir": str(workdir),
            }
        )
        print(rows[-1], flush=True)
    payload = {"rows": rows}
    return report.write_result(
        out_dir / "capacity.json",
        payload,
        config=config,
        command=report.experiment_command("capacity", config, out_dir),
        wall_s=round(time.perf_counter() - wall0, 1),
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The capacity table from a ``capacity.json``: parameters, accuracy (95 % CI) and wall
    time per width; a "first layer" column when the file has first-layer widths."""
    from esmeta_core import report

    rows, first = result["rows"], any("first_width" in r for r in result["rows"])
    headers = ["width", *(["first layer"] if first else []), "parameters"]
    return f"{result['config']['steps']} training steps.\n\n" + report.table(
        [*headers, "5w5s accuracy", "train min"],
        [
            [
                f"{r['width']} separable" if r.get("separable") else r["width"],
                *([r.get("first_width") or r["width"]] if first else []),
                f"{r['num_params']:,}",
                report.pm(r["accuracy"], r["ci95"]),
                f"{r['train_wall_s'] / 60:.1f}",
            ]
            for r in rows
        ],
    )
