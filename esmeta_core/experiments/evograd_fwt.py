"""Cross-domain few-shot learning: feature-wise transformation layers learned by EvoGrad.

Tseng et al. 2020 (arXiv:2001.08735) make a metric-based few-shot learner
generalise to unseen domains by scaling and shifting its features after every
batch norm with random ``gamma ~ N(1, softplus(theta_gamma))`` and ``beta ~ N(0,
softplus(theta_beta))`` during training (FWT layers, their eq. 1-2; here
:func:`esmeta_core.protonet.sample_feature_transform`). Their *learning-to-learn*
variant tunes ``lambda = (theta_gamma, theta_beta)``: at each iteration the seen
domains are split into a *pseudo-seen* and a *pseudo-unseen* one, the model takes a
step on a pseudo-seen episode *with* FWT, and ``lambda`` follows the gradient of the
loss of the *updated model without FWT* on a pseudo-unseen episode (their eq. 3-5,
a second-order gradient through the model step). EvoGrad (Bohdal et al. 2021,
arXiv:2106.10575, section 4.3) replaces that second-order gradient with its
first-order estimate; this module compares, on the same episodes, steps and seeds:

* no FWT (plain Prototypical Network training),
* FWT with the initial ``lambda`` of Tseng's code, never updated,
* FWT learned by EvoGrad (``K`` in ``copies_sweep``),
* FWT learned by the second-order hypergradient through one unrolled SGD step,

all through :func:`esmeta_core.evograd.make_bilevel_step`. The model is the
ProtoNet Conv4 (:mod:`esmeta_core.protonet`) with support-statistics batch norm.

**Domains.** Omniglot has no domains, but it has alphabets. The seen domains are
``domains`` groups of the 33 alphabets of the Vinyals *train* split (alphabets
dealt round-robin in name order, rotation 0 only: 1028 characters); each step
draws two of them, one pseudo-seen (the training episode) and one pseudo-unseen
(the validation episode), as Tseng et al. redraw the split every iteration. Every
method trains on exactly the same pseudo-seen episodes; only the FWT methods use
the pseudo-unseen ones, and only to update ``lambda``. Two unseen targets are
tested, both without FWT:

* ``omniglot-test``: the Vinyals test split (423 characters, 13 held-out
  alphabets, rotation 0), a near-domain shift;
* ``digits``: scikit-learn's handwritten digits (10 classes, 8x8, blurry grey
  blobs filling the frame) upscaled bilinearly to 28x28, a real cross-domain
  target unlike the thin pen strokes of Omniglot.

**Departures from the papers, for a 2-core CPU.** Conv4 of width 16 (not ResNet-10),
rotation 0 only, 5 queries per class in training, a few hundred steps, the meta
learning rate (Adam) raised from Tseng's 1e-3 to 0.1 so that ``lambda`` can move
within the run (Adam makes the EvoGrad scale irrelevant, see
:mod:`esmeta_core.evograd`; at 1e-2 the channel means of softplus(theta) moved by
less than 0.02 in 100 steps under both EvoGrad and second order, one seed), and one
draw of the FWT noise per step, shared by the ``K`` EvoGrad copies, the unrolled
step and the model step. The second-order baseline differentiates through one SGD
step of size ``inner_lr`` (the model itself trains with Adam).

**Initial spreads.** ``gamma0 = 0.3`` and ``beta0 = 0.5`` are the numbers in Tseng's
code, but their softplus is ``softplus(x, beta=100)`` (about ``max(x, 0)``), so their
spreads start at 0.30 and 0.50; with the plain softplus here they start at 0.85 and
0.97, the size of the batch-normed features (standard deviation 1). ``gamma_std0`` and
``beta_std0`` set the initial spreads directly (``--gamma-std0 0.3 --beta-std0 0.5``
for Tseng's). ``pretrain_steps`` first trains the encoder without FWT on pseudo-seen
episodes, as Tseng et al. start from a pre-trained encoder; every method gets the same
pre-training, then ``steps`` steps of its own.

  esmeta experiment evograd-fwt --out results/evograd   # writes fwt.json and fwt.png
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from esmeta_core import configs, evaluation, protonet, report
from esmeta_core.data import Episode, episode_rng, load_split, sample_episode
from esmeta_core.data.digits import load_digits
from esmeta_core.evograd import (
    BilevelState,
    evograd_hypergradient,
    make_bilevel_step,
    run_bilevel,
    unrolled_hypergradient,
)
from esmeta_core.plotting import save_figure

METHODS = ("none", "fixed", "evograd", "second_order")
TARGETS = ("omniglot-test", "digits")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the full run (``results/evograd/fwt.json``)."""

    seeds: int = 3
    steps: int = 200
    width: int = 16
    way: int = 5
    shot: int = 5
    query: int = 5
    domains: int = 4
    model_lr: float = 1e-3
    meta_lr: float = 0.1
    inner_lr: float = 0.01
    gamma0: float = 0.3  # initial theta_gamma (softplus(0.3) = 0.85), unless gamma_std0
    beta0: float = 0.5  # initial theta_beta (softplus(0.5) = 0.97), unless beta_std0
    gamma_std0: float | None = None  # initial softplus(theta_gamma); overrides gamma0
    beta_std0: float | None = None  # initial softplus(theta_beta); overrides beta0
    pretrain_steps: int = 0  # plain steps (no FWT, no lambda) before the bilevel steps
    sigma: float = 1e-3
    temperature: float = 0.05
    methods: tuple[str, ...] = METHODS
    copies_sweep: tuple[int, ...] = (2, 10)
    test_shots: tuple[int, ...] = (5, 1)
    test_episodes: int = 250
    timing_repeats: int = 5
    record_every: int = 10


RULES = {  # the fields whose type says too little (configs.validate_settings)
    "way": configs.integer_at_least(2),
    "domains": configs.integer_at_least(2),
    "gamma0": configs.finite_number,
    "beta0": configs.finite_number,
    "pretrain_steps": configs.integer_at_least(0),
    "methods": configs.tuple_of(configs.one_of(METHODS)),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row: ``method`` in :data:`METHODS` and EvoGrad's ``copies``."""

    name: str
    method: str
    copies: int = 2


def variants(config: Config) -> list[Variant]:
    """The rows of ``config.methods``, in :data:`METHODS` order; EvoGrad once per ``K``."""
    unknown = sorted(set(config.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"methods must be among {METHODS}, got {unknown}.")
    names = {
        "none": "no FWT",
        "fixed": "FWT, fixed initial lambda",
        "second_order": "FWT, second order",
    }
    rows = []
    for method in (m for m in METHODS if m in config.methods):
        if method == "evograd":
            rows += [Variant(f"FWT, EvoGrad K={k}", method, copies=k) for k in config.copies_sweep]
        else:
            rows.append(Variant(names[method], method))
    return rows


# ----------------------------------------------------------------------------
# Data: the seen domains, the episode tables and the two test targets.


def seen_domains(domains: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The Vinyals train split at rotation 0 and its alphabets dealt into ``domains`` groups.

    Returns:
      ``(images f32[1028, 20, 28, 28], [class rows i64[n_g] of group g])``.
    """
    data = load_split("train")
    keep = np.flatnonzero(data.rotations == 0)
    alphabets = np.asarray(data.alphabets)[keep]
    names = sorted(set(alphabets.tolist()))
    if not 2 <= domains <= len(names):
        raise ValueError(f"domains must be between 2 and {len(names)}, got {domains!r}.")
    groups = [np.flatnonzero(np.isin(alphabets, names[g::domains])) for g in range(domains)]
    return data.images[keep], groups


def episode_ids(
    groups: list[np.ndarray], per_class: int, *, seed: int, steps: int, way: int, shot: int,
    query: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Which images make each step's pseudo-seen and pseudo-unseen episodes.

    Step ``t`` draws two distinct groups from :func:`esmeta_core.data.episode_rng`
    ``(seed, t)`` (pseudo-seen, pseudo-unseen) and one episode from each with
    :func:`esmeta_core.data.sample_episode`, run on a table of flat image ids
    (``class * per_class + drawing``) instead of images.

    Returns:
      ``{"support": i32[steps, 2, way * shot], "query": i32[steps, 2, way * query]}``,
      index 0 pseudo-seen, 1 pseudo-unseen, into the images reshaped to
      ``[classes * per_class, h, w]``.
    """
    support = np.empty((steps, 2, way * shot), np.int32)
    queries = np.empty((steps, 2, way * query), np.int32)
    for t in range(steps):
        rng = episode_rng(seed, t)
        for i, g in enumerate(rng.choice(len(groups), size=2, replace=False)):
            table = groups[g][:, None] * per_class + np.arange(per_class)  # i[n_g, per_class]
            ep = sample_episode(table, rng, way=way, shot=shot, query=query)
            support[t, i], queries[t, i] = ep.support[:, 0], ep.query[:, 0]
    return {"support": support, "query": queries}


def digits_images(size: int = 28) -> np.ndarray:
    """scikit-learn's digits, bilinearly upscaled: f32[10, n, size, size], n = the rarest count."""
    data = load_digits(seed=0, val_fraction=0.0, test_fraction=0.0)
    x = np.asarray(jax.image.resize(data.train_x, (len(data.train_x), size, size), "linear"))
    x = np.clip(x, 0.0, 1.0)
    n = min(int(np.sum(data.train_y == c)) for c in range(10))
    return np.stack([x[data.train_y == c][:n] for c in range(10)]).astype(np.float32)


def target_images() -> dict[str, np.ndarray]:
    """The test targets of :data:`TARGETS`: f32[classes, per_class, 28, 28] each."""
    test = load_split("test")
    return {"omniglot-test": test.images[test.rotations == 0], "digits": digits_images()}


# ----------------------------------------------------------------------------
# Losses and training.


def fwt_train_loss(model: protonet.Conv4, way: int, params: Any, hyper: Any, batch: tuple):
    """Pseudo-seen episode loss with one FWT draw: ``batch = (episode, key)``; f32[]."""
    episode, key = batch
    transform = protonet.sample_feature_transform(key, hyper)
    return protonet.episode_loss(model, params, episode, way=way, transform=transform)


def plain_train_loss(model: protonet.Conv4, way: int, params: Any, hyper: Any, batch: tuple):
    """Pseudo-seen episode loss without FWT (``hyper`` ignored); f32[]."""
    del hyper
    return protonet.episode_loss(model, params, batch[0], way=way)


def unseen_loss(model: protonet.Conv4, way: int, params: Any, episode: Episode):
    """Pseudo-unseen episode loss of the model without FWT (Tseng et al. eq. 4); f32[]."""
    return protonet.episode_loss(model, params, episode, way=way)


def bilevel_step(config: Config, variant: Variant, model: protonet.Conv4):
    """The variant's :func:`esmeta_core.evograd.make_bilevel_step` and its two optimisers."""
    if variant.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {variant.method!r}.")
    model_opt, meta_opt = optax.adam(config.model_lr), optax.adam(config.meta_lr)
    losses = [functools.partial(f, model, config.way) for f in (fwt_train_loss, plain_train_loss)]
    step = make_bilevel_step(
        losses[0],
        functools.partial(unseen_loss, model, config.way),
        model_opt,
        meta_opt,
        method={"fixed": "none"}.get(variant.method, variant.method),
        inner_lr=config.inner_lr,
        model_loss=losses[1] if variant.method == "none" else None,
        copies=variant.copies,
        sigma=config.sigma,
        temperature=config.temperature,
    )
    return step, model_opt, meta_opt


def _episode(config: Config, flat_images, ids, t, i) -> Episode:
    w, s, q = config.way, config.shot, config.query
    return Episode(
        flat_images[ids["support"][t, i]][..., None],
        jnp.repeat(jnp.arange(w, dtype=jnp.int32), s),
        flat_images[ids["query"][t, i]][..., None],
        jnp.repeat(jnp.arange(w, dtype=jnp.int32), q),
    )


def initial_theta(config: Config) -> tuple[float, float]:
    """``(theta_gamma, theta_beta)`` at the start: ``gamma0, beta0`` or from the spreads."""
    if config.pretrain_steps < 0:
        raise ValueError(f"pretrain_steps must be >= 0, got {config.pretrain_steps!r}.")
    gamma = config.gamma0 if config.gamma_std0 is None else protonet.fwt_theta(config.gamma_std0)
    beta = config.beta0 if config.beta_std0 is None else protonet.fwt_theta(config.beta_std0)
    return gamma, beta


def initial_state(config: Config, model: protonet.Conv4, model_opt, meta_opt, key: jax.Array):
    """The same initial Conv4 and initial ``lambda`` (:func:`initial_theta`) for every method."""
    params = protonet.init_params(key, model)
    gamma, beta = initial_theta(config)
    hyper = protonet.init_fwt_hyperparams(model.depth, model.width, gamma=gamma, beta=beta)
    return BilevelState(params, model_opt.init(params), hyper, meta_opt.init(hyper))


def trainer(config: Config, variant: Variant, model: protonet.Conv4):
    """``train(flat_images, ids) -> (state, spreads)``, jittable, vmappable over seeds.

    ``flat_images`` f32[classes * 20, 28, 28]; ``ids`` from :func:`episode_ids` (with
    ``pretrain_steps + steps`` steps) plus ``"seed"``. The first ``pretrain_steps``
    pseudo-seen episodes train the model alone (no FWT, ``lambda`` untouched, the same
    for every method); the bilevel step ``t`` then uses table row ``pretrain_steps + t``.
    ``spreads``: ``{"gamma", "beta"}`` f32[steps, depth], the mean softplus(theta) per
    layer after every bilevel step.
    """
    step, model_opt, meta_opt = bilevel_step(config, variant, model)
    plain_step = bilevel_step(config, Variant("plain", "none"), model)[0]
    skip = config.pretrain_steps

    def train(flat_images, ids):
        key = jax.random.key(ids["seed"])
        state = initial_state(config, model, model_opt, meta_opt, key)
        if skip:
            state, _ = run_bilevel(
                plain_step,
                state,
                jax.random.fold_in(key, 3),
                lambda t: (_episode(config, flat_images, ids, t, 0), None),
                lambda t: None,
                steps=skip,
            )
        fwt_key = jax.random.fold_in(key, 1)
        return run_bilevel(
            step,
            state,
            jax.random.fold_in(key, 2),
            lambda t: (
                _episode(config, flat_images, ids, skip + t, 0),
                jax.random.fold_in(fwt_key, t),
            ),
            lambda t: _episode(config, flat_images, ids, skip + t, 1),
            steps=config.steps,
            record=lambda s: jax.tree.map(lambda v: jax.nn.softplus(v).mean(1), s.lam),
        )

    return train


def hypergradient_seconds(
    config: Config, variant: Variant, model: protonet.Conv4, flat_images, ids
) -> float | None:
    """Median wall time of one jitted hypergradient at the initial state (``None``: no lambda)."""
    if variant.method not in ("evograd", "second_order"):
        return None
    _, model_opt, meta_opt = bilevel_step(config, variant, model)
    state = initial_state(config, model, model_opt, meta_opt, jax.random.key(0))
    train_loss = functools.partial(fwt_train_loss, model, config.way)
    val_loss = functools.partial(unseen_loss, model, config.way)
    train_batch = (_episode(config, flat_images, ids, 0, 0), jax.random.key(1))
    val_batch = _episode(config, flat_images, ids, 0, 1)

    @jax.jit
    def hypergradient(params, lam):
        if variant.method == "evograd":
            return evograd_hypergradient(
                train_loss, val_loss, params, lam, jax.random.key(2), train_batch, val_batch,
                copies=variant.copies, sigma=config.sigma, temperature=config.temperature,
            )[0]  # fmt: skip
        return unrolled_hypergradient(
            train_loss, val_loss, params, lam, train_batch, val_batch, lr=config.inner_lr
        )[0]

    jax.block_until_ready(hypergradient(state.params, state.lam))  # compile
    times = []
    for _ in range(config.timing_repeats):
        start = time.perf_counter()
        jax.block_until_ready(hypergradient(state.params, state.lam))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def command_line(config: Config, out_dir: str | Path) -> str:
    """The ``esmeta experiment evograd-fwt`` call that gives ``config`` (fields off default)."""
    return report.experiment_command("evograd-fwt", config, out_dir)


def pooled(evals: list[evaluation.Evaluation]) -> dict[str, float]:
    """Accuracy over every seed's test episodes: mean, 95 % CI (pooled), std of seed means."""
    n = np.array([e.episodes for e in evals], float)
    m = np.array([e.accuracy for e in evals])
    sd = np.array([e.ci95 for e in evals]) * np.sqrt(n) / 1.96  # per-seed episode std
    sd = np.nan_to_num(sd)
    total = n.sum()
    mean = float((n * m).sum() / total)
    ss = ((n - 1) * sd**2).sum() + (n * (m - mean) ** 2).sum()
    ci = 1.96 * np.sqrt(ss / max(total - 1, 1) / total)
    return {"accuracy": mean, "ci95": float(ci), "seed_std": report.sample_std(m)}


def run_variant(
    config: Config, variant: Variant, model: protonet.Conv4, flat_images, ids, targets
) -> dict[str, Any]:
    """Trains every seed (vmapped, one program), tests each on every target, times it."""
    train = jax.jit(jax.vmap(trainer(config, variant, model), in_axes=(None, 0)))
    start = time.perf_counter()
    states, spreads = jax.block_until_ready(train(flat_images, ids))
    train_wall = time.perf_counter() - start
    seconds = hypergradient_seconds(
        config, variant, model, flat_images, jax.tree.map(lambda x: x[0], ids)
    )
    tests: dict[str, dict[str, Any]] = {}
    for target, images in targets.items():
        for shot in config.test_shots:
            evals = [
                evaluation.evaluate(
                    model,
                    jax.tree.map(lambda x, s=s: x[s], states.params),
                    images,
                    way=config.way,
                    shot=shot,
                    query=15,
                    episodes=config.test_episodes,
                )  # fmt: skip
                for s in range(config.seeds)
            ]
            tests[f"{target} {config.way}w{shot}s"] = {
                **pooled(evals),
                "per_seed": [e._asdict() for e in evals],
            }
    every = config.record_every
    return {
        "method": variant.name,
        "variant": dataclasses.asdict(variant),
        "test": tests,
        "hypergradient_s": seconds,
        "train_wall_s_all_seeds": round(train_wall, 2),  # includes compiling
        "final_fwt_std": {  # softplus(theta) per layer, mean over channels and seeds
            k: np.asarray(v[:, -1]).mean(0).round(4).tolist() for k, v in spreads.items()
        },
        # theta per layer: its channel mean and channel std, mean over seeds. A channel
        # mean near the start with a wide channel std is a random walk, and the mean of
        # softplus (above) then rises by convexity alone.
        "final_fwt_theta": {
            k: {
                "mean": np.asarray(v).mean(2).mean(0).round(4).tolist(),
                "channel_std": np.asarray(v).std(2).mean(0).round(4).tolist(),
            }
            for k, v in states.lam.items()
        },
        "fwt_std_trace": {  # the same every record_every steps, mean over seeds
            k: np.asarray(v[:, every - 1 :: every]).mean(0).round(4).tolist()
            for k, v in spreads.items()
        },
    }


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Every row of :func:`variants` over ``config.seeds`` seeds; writes ``fwt.json`` and a plot."""
    out_dir = Path(out_dir)
    start = time.perf_counter()
    initial_theta(config)  # bad spreads or pretrain_steps fail here, not after minutes
    model = protonet.Conv4(width=config.width)
    images, groups = seen_domains(config.domains)
    per_class = images.shape[1]
    tables = [
        episode_ids(groups, per_class, seed=s, steps=config.pretrain_steps + config.steps,
                    way=config.way, shot=config.shot, query=config.query)
        for s in range(config.seeds)
    ]  # fmt: skip
    ids = {k: jnp.asarray(np.stack([t[k] for t in tables])) for k in tables[0]}
    ids["seed"] = jnp.arange(config.seeds, dtype=jnp.int32)
    flat_images = jnp.asarray(images.reshape(-1, *images.shape[2:]))
    targets = target_images()
    rows = []
    for v in variants(config):
        row = run_variant(config, v, model, flat_images, ids, targets)
        rows.append(row)
        accs = "  ".join(f"{k} {100 * r['accuracy']:.1f}" for k, r in row["test"].items())
        print(f"{v.name:28s} {accs}  hypergradient {row['hypergradient_s']}", flush=True)
    payload = {
        "data": (
            f"Omniglot Vinyals train split (rotation 0), {config.domains} alphabet groups as "
            "seen domains (pseudo-seen / pseudo-unseen redrawn every step); tested without "
            "FWT on the Vinyals test split (rotation 0) and on scikit-learn digits at 28x28"
        ),
        "domains": [int(len(g)) for g in groups],
        "initial_fwt_std": {  # softplus of the initial theta
            k: round(float(jax.nn.softplus(t)), 4)
            for k, t in zip(("gamma", "beta"), initial_theta(config), strict=True)
        },
        "rows": rows,
    }
    result = report.write_result(
        out_dir / "fwt.json",
        payload,
        config=config,
        command=command_line(config, out_dir),
        wall_s=round(time.perf_counter() - start, 1),
    )
    plot(result, out_dir / "fwt.png")
    return result


def plot(result: dict[str, Any], out: str | Path | None = None):
    """Test accuracy per method and target (left); learned FWT spreads per layer (right)."""
    import matplotlib.pyplot as plt

    rows = result["rows"]
    settings = list(rows[0]["test"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        acc = [100 * row["test"][s]["accuracy"] for s in settings]
        ci = [100 * row["test"][s]["ci95"] for s in settings]
        ax.bar(np.arange(len(settings)) + i * width, acc, width, yerr=ci, label=row["method"])
        if row["variant"]["method"] in ("evograd", "second_order", "fixed"):
            for key, ls in (("gamma", "-"), ("beta", "--")):
                bx.plot(row["final_fwt_std"][key], ls, marker="o", color=f"C{i}",
                        label=f"{row['method']}, {key}")  # fmt: skip
    ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2, settings, fontsize=7)
    ax.set(ylabel="test accuracy (%)", title="No FWT at test time")
    ax.legend(fontsize=6)
    bx.set(xlabel="layer", ylabel="softplus(theta), channel mean", title="Learned FWT spreads")
    if bx.lines:
        bx.legend(fontsize=6)
    return save_figure(fig, out)


def markdown_table(result: dict[str, Any]) -> str:
    """The FWT table from a ``fwt.json``: per method, test accuracy on each target (mean over
    seeds +- their sample standard deviation) and the time of one hypergradient."""
    targets = list(result["rows"][0]["test"])
    rows = [
        [
            r["method"],
            *(
                report.pm(r["test"][t]["accuracy"], r["test"][t]["seed_std"], digits=1)
                for t in targets
            ),
            "-" if r["hypergradient_s"] is None else f"{1000 * r['hypergradient_s']:.0f}",
        ]
        for r in result["rows"]
    ]
    return report.table(["method", *targets, "hypergradient ms"], rows)
