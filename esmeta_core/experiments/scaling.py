"""ES-ProtoNet accuracy against member evaluations, an extrapolation, and a TPU estimate.

Reads the committed ES runs (``results/protonet``: the main run, the sweep, and
any later ES run with a ``summary.json``), puts each at its number of member
evaluations ``N x steps``, and fits a power law to the test error of the Conv4-16
runs of the pre-issue-17 preset,

.. math::  1 - \\mathrm{acc} \\approx a \\, E^{-b}  \\quad (E = \\text{member evaluations}),

to say how many evaluations 98.4 % (Sheng & He 2022) would need on that curve.
The TPU time of the ``es-5w5s-conv4-64`` preset is an **estimate**: XLA's cost
analysis counts the FLOPs of one member's forward pass here, and the assumed
peak and utilisation of a TPU v5e chip (below, in the result file) turn them into
seconds. Nothing is measured on a TPU.

  esmeta experiment scaling --out results/protonet   # writes results/protonet/scaling.json
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from esmeta_core import configs, resources
from esmeta_core.configs import PRESETS


@dataclasses.dataclass(frozen=True)
class Config:
    """Inputs of the fit and the TPU estimate (assumptions named as such).

    ``results``: folders of ES runs; a relative ``results/...`` path that is not a
    folder here is read from the committed results (:func:`results_root`).
    """

    results: tuple[str, ...] = ("results/protonet", "results/archive/tuning")
    target: float = 0.984
    # TPU v5e: 197 TFLOP/s bf16 peak per chip (Google Cloud's published figure). f32
    # convolutions are assumed to run as 3 bf16 passes, at an assumed 30 % utilisation
    # for these small convolutions.
    tpu_peak_flops: float = 197e12
    f32_passes: int = 3
    utilisation: float = 0.3
    preset: str = "es-5w5s-conv4-64"


RULES = {  # the fields whose type says too little (configs.validate_settings)
    "results": configs.tuple_of(lambda p: None if results_root(p).is_dir() else "must be folders"),
    "target": configs.number_in(0.0, 1.0, low_open=True, high_open=True),
    "utilisation": configs.number_in(0.0, 1.0, low_open=True),
    "preset": configs.one_of(PRESETS),
}


def results_root(path: str | Path) -> Path:
    """``path`` itself if it is a folder here, else ``results/X`` of the committed results.

    The defaults (``results/protonet``, ``results/archive/tuning``) so work from any
    folder: they are read from the checkout's or the installed package's results
    (:func:`esmeta_core.resources.results_dir`).
    """
    path = Path(path)
    if path.is_dir() or path.is_absolute() or path.parts[:1] != ("results",):
        return path
    try:
        return resources.results_dir().joinpath(*path.parts[1:])
    except FileNotFoundError:
        return path


def member_flops(width: int, *, way: int = 5, shot: int = 5, query: int = 5) -> float:
    """FLOPs of one member's episode loss (one forward pass), from XLA's cost analysis."""
    import jax

    from esmeta_core import protonet

    model = protonet.Conv4(width)
    params = protonet.init_params(jax.random.key(0), model)
    spec = protonet.episode_spec(way, shot, query)
    compiled = (
        jax.jit(lambda p, e: protonet.episode_loss(model, p, e, way=way))
        .lower(params, spec)
        .compile()
    )
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def es_points(root: Path, shown: str | Path | None = None) -> list[dict[str, Any]]:
    """(run, width, member evaluations, accuracy) of every ES run under ``root``.

    A run is named by its folder under ``shown`` (default ``root``): the name it is
    given on the command line, wherever ``root`` was found.
    """
    import json

    points = []
    for path in sorted(root.glob("**/summary.json")):
        if "checkpoint" in path.name:
            continue
        summary = json.loads(path.read_text())
        config = summary["config"]
        if config.get("method") != "es" or "5w5s" not in summary["eval"]:
            continue
        points.append(
            {
                "run": str(Path(shown or root) / path.parent.relative_to(root)),
                "lr": config["lr"],
                "width": config["width"],
                "separable": config.get("separable", False),
                "population": config["population"],
                "steps": config["steps"],
                "member_evaluations": config["population"] * config["steps"],
                "accuracy": summary["eval"]["5w5s"]["accuracy"],
                "new_options": bool(
                    config.get("unit_kernels") or config.get("adam_b1", 0.9) != 0.9
                ),
                "train_wall_s": summary.get("train_wall_s"),
            }
        )
    return points


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Writes ``scaling.json``: the points, the power-law fit and the TPU estimate."""
    from esmeta_core import report

    wall0 = time.perf_counter()
    points = [p for root in config.results for p in es_points(results_root(root), root)]
    fit_points = [
        p
        for p in points
        if p["width"] == 16
        and not p["separable"]
        and p["lr"] == 3e-3
        and not p["new_options"]
        and "ablations" not in p["run"]
    ]
    evals = np.array([p["member_evaluations"] for p in fit_points], float)
    errors = np.array([1 - p["accuracy"] for p in fit_points])
    slope, intercept = np.polyfit(np.log(evals), np.log(errors), 1)  # log err = i + s log E
    needed = float(np.exp((np.log(1 - config.target) - intercept) / slope))
    preset = PRESETS[config.preset]
    flops_member = member_flops(preset.width, query=preset.query)
    step_flops = flops_member * preset.population
    effective = config.tpu_peak_flops / config.f32_passes * config.utilisation
    preset_s = preset.steps * step_flops / effective
    payload = {
        "points": points,
        "fit": {
            "runs": [p["run"] for p in fit_points],
            "model": "1 - accuracy = a * evaluations**(-b), Conv4-16, pre-issue-17 preset",
            "a": float(np.exp(intercept)),
            "b": float(-slope),
            "target": config.target,
            "evaluations_for_target": needed,
        },
        "tpu_estimate": {
            "preset": config.preset,
            "member_flops_xla": flops_member,
            "member_evaluations": preset.population * preset.steps,
            "effective_flops_per_chip": effective,
            "seconds_1_chip": preset_s,
            "seconds_8_chips": preset_s / 8,
            "assumptions": (
                "FLOPs of one member's forward pass from XLA's cost analysis on CPU; "
                "noise generation and the weighted sum neglected; TPU v5e 197 TFLOP/s "
                "bf16 peak, f32 as 3 bf16 passes, 30 % utilisation, perfect scaling to 8 "
                "chips (only scalars cross chips). A compute-bound lower bound: members "
                "evaluated one after another in small convolutions are usually "
                "latency-bound, so a real run can be several times slower. An estimate, "
                "not a measurement."
            ),
        },
    }
    return report.write_result(
        Path(out_dir) / "scaling.json",
        payload,
        config=config,
        command=report.experiment_command("scaling", config, out_dir),
        wall_s=time.perf_counter() - wall0,
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The scaling table from ``scaling.json``: each ES run's member evaluations and 5w5s
    accuracy, then the fitted power law ``1 - accuracy = a * evaluations**(-b)``."""
    from esmeta_core import report

    rows = [
        [
            f"`{p['run']}`",
            f"{p['width']} separable" if p.get("separable") else p["width"],
            p["population"],
            p["steps"],
            f"{p['member_evaluations']:,}",
            f"{100 * p['accuracy']:.2f}",
            "yes" if p["new_options"] else "no",
        ]
        for p in result["points"]
    ]
    headers = ["run", "width", "population", "steps", "member evaluations", "5w5s %", "new options"]
    fit = result["fit"]
    return report.table(headers, rows) + (
        f"\n\nFit ({fit['model']}): a = {fit['a']:.3f}, b = {fit['b']:.4f}; "
        f"{100 * fit['target']:.1f} % needs about {fit['evaluations_for_target']:.2e} "
        "member evaluations (an extrapolation)."
    )
