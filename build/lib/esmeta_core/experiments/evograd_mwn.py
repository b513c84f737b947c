"""Meta-Weight-Net on noisy labels: EvoGrad against the second-order original.

A classifier trains on digits whose labels are 40 % corrupted (uniform: a random
class; flip: the next class). A small MLP maps each example's loss to a weight in
(0, 1); it is meta-learned so that the weighted training step lowers the loss on
100 clean validation examples (Shu et al. 2019). Three ways are compared on the
same data and seeds: plain training, Meta-Weight-Net's second-order
hypergradient through one unrolled SGD step, and EvoGrad's first-order one.

  esmeta experiment evograd-mwn   # writes results/evograd/mwn.json
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from esmeta_core.data.digits import load_digits
from esmeta_core.evograd import evograd_hypergradient, unrolled_hypergradient
from esmeta_core.experiments.mlp import accuracy, cross_entropy, init_mlp, mlp

NOISE = 0.4
CLEAN_META_EXAMPLES = 100
INNER_LR = 0.1


def corrupt(labels: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(labels)) < NOISE
    if kind == "uniform":
        new = rng.integers(0, 10, len(labels))
    elif kind == "flip":
        new = (labels + 1) % 10
    else:
        raise ValueError(f"noise kind must be 'uniform' or 'flip', got {kind!r}")
    return np.where(flip, new, labels).astype(np.int32)


def example_weights(weight_net, losses):
    """f32[n] weights in (0, 1) from per-example losses, normalised to mean 1."""
    w = jax.nn.sigmoid(mlp(weight_net, losses[:, None])[:, 0])
    return w / (w.mean() + 1e-8)


def weighted_loss(params, weight_net, batch):
    x, y = batch
    losses = cross_entropy(mlp(params, x), y)
    return jnp.mean(example_weights(weight_net, jax.lax.stop_gradient(losses)) * losses)


def clean_loss(params, batch):
    x, y = batch
    return cross_entropy(mlp(params, x), y).mean()


def make_step(method: str):
    model_opt, meta_opt = optax.sgd(INNER_LR, momentum=0.9), optax.adam(1e-3)

    def hyper(params, weight_net, key, batch, meta_batch):
        if method == "evograd":
            return evograd_hypergradient(
                weighted_loss, clean_loss, params, weight_net, key, batch, meta_batch
            )[0]
        return unrolled_hypergradient(
            weighted_loss, clean_loss, params, weight_net, batch, meta_batch, lr=INNER_LR, steps=1
        )[0]

    def step(params, model_state, weight_net, meta_state, key, batch, meta_batch):
        if method != "plain":
            g = hyper(params, weight_net, key, batch, meta_batch)
            updates, meta_state = meta_opt.update(g, meta_state)
            weight_net = optax.apply_updates(weight_net, updates)
            grads = jax.grad(weighted_loss)(params, weight_net, batch)
        else:
            grads = jax.grad(clean_loss)(params, batch)
        updates, model_state = model_opt.update(grads, model_state)
        return optax.apply_updates(params, updates), model_state, weight_net, meta_state

    return step, model_opt, meta_opt


def run_one(
    method: str, noise: str, seed: int, *, steps: int, batch: int = 100, hidden: int = 256
) -> dict[str, Any]:
    data = load_digits(seed=seed, val_fraction=0.1)
    rng = np.random.default_rng(seed)
    noisy_y = corrupt(data.train_y, noise, rng)
    flat = lambda x: x.reshape(len(x), -1)
    meta_x, meta_y = flat(data.val_x)[:CLEAN_META_EXAMPLES], data.val_y[:CLEAN_META_EXAMPLES]
    step, model_opt, meta_opt = make_step(method)
    step = jax.jit(step)
    params = init_mlp(jax.random.key(seed), [64, hidden, 10])
    weight_net = init_mlp(jax.random.key(seed + 1000), [1, 32, 1])
    model_state, meta_state = model_opt.init(params), meta_opt.init(weight_net)
    times = []
    for t in range(steps):
        i = rng.integers(0, len(noisy_y), batch)
        j = rng.integers(0, CLEAN_META_EXAMPLES, batch)
        args = (
            params,
            model_state,
            weight_net,
            meta_state,
            jax.random.fold_in(jax.random.key(seed), t),
            (flat(data.train_x)[i], noisy_y[i]),
            (meta_x[j], meta_y[j]),
        )
        start = time.perf_counter()
        params, model_state, weight_net, meta_state = jax.block_until_ready(step(*args))
        times.append(time.perf_counter() - start)
    memory = jax.jit(step).lower(*args).compile().memory_analysis()
    return {
        "test_accuracy": accuracy(params, flat(data.test_x), data.test_y),
        "step_ms": 1000 * statistics.median(times[5:]),
        "compiled_temp_kib": memory.temp_size_in_bytes / 1024,
    }


def run(out_dir: str | Path = "results/evograd", *, seeds: int = 3, steps: int = 2000):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for noise in ("uniform", "flip"):
        for method in ("plain", "second-order MWN", "evograd"):
            key = {"plain": "plain", "second-order MWN": "second_order", "evograd": "evograd"}
            runs = [run_one(key[method], noise, s, steps=steps) for s in range(seeds)]
            rows.append(
                {
                    "noise": f"{noise} {int(NOISE * 100)} %",
                    "method": method,
                    "test_accuracy_mean": float(np.mean([r["test_accuracy"] for r in runs])),
                    "test_accuracy_std": float(np.std([r["test_accuracy"] for r in runs])),
                    "step_ms": float(np.mean([r["step_ms"] for r in runs])),
                    "compiled_temp_kib": runs[0]["compiled_temp_kib"],
                }
            )
            print(rows[-1], flush=True)
    result = {
        "command": "esmeta experiment evograd-mwn",
        "steps": steps,
        "seeds": seeds,
        "data": "scikit-learn digits, 40 % label noise, 100 clean meta examples",
        "rows": rows,
    }
    (out_dir / "mwn.json").write_text(json.dumps(result, indent=1))
    return result
