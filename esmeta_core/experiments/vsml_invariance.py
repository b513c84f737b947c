"""The learned VS-ML cells, unchanged, on tasks they were never meta-trained on.

Kirsch & Schmidhuber (arXiv:2012.14905, section 4.3) show that one learned
VS-ML cell runs on any input size and class count, and on unseen data sets,
without re-training. Here the cells meta-trained by ES from scratch
(``esmeta experiment vsml``: 5-way, 16 projected inputs, 50 examples, Omniglot)
run, unchanged, on:

- ``digits-64in-10way-500``: the digits' 64 raw pixels (no projection), 10 classes,
  500 examples;
- ``digits-16in-3way`` and ``digits-16in-7way``: other class counts;
- ``omniglot-test-16in-5way``: Omniglot characters of the Vinyals *test* split,
  held out from meta-training.

Beside them: online SGD and Adam on a linear layer, each with its learning rate
tuned on 64 tasks of the same setting (drawn apart from the test tasks), which
favours the baselines. The meta-RNN and the Hebbian learner cannot run here:
their parameters are shaped by the input size and class count.

  esmeta experiment vsml-invariance --out results/vsml
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import optax

from esmeta_core import configs, nets, report
from esmeta_core.data import tasks
from esmeta_core.experiments import vsml_generalisation as gen

SETTINGS = {  # name -> (pool, way, n_in (None: the raw features), length)
    "digits-64in-10way-500": ("digits", 10, None, 500),
    "digits-16in-3way": ("digits", 3, 16, 50),
    "digits-16in-7way": ("digits", 7, 16, 50),
    "omniglot-test-16in-5way": ("omniglot-test", 5, 16, 50),
}
GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclasses.dataclass(frozen=True)
class Config:
    """``params_dir``: where ``esmeta experiment vsml`` left ``parts/vsml-es/seed*.npz``."""

    params_dir: str = "results/vsml"
    learner: str = "vsml-es"
    settings: tuple[str, ...] = tuple(SETTINGS)
    tasks_short: int = 200
    tasks_long: int = 50


RULES = {  # the fields whose type says too little (configs.validate_settings)
    "settings": configs.tuple_of(configs.one_of(SETTINGS)),
}


def _pool(name: str) -> tasks.Pool:
    return tasks.digits_pool() if name == "digits" else tasks.omniglot_pool("test")


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Runs every setting; writes ``invariance.json`` under ``out_dir``; returns it."""
    start = time.perf_counter()
    part_dir = Path(config.params_dir) / "parts" / config.learner
    paths = sorted(part_dir.glob("seed*.npz"))
    if not paths:
        raise FileNotFoundError(
            f"no trained cells in {part_dir}: run esmeta experiment vsml --learners "
            f"{config.learner} first"
        )
    metas = [gen.load_params(p) for p in paths]
    seeds = [int(p.stem.removeprefix("seed")) for p in paths]
    vconfig = gen.vsml_config("legacy" if config.learner.endswith("legacy") else "reference")
    results: dict[str, Any] = {}
    for name in config.settings:
        pool_name, way, n_in, length = SETTINGS[name]
        pool = _pool(pool_name)
        count = config.tasks_long if length > 100 else config.tasks_short
        xs, ys = tasks.task_batch(
            np.random.default_rng(999), pool, count, way=way, n_in=n_in, length=length
        )
        entry: dict[str, Any] = {"way": way, "n_in": xs.shape[-1], "length": length, "tasks": count}
        learner = nets.vsml_learner(num_classes=way, config=vconfig)
        acc = np.stack(
            [gen.curves(learner, m, xs, ys, s)[1] for m, s in zip(metas, seeds, strict=True)]
        )
        entry["VS-ML"] = _summary(acc)
        for opt_name, make in (("SGD", optax.sgd), ("Adam", optax.adam)):
            lr = gen.tune_lr(make, pool, GRID, way=way, n_in=n_in, length=length)
            linear = nets.linear_learner(make(lr), num_classes=way)
            entry[opt_name] = {**_summary(gen.curves(linear, None, xs, ys)[1][None]), "lr": lr}
        results[name] = entry
        print(
            f"{name}: VS-ML {entry['VS-ML']['last10']:.3f} "
            f"SGD {entry['SGD']['last10']:.3f} Adam {entry['Adam']['last10']:.3f}"
        )
    payload = {
        "cells": [str(p) for p in paths],
        "seeds": seeds,
        "metric": "online accuracy, mean over tasks; last10/first10: over the last/first "
        "10 examples of the episode",
        "baselines": "linear layer from zero, learning rate tuned per setting on 64 other tasks "
        f"from {GRID}",
        "settings": results,
    }
    return report.write_result(
        Path(out_dir) / "invariance.json",
        payload,
        config=config,
        command=gen.command_line(config, out_dir, "vsml-invariance"),
        wall_s=time.perf_counter() - start,
    )


def _summary(acc: np.ndarray) -> dict[str, Any]:
    """``acc`` f32[seeds, T] -> last/first-10 figures per seed and the mean curve."""
    return {
        "last10": float(acc[:, -10:].mean()),
        "last10_per_seed": acc[:, -10:].mean(1).tolist(),
        "first10": float(acc[:, :10].mean()),
        "accuracy_mean": acc.mean(0).tolist(),
    }


INVARIANCE_HEADERS = (
    "setting", "inputs", "classes", "examples", "VS-ML (per seed)", "online SGD", "online Adam",
)  # fmt: skip


def markdown_table(result: dict[str, Any]) -> str:
    """The invariance table from ``invariance.json``: accuracy over the last 10 examples of
    each task setting, VS-ML (mean, then each seed) against online SGD and Adam."""
    rows = []
    for name, r in result["settings"].items():
        seeds = ", ".join(f"{100 * a:.1f}" for a in r["VS-ML"]["last10_per_seed"])
        rows.append(
            [
                name,
                str(r["n_in"]),
                str(r["way"]),
                str(r["length"]),
                f"{100 * r['VS-ML']['last10']:.1f} % ({seeds})",
                f"{100 * r['SGD']['last10']:.1f} %",
                f"{100 * r['Adam']['last10']:.1f} %",
            ]
        )
    return report.table(INVARIANCE_HEADERS, rows)
