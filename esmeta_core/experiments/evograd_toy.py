"""EvoGrad's 1-D illustration: estimated against exact hypergradients.

Training loss ``L_train(x; lam) = (x - 1)^2 + lam x^2`` has best response
``x*(lam) = 1 / (1 + lam)``; with ``L_val(x) = (x - 0.5)^2`` the exact
hypergradient is ``dL_val(x*(lam)) / dlam = (lam - 1) / (lam + 1)^3``, zero at
``lam = 1``. EvoGrad estimates it at ``x = x*(lam)`` from K copies (sigma = 1,
tau = 0.5, as in the paper's public illustration).

  esmeta experiment evograd-1d --out results/evograd   # writes toy_1d.json and .png
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core import configs, report
from esmeta_core.evograd import evograd_hypergradient
from esmeta_core.plotting import save_figure


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the committed run (``results/evograd/toy_1d.json``)."""

    seeds: int = 100
    copies_sweep: tuple[int, ...] = (2, 10, 100)
    trajectory_starts: tuple[float, ...] = (0.1, 0.5, 2.0, 3.0)
    trajectory_steps: int = 300


RULES = {  # the fields whose type says too little (configs.validate_settings)
    "trajectory_starts": configs.tuple_of(configs.finite_number),
}


def train_loss(x, lam, _batch=None):
    return (x - 1.0) ** 2 + lam * x**2


def val_loss(x, _batch=None):
    return (x - 0.5) ** 2


def exact_hypergradient(lam):
    return (lam - 1.0) / (lam + 1.0) ** 3


def best_response(lam):
    return 1.0 / (1.0 + lam)


def estimates(
    lams: np.ndarray,
    *,
    copies: int,
    seeds: int,
    sigma: float = 1.0,
    temperature: float = 0.5,
    noise: str = "gaussian",
) -> np.ndarray:
    """f32[seeds, len(lams)] of EvoGrad estimates at ``x = x*(lam)``."""

    @jax.jit
    def one(lam, key):
        g, _ = evograd_hypergradient(
            train_loss,
            val_loss,
            best_response(lam),
            lam,
            key,
            None,
            None,
            copies=copies,
            sigma=sigma,
            temperature=temperature,
            noise=noise,
        )
        return g

    keys = jax.random.split(jax.random.key(0), seeds)
    grid = jnp.asarray(lams, jnp.float32)
    return np.asarray(jax.vmap(lambda k: jax.vmap(lambda lam: one(lam, k))(grid))(keys))


def trajectory(
    lam0: float,
    *,
    steps: int = 300,
    copies: int = 10,
    inner_lr: float = 0.1,
    hyper_lr: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Hypergradient descent on ``lam``, one SGD step on ``x`` between updates."""

    @jax.jit
    def step(carry, key):
        x, lam = carry
        x = x - inner_lr * jax.grad(train_loss)(x, lam)
        g, _ = evograd_hypergradient(
            train_loss,
            val_loss,
            x,
            lam,
            key,
            None,
            None,
            copies=copies,
            sigma=1.0,
            temperature=0.5,
            noise="gaussian",
        )
        lam = jnp.maximum(lam - hyper_lr * g, 0.0)
        return (x, lam), lam

    keys = jax.random.split(jax.random.key(seed), steps)
    _, lams = jax.lax.scan(step, (jnp.float32(0.0), jnp.float32(lam0)), keys)
    return np.concatenate([[lam0], np.asarray(lams)])


def agreement(estimate: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """Sign agreement (where the exact value is not ~0) and Pearson correlation."""
    mask = np.abs(exact) > 1e-3
    return {
        "sign_agreement": float(np.mean(np.sign(estimate[mask]) == np.sign(exact[mask]))),
        "correlation": float(np.corrcoef(estimate, exact)[0, 1]),
    }


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Estimates on a grid of ``lam`` for each ``K``, and hypergradient-descent trajectories."""
    out_dir = Path(out_dir)
    start = time.perf_counter()
    lams = np.linspace(0.1, 2.0, 39)
    exact = exact_hypergradient(lams)
    result: dict[str, Any] = {"lams": lams.tolist(), "exact": exact.tolist(), "populations": {}}
    for copies in config.copies_sweep:
        est = estimates(lams, copies=copies, seeds=config.seeds)
        mean = est.mean(0)
        per_seed = [agreement(e, exact) for e in est]
        crossings = lams[1:][np.diff(np.sign(mean)) != 0]
        result["populations"][str(copies)] = {
            "mean": mean.tolist(),
            "std": est.std(0).tolist(),
            "mean_estimate": agreement(mean, exact),
            "mean_zero_crossings": crossings.round(3).tolist(),
            "single_run_sign_agreement": float(np.mean([a["sign_agreement"] for a in per_seed])),
            "single_run_correlation": float(np.mean([a["correlation"] for a in per_seed])),
        }
    result["trajectories"] = {
        str(l0): trajectory(l0, steps=config.trajectory_steps).tolist()
        for l0 in config.trajectory_starts
    }
    result["trajectory_final"] = {k: v[-1] for k, v in result["trajectories"].items()}
    result = report.write_result(
        out_dir / "toy_1d.json",
        result,
        config=config,
        command=report.experiment_command("evograd-1d", config, out_dir),
        wall_s=time.perf_counter() - start,
    )
    plot(result, out_dir / "toy_1d.png")
    return result


def plot(result: dict[str, Any], out: str | Path | None = None):
    import matplotlib.pyplot as plt

    fig, (ax, ax_traj) = plt.subplots(1, 2, figsize=(10, 3.6))
    lams = np.array(result["lams"])
    ax.plot(lams, result["exact"], "k-", lw=2, label="exact")
    for copies, r in result["populations"].items():
        mean, std = np.array(r["mean"]), np.array(r["std"])
        ax.plot(lams, mean, label=f"EvoGrad, K={copies}")
        ax.fill_between(lams, mean - std, mean + std, alpha=0.15)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="lambda", ylabel="dL_val / dlambda", title="hypergradient (mean +- std)")
    ax.legend(fontsize=8)
    for l0, traj in result["trajectories"].items():
        ax_traj.plot(traj, label=f"lambda0={l0}")
    ax_traj.axhline(1.0, color="k", ls="--", lw=1, label="optimum")
    ax_traj.set(xlabel="step", ylabel="lambda", title="hypergradient descent (K=10)")
    ax_traj.legend(fontsize=8)
    return save_figure(fig, out)
