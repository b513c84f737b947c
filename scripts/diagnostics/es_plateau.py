"""Where an ES-ProtoNet run stands when its training loss levels off (issue 17).

At a run's last checkpoint this measures, on the training split:

- how well the measurement itself is made: cosine ``c`` of two backprop gradients,
  each the mean over ``--episodes`` fresh episodes (``g_true`` and ``g_true2``); each
  then has cosine about ``sqrt(c)`` to the expected gradient;
- the episode noise: cosine of one episode's gradient to ``g_true`` (mean and std over
  ``--singles`` episodes, and divided by ``sqrt(c)``: to the expected gradient);
- the ES noise: cosine of one ES estimate (the run's own estimator and options, on
  that episode) to that episode's gradient and to ``g_true``;
- the averaging: cosine of Adam's first moment ``mu`` and of the step the optimizer
  would take to ``-g_true``;
- the descent left along each direction: the mean loss on other held-out episodes
  after a step of length ``t`` (in parameter norm units) along ``-g_true``, ``-mu``
  and the optimizer's step;
- a backprop continuation: ``--backprop-steps`` Adam steps of plain backprop from the
  ES parameters, then the test accuracy (is there headroom near the ES endpoint?).

  python scripts/diagnostics/es_plateau.py results/protonet/main-zscore-lr6e-3/main-seeds/s0

Writes ``es_plateau.json`` into the workdir and prints it (``--at-init``: the same
measurements at the run's initial parameters, ``es_plateau_at_init.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from esmeta_core import checkpoint, optim, protonet, report, sharding, train_step
from esmeta_core.data.episodes import sample_episodes
from esmeta_core.data.omniglot import load_split
from esmeta_core.evaluation import evaluate

# Cosines of one episode's view: its gradient and one ES estimate against g_true.
SINGLES = ("cos_episode_gtrue", "cos_es_episode", "cos_es_gtrue")


def cosine(a, b) -> float:
    dot = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    return float(dot / (optax.tree.norm(a) * optax.tree.norm(b)))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--episodes", type=int, default=256, help="per mean gradient (x32)")
    parser.add_argument("--singles", type=int, default=16, help="single-episode draws")
    parser.add_argument("--backprop-steps", type=int, default=200)
    parser.add_argument("--backprop-lr", type=float, default=1e-3)
    parser.add_argument("--test-episodes", type=int, default=500)
    parser.add_argument(
        "--at-init",
        action="store_true",
        help="measure at the run's initial parameters (and a fresh optimizer) instead",
    )
    return parser.parse_args()


def gradients(config, model, params, images, args):
    """``(g_true, g_true2, singles, g_es)``: two mean gradients and the one-episode cosines.

    The loss and the ES estimate are the training step's (:mod:`esmeta_core.train_step`).
    """
    kw = dict(way=config.way, shot=config.shot, query=config.query)
    grad = jax.jit(jax.grad(train_step.make_loss(config, model)))
    es_grad = jax.jit(train_step.make_gradient(config, model, sharding.population_mesh()))

    def mean_grad(seed, chunk=32):  # in chunks: flat memory in --episodes
        episodes = sample_episodes(images, seed=seed, step=0, batch=args.episodes, **kw)
        parts = [
            grad(params, jax.tree.map(lambda x, i=i: x[i : i + chunk], episodes))
            for i in range(0, args.episodes, chunk)
        ]
        return jax.tree.map(lambda *g: sum(g) / len(g), *parts)

    # Episode seeds far from any run's (seed, step) stream.
    g_true, g_true2 = mean_grad(10_001), mean_grad(10_002)
    singles = {name: [] for name in SINGLES}
    for i in range(args.singles):  # one training step's view: one episode, one ES estimate
        one = sample_episodes(images, seed=10_004, step=i, batch=1, **kw)
        key = train_step.step_key(config.seed, 10**6 + i)
        g_ep, g_es = grad(params, one), es_grad(params, key, one)[0]
        singles["cos_episode_gtrue"].append(cosine(g_ep, g_true))
        singles["cos_es_episode"].append(cosine(g_es, g_ep))
        singles["cos_es_gtrue"].append(cosine(g_es, g_true))
    return g_true, g_true2, singles, g_es


def line_searches(loss, params, held_out, directions) -> dict[str, dict[str, float]]:
    """The held-out loss at ``params + t |params| d / |d|`` for each direction ``d``."""
    norm = float(optax.tree.norm(params))
    lines = {}
    for name, direction in directions.items():
        unit = jax.tree.map(lambda x, d=direction: x / optax.tree.norm(d), direction)
        lines[name] = {
            str(t): float(
                loss(jax.tree.map(lambda p, u, t=t: p + t * norm * u, params, unit), held_out)
            )
            for t in (0.0, 0.003, 0.01, 0.03, 0.1)
        }
    return lines


def backprop_continuation(config, model, params, images, args):
    """Parameters after ``--backprop-steps`` Adam steps of backprop on the training loss."""
    kw = dict(way=config.way, shot=config.shot, query=config.query)
    loss = train_step.make_loss(config, model)
    adam = optax.adam(args.backprop_lr)

    @jax.jit
    def bp_step(p, s, episodes):
        u, s = adam.update(jax.grad(loss)(p, episodes), s, p)
        return optax.apply_updates(p, u), s

    bp_params, bp_state = params, adam.init(params)
    for i in range(args.backprop_steps):
        episodes = sample_episodes(images, seed=20_000, step=i, batch=1, **kw)
        bp_params, bp_state = bp_step(bp_params, bp_state, episodes)
    return bp_params


def measure(config, state, args) -> dict:
    """Every measurement of the module docstring at ``state``."""
    model = train_step.model_for(config)
    params, opt_state = state.params, state.opt_state
    images = load_split(config.split).images
    g_true, g_true2, singles, g_es = gradients(config, model, params, images, args)
    reliability = cosine(g_true, g_true2)  # each mean has cosine sqrt(this) to the true one
    out = {
        "step": state.step,
        "num_params": protonet.num_params(params),
        "episodes_per_mean_gradient": args.episodes,
        "cos_gtrue_gtrue2": reliability,
        "single_episodes": args.singles,
    }
    for name, values in singles.items():
        out[name + "_mean"] = float(np.mean(values))
        out[name + "_std"] = float(np.std(values))
    if reliability > 0:  # cosines to the expected gradient, correcting for g_true's noise
        scale = 1 / np.sqrt(reliability)
        out["cos_episode_expected_gradient"] = out["cos_episode_gtrue_mean"] * scale
        out["cos_es_expected_gradient"] = out["cos_es_gtrue_mean"] * scale
    mu = optim.first_moment(opt_state)
    step, _ = train_step.make_optimizer(config).update(g_es, opt_state, params)  # the next step
    neg = lambda t: jax.tree.map(lambda x: -x, t)  # noqa: E731
    has_mu = float(optax.tree.norm(mu)) > 0
    out["cos_mu_gtrue"] = cosine(mu, g_true) if has_mu else None
    out["cos_step_neg_gtrue"] = cosine(step, neg(g_true))
    loss = jax.jit(train_step.make_loss(config, model))
    kw = dict(way=config.way, shot=config.shot, query=config.query)
    held_out = sample_episodes(images, seed=10_003, step=0, batch=args.episodes, **kw)
    out["train_loss_held_out"] = float(loss(params, held_out))
    directions = {"neg_gtrue": neg(g_true), "step": step} | ({"neg_mu": neg(mu)} if has_mu else {})
    out["line_search_loss"] = line_searches(loss, params, held_out, directions)
    out["line_search_note"] = "loss on held-out training episodes at params + t * |params| * unit"
    # Backprop continuation from the ES parameters (the main preset's episode stream).
    bp_params = backprop_continuation(config, model, params, images, args)
    test_images = load_split(config.eval_split).images
    test = dict(way=config.way, shot=config.shot, query=15, episodes=args.test_episodes)
    out["test_accuracy_es"] = evaluate(model, params, test_images, **test).accuracy
    out["test_accuracy_after_backprop"] = evaluate(model, bp_params, test_images, **test).accuracy
    out["backprop_steps"], out["backprop_lr"] = args.backprop_steps, args.backprop_lr
    out["test_episodes"] = args.test_episodes
    return out


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    workdir = Path(args.workdir)
    config = checkpoint.saved_config(workdir)
    state = train_step.init_state(config, train_step.model_for(config))
    if not args.at_init:
        state = checkpoint.restore(workdir, state)
    out = {"workdir": str(workdir), **measure(config, state, args)}
    name = "es_plateau_at_init.json" if args.at_init else "es_plateau.json"
    command = "python scripts/diagnostics/es_plateau.py " + " ".join(sys.argv[1:])
    result = report.write_result(
        workdir / name,
        out,
        config=vars(args),
        command=command,
        wall_s=time.perf_counter() - t0,
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
