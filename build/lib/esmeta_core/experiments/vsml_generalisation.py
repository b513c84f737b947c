"""VS-ML meta-trained on Omniglot tasks, tested on unseen digits tasks (CPU-sized).

Meta-training: 5-way online classification tasks from Omniglot characters
(Vinyals training split, 28x28 images randomly projected to 16 inputs per
task, 50 examples per episode). Meta-test: the same kind of tasks from
scikit-learn's 8x8 digits, a data set the learners never saw. Learners:

- VS-ML: the weight-shared LSTM grid of ``esmeta_core.vsml``, meta-trained by ES;
- a meta-RNN: one LSTM fed the input and the previous example's label, the
  same ES, population, steps and tasks;
- online SGD and online Adam on a linear layer, learning rate tuned on the
  meta-training tasks;
- VS-ML with hand-set meta-parameters that implement SGD;
- "backprop in forward mode", learned: VS-ML meta-trained by regression
  (``vsml.imitation_loss``, gradient descent) to reproduce the predictions of
  online SGD on Omniglot tasks, then run as a learner on the digits;
- that cell improved by ES on the online cross-entropy (Kirsch & Schmidhuber's
  "and improving it"), with the same ES budget as the learners trained from scratch;
- the meta-RNN meta-trained by gradient descent on the online cross-entropy
  (five times the regression's steps), so that it is not held back by ES alone.

  esmeta experiment vsml     # writes results/vsml/generalisation.json and .png
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from esmeta_core import es, vsml
from esmeta_core.data import load_split
from esmeta_core.data.digits import load_digits

Pool = tuple[np.ndarray, np.ndarray]  # features f32[n, d], class labels int[n]
# (params, key, x f32[T, n_in], y i32[T]) -> (losses f32[T], correct f32[T])
Learner = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# (params, key, x f32[T, n_in], y i32[T]) -> scalar loss of one task
TaskLoss = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]

WAY, LENGTH, N_IN = 5, 50, 16
CONFIG = vsml.VSMLConfig(message_size=8, state_size=16, ticks=1)
IMITATION = "VS-ML, SGD imitation by regression"
IMITATION_ES = "VS-ML, SGD imitation by ES"
BACKPROP_PANEL = ("online SGD (tuned lr)", "VS-ML, hand-set to SGD", IMITATION, IMITATION_ES)
RNN_HIDDEN = 128  # the meta-RNN's state size in the paper's public configuration


def omniglot_pool() -> Pool:
    """Meta-training data: f32[n, 784] images and class labels (Vinyals train, rotation 0)."""
    split = load_split("train")
    keep = np.flatnonzero(split.rotations == 0)
    images = split.images[keep]  # f32[classes, 20, 28, 28]
    features = images.reshape(-1, 28 * 28)
    labels = np.repeat(np.arange(len(keep)), images.shape[1])
    return features, labels


def digits_pool() -> Pool:
    data = load_digits(seed=0, val_fraction=0.0, test_fraction=0.0)
    return data.train_x.reshape(len(data.train_x), -1), data.train_y


def task_batch(rng: np.random.Generator, pool: Pool, count: int) -> tuple[jax.Array, jax.Array]:
    tasks = [
        vsml.sample_task(rng, *pool, num_classes=WAY, length=LENGTH, n_in=N_IN)
        for _ in range(count)
    ]
    return jnp.stack([t[0] for t in tasks]), jnp.stack([t[1] for t in tasks])


# ----------------------------------------------------------------------------
# Learners: each maps (params, key, x f32[T, n_in], y i32[T]) -> (losses f32[T], correct f32[T]).


def vsml_learner(
    meta: dict, key: jax.Array, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    return vsml.online_episode(meta, key, x, y, num_classes=WAY, config=CONFIG)


def init_meta_rnn(key: jax.Array) -> dict[str, jax.Array]:
    k1, k2 = jax.random.split(key)
    n = N_IN + WAY + RNN_HIDDEN
    return {
        "w": jax.random.normal(k1, (n, 4 * RNN_HIDDEN)) / jnp.sqrt(n),
        "b": jnp.zeros(4 * RNN_HIDDEN).at[RNN_HIDDEN : 2 * RNN_HIDDEN].set(1.0),
        "out": jax.random.normal(k2, (RNN_HIDDEN, WAY)) / jnp.sqrt(RNN_HIDDEN),
    }


def meta_rnn_learner(
    params: dict, key: jax.Array, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """An LSTM that sees x_t and the one-hot label of x_{t-1}, and predicts y_t."""
    del key
    previous = jnp.concatenate([jnp.zeros((1, WAY)), jax.nn.one_hot(y[:-1], WAY)])

    def step(carry, inputs):
        h, c = carry
        xt, prev, yt = inputs
        z = jnp.concatenate([xt, prev, h]) @ params["w"] + params["b"]
        i, f, g, o = jnp.split(z, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        log_probs = jax.nn.log_softmax(h @ params["out"])
        return (h, c), (-log_probs[yt], (jnp.argmax(log_probs) == yt).astype(jnp.float32))

    zeros = jnp.zeros(RNN_HIDDEN)
    _, (losses, correct) = jax.lax.scan(step, (zeros, zeros), (x, previous, y))
    return losses, correct


def linear_learner(optimizer: optax.GradientTransformation) -> Learner:
    """Online training of logits = x W + b from zero, one example at a time."""

    def learner(_params, key, x, y):
        del key
        w = {"w": jnp.zeros((N_IN, WAY)), "b": jnp.zeros(WAY)}

        def loss_fn(w, xt, yt):
            return -jax.nn.log_softmax(xt @ w["w"] + w["b"])[yt]

        def step(carry, inputs):
            w, state = carry
            xt, yt = inputs
            loss, grads = jax.value_and_grad(loss_fn)(w, xt, yt)
            correct = (jnp.argmax(xt @ w["w"] + w["b"]) == yt).astype(jnp.float32)
            updates, state = optimizer.update(grads, state)
            return (optax.apply_updates(w, updates), state), (loss, correct)

        _, out = jax.lax.scan(step, (w, optimizer.init(w)), (x, y))
        return out

    return learner


def curves(
    learner: Learner, params: Any, xs: jax.Array, ys: jax.Array, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean online loss and accuracy against examples seen, over a batch of tasks."""
    keys = jax.random.split(jax.random.key(seed), xs.shape[0])
    losses, correct = jax.jit(jax.vmap(lambda k, x, y: learner(params, k, x, y)))(keys, xs, ys)
    return np.asarray(losses.mean(0)), np.asarray(correct.mean(0))


def mean_over_tasks(task_loss: TaskLoss) -> Callable[..., jax.Array]:
    """Lifts ``task_loss(params, key, x, y) -> scalar`` to ``(params, xs, ys, key) -> mean``.

    ``xs`` f32[tasks, T, n_in] and ``ys`` i32[tasks, T] are a batch of tasks; each
    task gets its own key split from ``key``.
    """

    def batch_loss(params, xs, ys, key):
        keys = jax.random.split(key, xs.shape[0])
        return jax.vmap(lambda k, x, y: task_loss(params, k, x, y))(keys, xs, ys).mean()

    return batch_loss


def meta_train(
    learner: Learner | TaskLoss,
    params: Any,
    pool: Pool,
    *,
    seed: int,
    steps: int,
    population: int,
    tasks_per_step: int,
    lr: float = 0.03,
    sigma: float = 0.05,
    desc: str = "ES meta-training",
    fitness: str = "learner",
) -> tuple[Any, list[float]]:
    """ES meta-training of ``params``; returns params and per-step mean fitness.

    With ``fitness="learner"`` the fitness is the mean online cross-entropy of
    ``learner(params, key, x, y) -> (losses, correct)``; with ``"value"``,
    ``learner(params, key, x, y)`` already is the scalar fitness of one task.
    """
    if fitness == "learner":
        meta_loss = mean_over_tasks(lambda params, k, x, y: learner(params, k, x, y)[0].mean())
    elif fitness == "value":
        meta_loss = mean_over_tasks(learner)
    else:
        raise ValueError(f"fitness must be 'learner' or 'value', got {fitness!r}")
    grad_fn = es.make_es_grad(
        meta_loss, config=es.ESConfig(population=population, sigma=sigma, chunk_size=8)
    )
    optimizer = optax.adam(lr)

    def update(params, state, key, xs, ys):
        # members share the tasks and the episode key (common random numbers)
        grads, stats = grad_fn(params, key, xs, ys, jax.random.fold_in(key, 1))
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state, stats.loss_mean

    return _training_loop(
        update, params, optimizer.init(params), pool,
        seed=seed, steps=steps, tasks_per_step=tasks_per_step, desc=desc,
    )  # fmt: skip


def gradient_meta_train(
    task_loss: TaskLoss,
    params: Any,
    pool: Pool,
    *,
    seed: int,
    steps: int,
    tasks_per_step: int,
    lr: float = 3e-3,
    desc: str = "gradient meta-training",
) -> tuple[Any, list[float]]:
    """Adam on ``jax.grad`` of ``task_loss(params, key, x, y)`` averaged over sampled tasks.

    Gradients are clipped to global norm 1 (backprop through a 50-step episode).
    Returns the trained params and the per-step meta-losses.
    """
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))

    batch_loss = mean_over_tasks(task_loss)

    @jax.jit
    def update(params, state, key, xs, ys):
        loss, grads = jax.value_and_grad(batch_loss)(params, xs, ys, key)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return _training_loop(
        update, params, optimizer.init(params), pool,
        seed=seed, steps=steps, tasks_per_step=tasks_per_step, desc=desc,
    )  # fmt: skip


def _training_loop(update, params, opt_state, pool, *, seed, steps, tasks_per_step, desc):
    """Applies ``update(params, opt_state, key, xs, ys) -> (params, opt_state, loss)`` on
    fresh tasks each step; returns the params and the per-step losses."""
    rng = np.random.default_rng(seed)
    history = []
    for step in tqdm(range(steps), desc=desc, leave=False):
        xs, ys = task_batch(rng, pool, tasks_per_step)
        key = jax.random.fold_in(jax.random.key(seed), step)
        params, opt_state, loss = update(params, opt_state, key, xs, ys)
        history.append(float(loss))
    return params, history


def tune_lr(
    make_optimizer: Callable[[float], optax.GradientTransformation],
    pool: Pool,
    grid: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0),
) -> float:
    xs, ys = task_batch(np.random.default_rng(123), pool, 64)
    scores = {lr: curves(linear_learner(make_optimizer(lr)), None, xs, ys)[0].mean() for lr in grid}
    return min(scores, key=scores.get)


def run(
    out_dir: str | Path = "results/vsml",
    *,
    seeds: int = 3,
    steps: int = 100,
    population: int = 64,
    tasks_per_step: int = 4,
    regression_steps: int = 1000,
    regression_tasks: int = 8,
    meta_rnn_steps: int = 5000,
    imitation_es_steps: int = 300,
    finetune_lr: float = 0.003,
    finetune_sigma: float = 0.02,
    test_tasks: int = 200,
) -> dict[str, Any]:
    """Meta-trains every learner on Omniglot tasks, tests on digits, writes json + png.

    ``steps``/``population``/``tasks_per_step`` are the ES budget (the same for
    every ES-trained learner); ``regression_steps``/``regression_tasks`` the
    gradient budget of the SGD-imitating VS-ML; ``meta_rnn_steps`` that of the
    meta-RNN trained by gradient descent (more steps: it stays on the chance
    plateau for the first thousand or so); ``imitation_es_steps`` the ES budget for
    learning the same imitation as the regression (no gradients). ES started from the imitating cell
    fine-tunes it with the smaller ``finetune_lr`` and ``finetune_sigma``. Every
    meta-trained learner is run with ``seeds`` seeds.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    omniglot, digits = omniglot_pool(), digits_pool()
    test_x, test_y = task_batch(np.random.default_rng(999), digits, test_tasks)
    train_x, train_y = task_batch(np.random.default_rng(998), omniglot, test_tasks)
    sgd_lr, adam_lr = tune_lr(optax.sgd, omniglot), tune_lr(optax.adam, omniglot)
    # online SGD in VS-ML's parametrisation (logits = mean_i x_i w_ij) with the tuned rate
    imitated_lr = sgd_lr * N_IN
    results: dict[str, Any] = {"learners": {}, "meta_training": {}}

    def record(name, learner, per_seed_params, histories=None):
        digits_acc = np.stack(
            [curves(learner, p, test_x, test_y, s)[1] for s, p in enumerate(per_seed_params)]
        )
        omniglot_acc = np.stack(
            [curves(learner, p, train_x, train_y, s)[1] for s, p in enumerate(per_seed_params)]
        )
        results["learners"][name] = {
            "digits_accuracy_mean": digits_acc.mean(0).tolist(),
            "digits_accuracy_std": digits_acc.std(0).tolist(),
            "digits_final_accuracy": float(digits_acc[:, -10:].mean()),
            "digits_final_accuracy_per_seed": digits_acc[:, -10:].mean(1).tolist(),
            "omniglot_final_accuracy": float(omniglot_acc[:, -10:].mean()),
        }
        if histories is not None:
            results["meta_training"][name] = histories

    record("online SGD (tuned lr)", linear_learner(optax.sgd(sgd_lr)), [None])
    record("online Adam (tuned lr)", linear_learner(optax.adam(adam_lr)), [None])
    record(
        "VS-ML, hand-set to SGD",
        vsml_learner,
        [vsml.sgd_handset_meta_params(lr=imitated_lr, config=CONFIG)],
    )

    def imitation(meta, key, x, y):
        return vsml.imitation_loss(meta, key, x, y, num_classes=WAY, lr=imitated_lr, config=CONFIG)

    imitators, imitation_histories = [], []
    for seed in range(seeds):
        meta, history = gradient_meta_train(
            imitation,
            vsml.init_meta_params(jax.random.key(seed), CONFIG),
            omniglot,
            seed=seed,
            steps=regression_steps,
            tasks_per_step=regression_tasks,
            desc=f"VS-ML imitating SGD, seed {seed}",
        )
        imitators.append(meta)
        imitation_histories.append(history)
    record(IMITATION, vsml_learner, imitators)
    results["imitation_loss"] = imitation_histories

    imitation_by_es = [
        meta_train(
            imitation,
            vsml.init_meta_params(jax.random.key(seed), CONFIG),
            omniglot,
            seed=seed,
            steps=imitation_es_steps,
            population=population,
            tasks_per_step=tasks_per_step,
            desc=f"VS-ML imitating SGD by ES, seed {seed}",
            fitness="value",
        )
        for seed in range(seeds)
    ]
    record(IMITATION_ES, vsml_learner, [p for p, _ in imitation_by_es])
    results["imitation_loss_es"] = [h for _, h in imitation_by_es]

    es_runs = (  # name, learner, initial params, (Adam lr, sigma)
        (
            "VS-ML, regression imitation + ES",
            vsml_learner,
            lambda seed: imitators[seed],
            (finetune_lr, finetune_sigma),
        ),
        (
            "VS-ML, ES from scratch",
            vsml_learner,
            lambda seed: vsml.init_meta_params(jax.random.key(seed), CONFIG),
            (0.03, 0.05),
        ),
        (
            "meta-RNN, ES from scratch",
            meta_rnn_learner,
            lambda seed: init_meta_rnn(jax.random.key(seed)),
            (0.03, 0.05),
        ),
    )
    for name, learner, init, (lr, sigma) in es_runs:
        trained = [
            meta_train(
                learner,
                init(seed),
                omniglot,
                seed=seed,
                steps=steps,
                population=population,
                tasks_per_step=tasks_per_step,
                lr=lr,
                sigma=sigma,
                desc=f"{name}, seed {seed}",
            )
            for seed in range(seeds)
        ]
        record(name, learner, [p for p, _ in trained], [h for _, h in trained])

    def online_cross_entropy(params, key, x, y):
        return meta_rnn_learner(params, key, x, y)[0].mean()

    trained = [
        gradient_meta_train(
            online_cross_entropy,
            init_meta_rnn(jax.random.key(seed)),
            omniglot,
            seed=seed,
            steps=meta_rnn_steps,
            tasks_per_step=regression_tasks,
            desc=f"meta-RNN by gradient, seed {seed}",
        )
        for seed in range(seeds)
    ]
    record(
        "meta-RNN, gradient descent",
        meta_rnn_learner,
        [p for p, _ in trained],
        [h for _, h in trained],
    )
    results.update(
        command="esmeta experiment vsml",
        setting=f"{WAY}-way, {LENGTH} examples per episode, {N_IN} random-projection inputs",
        seeds=seeds,
        steps=steps,
        population=population,
        tasks_per_step=tasks_per_step,
        regression_steps=regression_steps,
        regression_tasks=regression_tasks,
        meta_rnn_steps=meta_rnn_steps,
        imitation_es_steps=imitation_es_steps,
        finetune_lr=finetune_lr,
        finetune_sigma=finetune_sigma,
        test_tasks=test_tasks,
        sgd_lr=sgd_lr,
        adam_lr=adam_lr,
        imitated_lr=imitated_lr,
        vsml_meta_params=vsml.num_meta_params(vsml.init_meta_params(jax.random.key(0), CONFIG)),
        meta_rnn_params=vsml.num_meta_params(init_meta_rnn(jax.random.key(0))),
        wall_s=round(time.perf_counter() - start, 1),
    )
    (out_dir / "generalisation.json").write_text(json.dumps(results, indent=1))
    plot(results, out_dir / "generalisation.png")
    return results


def plot_curves(ax: Any, results: dict[str, Any], names: Sequence[str], window: int = 5) -> None:
    """Online digits accuracy against examples seen (moving average), mean +- std over seeds."""
    colours = {name: f"C{k}" for k, name in enumerate(results["learners"])}
    for name in names:
        r = results["learners"][name]
        mean, std = np.array(r["digits_accuracy_mean"]), np.array(r["digits_accuracy_std"])
        kernel = np.ones(window) / window
        smooth = np.convolve(mean, kernel, mode="valid")
        xs = np.arange(len(smooth)) + window
        ax.plot(xs, smooth, label=name, color=colours[name], ls="--" if "hand-set" in name else "-")
        if std.any():
            spread = np.convolve(std, kernel, mode="valid")
            ax.fill_between(xs, smooth - spread, smooth + spread, color=colours[name], alpha=0.15)
    ax.axhline(1 / WAY, color="grey", lw=0.8, label="chance")
    ax.set(xlabel="examples seen", ylabel="online accuracy", ylim=(0, 1))
    ax.legend(fontsize=7)


def plot(results: dict[str, Any], out: str | Path | None = None) -> Any:
    """Three panels: backprop in forward mode, generalisation to digits, meta-training."""
    import matplotlib.pyplot as plt

    fig, (ax_bp, ax_gen, ax_meta) = plt.subplots(1, 3, figsize=(15, 4))
    plot_curves(ax_bp, results, [n for n in BACKPROP_PANEL if n in results["learners"]])
    ax_bp.set_title("backprop in forward mode (digits)", fontsize=9)
    others = [n for n in results["learners"] if n not in BACKPROP_PANEL[1:]]
    plot_curves(ax_gen, results, others)
    ax_gen.set_title("meta-trained on Omniglot, tested on unseen digits", fontsize=9)
    colours = {name: f"C{k}" for k, name in enumerate(results["learners"])}
    for name, histories in results["meta_training"].items():
        for k, h in enumerate(histories):
            window = max(1, len(h) // 25)  # running mean: ES losses are noisy
            smooth = np.convolve(h, np.ones(window) / window, mode="valid")
            ax_meta.plot(
                np.arange(window, len(h) + 1), smooth, color=colours[name], alpha=0.7,
                label=name if k == 0 else None,
            )  # fmt: skip
    ax_meta.set(
        xscale="log",
        xlabel="meta-training step (ES or Adam)",
        ylabel="online cross-entropy (Omniglot), running mean",
    )
    ax_meta.axhline(np.log(WAY), color="grey", lw=0.8, label="chance")
    ax_meta.legend(fontsize=7)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=120)
    return fig
