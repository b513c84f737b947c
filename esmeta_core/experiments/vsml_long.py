"""One long ES run of VS-ML from scratch: does it reach, or beat, tuned online SGD?

Kirsch & Schmidhuber (arXiv:2012.14905) claim a learned algorithm that matches
backprop and improves on it (it learns faster early in the episode). Here one
seed of ``esmeta experiment vsml``'s ES from scratch runs for ``steps`` steps;
``long.json`` records its digits accuracy beside tuned online SGD and Adam:
over the last 10 of the 50 examples (does it reach SGD's level?) and over the
first 10 (does it learn faster than SGD?).

  esmeta experiment vsml-long --out results/vsml
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from esmeta_core import report
from esmeta_core.experiments import vsml_generalisation as gen


@dataclasses.dataclass(frozen=True)
class Config:
    """``steps`` ES steps for one ``seed``; the rest as in ``vsml_generalisation.Config``."""

    seed: int = 0
    steps: int = 1500
    population: int = 64
    tasks_per_step: int = 4
    eval_every: int = 100


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Trains (or reuses) the long run's parts under ``out_dir/long``; writes ``long.json``."""
    start = time.perf_counter()
    inner = gen.Config(
        learners=("sgd", "adam", "vsml-es"),
        seeds=(config.seed,),
        steps=config.steps,
        population=config.population,
        tasks_per_step=config.tasks_per_step,
        eval_every=config.eval_every,
    )
    learners = gen.run(inner, Path(out_dir) / "long")["learners"]
    vsml, sgd, adam = learners["vsml-es"], learners["sgd"], learners["adam"]
    payload = {
        "vsml_digits_last10": vsml["digits_last10"],
        "vsml_digits_first10": vsml["digits_first10"],
        "sgd_digits_last10": sgd["digits_last10"],
        "sgd_digits_first10": sgd["digits_first10"],
        "adam_digits_last10": adam["digits_last10"],
        "adam_digits_first10": adam["digits_first10"],
        "reaches_sgd_last10": vsml["digits_last10"] >= sgd["digits_last10"],
        "beats_sgd_first10": vsml["digits_first10"] > sgd["digits_first10"],
        "vsml_digits_accuracy": vsml["digits_accuracy_mean"],
        "sgd_digits_accuracy": sgd["digits_accuracy_mean"],
        "meta_training": vsml["meta_training"][0],
        "train_wall_s": vsml["train_wall_s_per_seed"][0],
        "parts": vsml["parts"],
    }
    return report.write_result(
        Path(out_dir) / "long.json",
        payload,
        config=config,
        command=gen.command_line(config, out_dir, "vsml-long"),
        wall_s=time.perf_counter() - start,
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The long-run table from ``long.json``: VS-ML by ES against tuned online SGD and Adam,
    digits accuracy over the first and the last 10 of 50 examples."""
    steps, minutes = result["config"]["steps"], result["train_wall_s"] / 60
    learners = [(f"VS-ML, ES from scratch, {steps} steps ({minutes:.0f} min)", "vsml")]
    learners += [("online SGD (tuned lr)", "sgd"), ("online Adam (tuned lr)", "adam")]
    rows = [
        [
            name,
            f"{100 * result[f'{key}_digits_first10']:.1f} %",
            f"{100 * result[f'{key}_digits_last10']:.1f} %",
        ]
        for name, key in learners
    ]
    return report.table(("learner", "digits, first 10 of 50", "digits, last 10 of 50"), rows)
