"""Testing a trained ProtoNet: accuracy over test episodes with a 95 % confidence interval.

:func:`evaluate` tests parameters on ``episodes`` test episodes drawn from a fixed
seed, so every model is tested on the same ones; :func:`evaluate_checkpoint` tests
a run's last checkpoint on several (way, shot) settings (``esmeta eval``).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from esmeta_core import checkpoint, protonet, report
from esmeta_core.checkpoint import TrainState
from esmeta_core.configs import TrainConfig
from esmeta_core.data import SPLIT_CLASSES, load_split, sample_episodes, validate_episode_size
from esmeta_core.report import command_line, write_result
from esmeta_core.train_step import model_for


class Evaluation(NamedTuple):
    """Accuracy over test episodes: mean, half-width of the 95 % CI, and count."""

    accuracy: float
    ci95: float
    episodes: int


@functools.partial(jax.jit, static_argnames=("model", "way"))
def _batch_accuracy(model, params, episodes, *, way):
    return jax.vmap(lambda e: protonet.episode_loss_and_accuracy(model, params, e, way=way)[1])(
        episodes
    )


def evaluate(
    model: protonet.Conv4,
    params: Any,
    images: np.ndarray,
    *,
    way: int,
    shot: int,
    query: int = 15,
    episodes: int = 1000,
    seed: int = 1234,
    batch: int = 50,
    progress: bool = False,
) -> Evaluation:
    """Mean accuracy over ``episodes`` test episodes, with a 95 % normal CI.

    Episodes are drawn from ``(seed, i)``, so every model is tested on the same ones.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}.")
    query = min(query, images.shape[1] - shot)
    accuracies = []
    for i in tqdm(
        range(0, episodes, batch), desc=f"eval {way}w{shot}s", disable=not progress, leave=False
    ):
        n = min(batch, episodes - i)
        eps = sample_episodes(images, seed=seed, step=i, batch=n, way=way, shot=shot, query=query)
        accuracies.append(np.asarray(_batch_accuracy(model, params, eps, way=way)))
    acc = np.concatenate(accuracies)
    ci95 = 1.96 * acc.std(ddof=1) / np.sqrt(len(acc)) if len(acc) > 1 else float("nan")
    return Evaluation(float(acc.mean()), float(ci95), len(acc))


def evaluate_checkpoint(
    workdir: str | Path,
    *,
    settings: tuple[tuple[int, int], ...] = ((5, 1), (5, 5), (20, 1), (20, 5)),
    episodes: int = 1000,
    split: str | None = None,
    width: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, dict[str, float]]:
    """Tests a checkpoint on several (way, shot) settings; writes ``eval.json``.

    ``command`` is the command line recorded in ``eval.json`` (default: this process's).

    Raises:
      FileNotFoundError: no checkpoint in ``workdir``.
      ValueError: ``width`` given and different from the checkpoint's.
      FileExistsError: a run is writing to ``workdir`` (it holds the lock).
    """
    workdir, start = Path(workdir), time.perf_counter()
    if checkpoint.latest_step(workdir) is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}: train first (esmeta train).")
    with checkpoint.lock(workdir):  # not while a run writes there
        return _evaluate_checkpoint(
            workdir,
            settings=settings,
            episodes=episodes,
            split=split,
            width=width,
            progress=progress,
            command=command,
            start=start,
        )


def _evaluate_checkpoint(
    workdir: Path,
    *,
    settings: tuple[tuple[int, int], ...],
    episodes: int,
    split: str | None,
    width: int | None,
    progress: bool,
    command: str | None,
    start: float,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_checkpoint` while holding the workdir's lock."""
    config = TrainConfig.load(workdir / "config.json")
    if width is not None and width != config.width:
        raise ValueError(
            f"The checkpoint in {workdir} was trained with width={config.width}, "
            f"but width={width} was asked for."
        )
    split = split or config.eval_split
    for way, shot in settings:  # at least one query image per class
        validate_episode_size(
            way=way, shot=shot, query=1, num_classes=SPLIT_CLASSES[split], split_name=repr(split)
        )
    model = model_for(config)
    params = protonet.init_params(jax.random.key(config.seed), model)  # shapes for the restore
    state = checkpoint.restore(workdir, TrainState(0, params, None))
    images = load_split(split).images
    results = {}
    for way, shot in settings:
        r = evaluate(
            model, state.params, images, way=way, shot=shot, episodes=episodes, progress=progress
        )
        results[f"{way}w{shot}s"] = r._asdict()
    write_result(
        workdir / "eval.json",
        {"step": state.step, "split": split, "results": results},
        config={"settings": [f"{w}w{s}s" for w, s in settings], "episodes": episodes},
        command=command or command_line(),
        wall_s=time.perf_counter() - start,
    )
    return results


# ----------------------------------------------------------------------------
# The ProtoNet runs table, from the runs' summary.json and eval.json files.

SNELL_2017 = {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0, "20w5s": 98.9}
"""Published Omniglot accuracies (Snell et al. 2017; Vinyals split, 28x28, Conv4-64), in %."""


def training_way(config: dict[str, Any]) -> int:
    """Classes per training episode of a saved config dict (:attr:`TrainConfig.training_way`).

    Only ``method``, ``way`` and ``train_way`` are read, so a dict saved with fields
    that no longer exist still works.

    Example:
      >>> training_way({"method": "backprop", "way": 5, "train_way": 20, "steps": 1})
      20
      >>> training_way({"method": "es", "way": 5, "train_way": 20})
      5
    """
    return TrainConfig(
        method=config["method"], way=config["way"], train_way=config.get("train_way")
    ).training_way


def run_rows(root: str | Path = "results/protonet") -> list[dict[str, Any]]:
    """One row per (run, test setting) from the ``*/summary.json`` and ``eval.json`` under
    ``root``: accuracy and 95 % CI in percent, the run's settings and wall time."""
    rows = []
    for summary_path in sorted(Path(root).glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        config = summary["config"]
        results = dict(summary["eval"])
        eval_path = summary_path.with_name("eval.json")
        if eval_path.exists():
            results.update(json.loads(eval_path.read_text())["results"])
        for setting, r in results.items():
            rows.append(
                {
                    "run": summary_path.parent.name,
                    "method": config["method"],
                    "setting": setting,
                    "accuracy": 100 * r["accuracy"],
                    "ci95": 100 * r["ci95"],
                    "episodes": r["episodes"],
                    "steps": config["steps"],
                    "population": config["population"] if config["method"] == "es" else None,
                    "width": config["width"],
                    "separable": config.get("separable", False),
                    "train_way": training_way(config),
                    "trained_as": f"{config['way']}w{config['shot']}s",
                    "train_wall_s": summary["train_wall_s"],
                    "machine": summary["provenance"]["machine"],
                    "devices": summary["provenance"]["num_devices"],
                }
            )
    return rows


RUNS_HEADERS = (
    "run", "method", "test", "accuracy (95 % CI)", "Snell et al.", "trained as", "steps",
    "population", "width", "train wall time", "machine",
)  # fmt: skip


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The runs table from :func:`run_rows`: our accuracies beside Snell et al.'s."""
    return report.table(
        RUNS_HEADERS,
        [
            [
                f"`{r['run']}`",
                r["method"],
                r["setting"],
                f"{r['accuracy']:.2f} +- {r['ci95']:.2f}",
                SNELL_2017.get(r["setting"], "-"),
                f"{r['trained_as']} ({r['train_way']}-way)",
                r["steps"],
                r["population"] if r["population"] else "-",
                f"{r['width']} separable" if r.get("separable") else r["width"],
                f"{r['train_wall_s'] / 60:.1f} min",
                r["machine"],
            ]
            for r in rows
        ],
    )
