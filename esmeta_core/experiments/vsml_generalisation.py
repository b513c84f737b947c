"""Learned learners meta-trained on Omniglot tasks, tested on unseen digits tasks.

Kirsch & Schmidhuber, "Meta Learning Backpropagation And Improving It"
(NeurIPS 2021, arXiv:2012.14905), CPU-sized. Meta-training: 5-way online
classification tasks from Omniglot characters (Vinyals training split, 28x28
images randomly projected to 16 inputs per task, 50 examples per episode).
Meta-test: the same kind of tasks from scikit-learn's 8x8 digits, a data set
the learners never saw. The fitness is the paper's: the mean online
cross-entropy over the episode (``loss_type: mean``), minimised.

Learners, by family (``Config.learners`` picks them, by slug):

- tuned online learners on a linear layer: ``sgd``, ``adam`` (learning rate tuned
  on Omniglot tasks);
- ``vsml-handset``: VS-ML with hand-set meta-parameters that run SGD to first order;
- ES from scratch, the same ES, population, steps and tasks for each:
  ``vsml-es`` (VS-ML), ``vsml-es-legacy`` (VS-ML with this project's first
  initialisation, ``VSMLConfig(init="legacy")``), ``meta-rnn-es`` (an LSTM, lr
  ``Config.meta_rnn_lr``), ``hebbian-es`` (Oja fast weights);
- by gradient on the same online loss, the same steps and tasks per step:
  ``vsml-grad``, ``meta-rnn-grad``, ``hebbian-grad`` (at init the Hebbian
  learner's gradient on its plasticity parameters is ~70x smaller than on its
  slow input weights, too small for ES at this population to see; Adam on the
  exact gradient does see it);
- "backprop in forward mode": ``vsml-imitation`` (regression onto online SGD's
  predictions, by gradient), ``vsml-imitation-es`` (the same regression by ES),
  ``vsml-imitation-finetune`` (the regression cell, then ES on the online
  cross-entropy: "and improving it");
- backprop through more than one layer: ``vsml-imitation-mlp`` (a VS-ML network
  with hidden layers ``Config.mlp_hidden``, regressed by gradient onto online
  backprop on the tanh MLP of the same widths, ``vsml.online_mlp_sgd_logits``),
  against that MLP's online SGD on its own, ``sgd-mlp`` (lr tuned on Omniglot).

Each (learner, seed) is one result file ``parts/<learner>/seed<k>.json`` (plus
its trained parameters, ``.npz``), written once; a later call skips the parts
already there (``redo`` forces them), so a long sweep can be run a seed at a
time. Every call then gathers all parts under ``out_dir`` into
``generalisation.json`` (per learner: digits accuracy curves, and
``digits_last10_per_seed``, the mean accuracy over the last 10 of the 50
examples of each seed) and ``generalisation.png``.

  esmeta experiment vsml --learners vsml-es --seeds 0 --out results/vsml
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from esmeta_core import configs, es, nets, report, sharding, vsml
from esmeta_core.data import tasks
from esmeta_core.data.tasks import LENGTH, N_IN, WAY, Pool
from esmeta_core.plotting import save_figure

# (params, key, x f32[T, n_in], y i32[T]) -> scalar loss of one task
TaskLoss = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]

NAMES = {  # slug -> the name in the tables and plots
    "sgd": "online SGD (tuned lr)",
    "adam": "online Adam (tuned lr)",
    "vsml-handset": "VS-ML, hand-set to SGD",
    "vsml-es": "VS-ML, ES from scratch",
    "vsml-es-legacy": "VS-ML, ES from scratch, legacy init",
    "meta-rnn-es": "meta-RNN, ES from scratch",
    "hebbian-es": "Hebbian fast weights, ES from scratch",
    "vsml-grad": "VS-ML, gradient descent",
    "meta-rnn-grad": "meta-RNN, gradient descent",
    "hebbian-grad": "Hebbian fast weights, gradient descent",
    "vsml-imitation": "VS-ML, SGD imitation by regression",
    "vsml-imitation-es": "VS-ML, SGD imitation by ES",
    "vsml-imitation-finetune": "VS-ML, regression imitation + ES",
    "sgd-mlp": "online SGD, 16-8-5 tanh MLP (tuned lr)",
    "vsml-imitation-mlp": "VS-ML 16-8-5, backprop imitation by regression",
}
UNSEEDED = ("sgd", "adam", "vsml-handset", "sgd-mlp")  # nothing to meta-train: one "seed"
BACKPROP_PANEL = (
    "sgd", "vsml-handset", "vsml-imitation", "vsml-imitation-es", "sgd-mlp", "vsml-imitation-mlp",
)  # fmt: skip
MLP_LEARNERS = ("sgd-mlp", "vsml-imitation-mlp")  # their parts record the MLP's tuned lr


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of ``esmeta experiment vsml`` (defaults: the committed run's).

    ``steps``/``population``/``tasks_per_step``/``sigma`` are the ES budget of every
    ES-trained learner; the gradient-trained ones take the same ``steps`` and
    ``tasks_per_step``. ``eval_every`` steps the digits accuracy is logged (the
    meta-test curve). ``mlp_hidden``: the hidden widths of ``sgd-mlp`` and
    ``vsml-imitation-mlp`` (the names in ``NAMES`` say 16-8-5, the default);
    ``mlp_grad_lr``: the Adam rate of that regression (``regression_steps`` steps of
    ``regression_tasks`` tasks): its loss barely moved at ``grad_lr`` (0.55 -> 0.52
    in 200 steps at 3e-3, 0.55 -> 0.56 in 120 at 1e-2) and fell to 0.32 in 120
    steps at 3e-2 (seed 0, reference init).
    """

    learners: tuple[str, ...] = tuple(NAMES)
    seeds: tuple[int, ...] = (0, 1, 2)
    init: str = "reference"
    steps: int = 300
    population: int = 64
    tasks_per_step: int = 4
    sigma: float = 0.05
    vsml_lr: float = 0.03
    meta_rnn_lr: float = 0.003
    hebbian_lr: float = 0.03
    grad_lr: float = 0.003
    regression_steps: int = 1000
    regression_tasks: int = 8
    imitation_es_steps: int = 300
    finetune_lr: float = 0.003
    finetune_sigma: float = 0.02
    test_tasks: int = 200
    eval_every: int = 50
    mlp_hidden: tuple[int, ...] = (8,)
    mlp_grad_lr: float = 0.03
    redo: bool = False


RULES = {  # the fields whose type says too little (configs.validate_settings)
    "learners": configs.tuple_of(configs.one_of(NAMES)),
    "init": configs.one_of(vsml.INITS),
    "mlp_hidden": configs.tuple_of(configs.integer_at_least(1), allow_empty=True),
}


def validate_config(config: Config) -> None:
    """Raises ``ValueError`` naming an unknown learner or an impossible setting."""
    unknown = [name for name in config.learners if name not in NAMES]
    if unknown:
        raise ValueError(f"unknown learners {unknown}; choose from {list(NAMES)}")
    if config.init not in vsml.INITS:
        raise ValueError(f"init must be one of {vsml.INITS}, got {config.init!r}")
    if min(config.steps, config.population, config.tasks_per_step, config.test_tasks) < 1:
        raise ValueError("steps, population, tasks_per_step and test_tasks must be >= 1")
    if not config.mlp_hidden or min(config.mlp_hidden) < 1:
        raise ValueError(f"mlp_hidden must be one or more widths >= 1, got {config.mlp_hidden}")


def vsml_config(init: str, hidden: tuple[int, ...] = ()) -> vsml.VSMLConfig:
    return vsml.VSMLConfig(message_size=8, state_size=16, ticks=1, hidden=hidden, init=init)


# ----------------------------------------------------------------------------
# Evaluation and the two meta-training loops (ES, gradient).


def curves(
    learner: nets.Learner, params: Any, xs: jax.Array, ys: jax.Array, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Online loss and accuracy against examples seen: two f32[T], means over the tasks."""
    keys = jax.random.split(jax.random.key(seed), xs.shape[0])
    losses, correct = jax.jit(jax.vmap(lambda k, x, y: learner(params, k, x, y)))(keys, xs, ys)
    return np.asarray(losses.mean(0)), np.asarray(correct.mean(0))


def mean_over_tasks(task_loss: TaskLoss) -> Callable[..., jax.Array]:
    """Lifts ``task_loss(params, key, x, y) -> scalar`` to ``(params, xs, ys, key) -> mean``."""

    def batch_loss(params, xs, ys, key):
        keys = jax.random.split(key, xs.shape[0])
        return jax.vmap(lambda k, x, y: task_loss(params, k, x, y))(keys, xs, ys).mean()

    return batch_loss


def online_cross_entropy(learner: nets.Learner) -> TaskLoss:
    """The paper's fitness of one task: the mean online cross-entropy of ``learner``."""
    return lambda params, key, x, y: learner(params, key, x, y)[0].mean()


def es_meta_train(
    task_loss: TaskLoss,
    params: Any,
    pool: Pool,
    *,
    seed: int,
    steps: int,
    population: int,
    tasks_per_step: int,
    lr: float,
    sigma: float,
    monitor: Callable[[Any], float] | None = None,
    eval_every: int = 50,
    desc: str = "ES meta-training",
) -> tuple[Any, dict[str, list[float]]]:
    """Antithetic ES (centered ranks) + Adam on ``task_loss`` averaged over fresh tasks.

    All members of a step share its ``tasks_per_step`` tasks and episode keys
    (common random numbers). Returns the params and ``{"loss": per-step mean
    fitness, "eval_step", "eval": monitor(params) every eval_every steps}``.
    """
    mesh = sharding.population_mesh(jax.local_devices()[:1])
    grad_fn = es.make_es_grad(
        mean_over_tasks(task_loss),
        config=es.ESConfig(population=population, sigma=sigma, chunk_size=8),
        mesh=mesh,
    )
    # the updated params come back replicated on the mesh: start them there too, so
    # neither the step nor the monitor compiles a second time
    params = jax.device_put(params, jax.sharding.NamedSharding(mesh, sharding.P()))
    optimizer = optax.adam(lr)

    def update(params, state, key, xs, ys):
        grads, stats = grad_fn(params, key, xs, ys, jax.random.fold_in(key, 1))
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state, stats.loss_mean

    return _training_loop(
        update, params, optimizer.init(params), pool, seed=seed, steps=steps,
        tasks_per_step=tasks_per_step, monitor=monitor, eval_every=eval_every, desc=desc,
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
    monitor: Callable[[Any], float] | None = None,
    eval_every: int = 50,
    desc: str = "gradient meta-training",
) -> tuple[Any, dict[str, list[float]]]:
    """Adam on ``jax.grad`` of ``task_loss`` averaged over fresh tasks (clipped to norm 1)."""
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    batch_loss = mean_over_tasks(task_loss)

    @jax.jit
    def update(params, state, key, xs, ys):
        loss, grads = jax.value_and_grad(batch_loss)(params, xs, ys, key)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return _training_loop(
        update, params, optimizer.init(params), pool, seed=seed, steps=steps,
        tasks_per_step=tasks_per_step, monitor=monitor, eval_every=eval_every, desc=desc,
    )  # fmt: skip


def _training_loop(
    update, params, opt_state, pool, *, seed, steps, tasks_per_step, monitor, eval_every, desc
):
    """Applies ``update(params, opt_state, key, xs, ys) -> (params, opt_state, loss)`` on
    fresh tasks each step; returns the params and the logged losses and evaluations."""
    rng = np.random.default_rng(seed)
    log: dict[str, list[float]] = {"loss": [], "eval_step": [], "eval": []}
    for step in tqdm(range(steps), desc=desc, leave=False):
        if monitor is not None and step % eval_every == 0:
            log["eval_step"].append(step)
            log["eval"].append(monitor(params))
        xs, ys = tasks.task_batch(rng, pool, tasks_per_step)
        key = jax.random.fold_in(jax.random.key(seed), step)
        params, opt_state, loss = update(params, opt_state, key, xs, ys)
        log["loss"].append(float(loss))
    if monitor is not None:
        log["eval_step"].append(steps)
        log["eval"].append(monitor(params))
    return params, log


def tune_lr(
    make_optimizer: Callable[[float], optax.GradientTransformation],
    pool: Pool,
    grid: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0),
    *,
    way: int = WAY,
    n_in: int | None = N_IN,
    length: int = LENGTH,
) -> float:
    """The learning rate of ``grid`` with the lowest mean online loss on 64 tasks of ``pool``."""
    return tune_learner_lr(
        lambda lr: nets.linear_learner(make_optimizer(lr), num_classes=way), pool, grid,
        way=way, n_in=n_in, length=length,
    )  # fmt: skip


def tune_learner_lr(
    make_learner: Callable[[float], nets.Learner],
    pool: Pool,
    grid: Sequence[float],
    *,
    way: int = WAY,
    n_in: int | None = N_IN,
    length: int = LENGTH,
) -> float:
    """``tune_lr`` for any learner without meta-parameters: ``make_learner(lr)``."""
    xs, ys = tasks.task_batch(np.random.default_rng(123), pool, 64, way=way, n_in=n_in,
                              length=length)  # fmt: skip
    scores = {lr: curves(make_learner(lr), None, xs, ys)[0].mean() for lr in grid}
    return min(scores, key=scores.get)


MLP_LR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # tune_lr's grid and one step above


# ----------------------------------------------------------------------------
# The learner families: each trains one (learner, seed) and returns
# (learner, params, log) with log a dict of lists (possibly empty).


class Context:
    """What every family needs: the config, the pools, the tuned rates, a monitor."""

    def __init__(self, config: Config):
        self.config = config
        self.omniglot, self.digits = tasks.omniglot_pool(), tasks.digits_pool()
        self.test = tasks.task_batch(np.random.default_rng(999), self.digits, config.test_tasks)
        self.train = tasks.task_batch(np.random.default_rng(998), self.omniglot, config.test_tasks)
        self._rates: dict[str, float] = {}

    def rate(self, name: str) -> float:
        """The tuned learning rate of ``"sgd"``, ``"adam"`` or ``"sgd-mlp"`` (tuned once)."""
        if name not in self._rates:
            if name == "sgd-mlp":
                self._rates[name] = tune_learner_lr(self.mlp_sgd, self.omniglot, MLP_LR_GRID)
            else:
                make = {"sgd": optax.sgd, "adam": optax.adam}[name]
                self._rates[name] = tune_lr(make, self.omniglot)
        return self._rates[name]

    def mlp_sgd(self, lr: float) -> nets.Learner:
        """Online SGD on the ``N_IN -> *mlp_hidden -> WAY`` tanh MLP."""
        return nets.mlp_sgd_learner(hidden=self.config.mlp_hidden, lr=lr, num_classes=WAY)

    def monitor(self, learner: nets.Learner, seed: int) -> Callable[[Any], float]:
        """Digits accuracy over the last 10 examples, on the meta-test tasks (jitted once)."""
        keys = jax.random.split(jax.random.key(seed), self.test[0].shape[0])

        @jax.jit
        def last10(params):
            _, correct = jax.vmap(lambda k, x, y: learner(params, k, x, y))(keys, *self.test)
            return correct[:, -10:].mean()

        return lambda params: float(last10(params))


def _es(ctx: Context, learner, params, seed, *, lr, sigma=None, steps=None, loss=None, desc):
    c = ctx.config
    return es_meta_train(
        online_cross_entropy(learner) if loss is None else loss,
        params,
        ctx.omniglot,
        seed=seed,
        steps=c.steps if steps is None else steps,
        population=c.population,
        tasks_per_step=c.tasks_per_step,
        lr=lr,
        sigma=c.sigma if sigma is None else sigma,
        monitor=ctx.monitor(learner, seed),
        eval_every=c.eval_every,
        desc=desc,
    )


def _grad(ctx: Context, learner, params, seed, *, steps, tasks_per_step, loss=None, lr=None, desc):
    return gradient_meta_train(
        online_cross_entropy(learner) if loss is None else loss,
        params,
        ctx.omniglot,
        seed=seed,
        steps=steps,
        tasks_per_step=tasks_per_step,
        lr=ctx.config.grad_lr if lr is None else lr,
        monitor=ctx.monitor(learner, seed),
        eval_every=ctx.config.eval_every,
        desc=desc,
    )


def train_linear(ctx: Context, name: str, seed: int):
    """Tuned online SGD / Adam on a linear layer: nothing to meta-train but the rate."""
    del seed
    make = {"sgd": optax.sgd, "adam": optax.adam}[name]
    return nets.linear_learner(make(ctx.rate(name)), num_classes=WAY), None, {}


def train_mlp_sgd(ctx: Context, name: str, seed: int):
    """Tuned online SGD on the tanh MLP: nothing to meta-train but the rate."""
    del name, seed
    return ctx.mlp_sgd(ctx.rate("sgd-mlp")), None, {}


def train_handset(ctx: Context, name: str, seed: int):
    """The hand-set SGD cell with the tuned SGD rate, in VS-ML's parametrisation."""
    del name, seed
    config = vsml_config(ctx.config.init)
    meta = vsml.sgd_handset_meta_params(lr=ctx.rate("sgd") * N_IN, config=config)
    return nets.vsml_learner(num_classes=WAY, config=config), meta, {}


def train_from_scratch(ctx: Context, name: str, seed: int):
    """ES from scratch on the online cross-entropy (VS-ML, meta-RNN, Hebbian)."""
    c, key = ctx.config, jax.random.key(seed)
    if name in ("vsml-es", "vsml-es-legacy"):
        config = vsml_config("legacy" if name == "vsml-es-legacy" else c.init)
        learner = nets.vsml_learner(num_classes=WAY, config=config)
        params, lr = vsml.init_meta_params(key, config), c.vsml_lr
    elif name == "meta-rnn-es":
        learner = nets.meta_rnn_learner(num_classes=WAY)
        params, lr = nets.init_meta_rnn(key, n_in=N_IN, num_classes=WAY), c.meta_rnn_lr
    else:
        learner = nets.hebbian_learner(num_classes=WAY)
        params, lr = nets.init_hebbian(key, n_in=N_IN, num_classes=WAY), c.hebbian_lr
    params, log = _es(ctx, learner, params, seed, lr=lr, desc=f"{name}, seed {seed}")
    return learner, params, log


def train_by_gradient(ctx: Context, name: str, seed: int):
    """Adam on the gradient of the same online cross-entropy (same steps, tasks per step)."""
    c, key = ctx.config, jax.random.key(seed)
    if name == "vsml-grad":
        config = vsml_config(c.init)
        learner = nets.vsml_learner(num_classes=WAY, config=config)
        params = vsml.init_meta_params(key, config)
    elif name == "meta-rnn-grad":
        learner = nets.meta_rnn_learner(num_classes=WAY)
        params = nets.init_meta_rnn(key, n_in=N_IN, num_classes=WAY)
    else:
        learner = nets.hebbian_learner(num_classes=WAY)
        params = nets.init_hebbian(key, n_in=N_IN, num_classes=WAY)
    params, log = _grad(
        ctx, learner, params, seed, steps=c.steps, tasks_per_step=c.tasks_per_step,
        desc=f"{name}, seed {seed}",
    )  # fmt: skip
    return learner, params, log


def train_imitation(ctx: Context, name: str, seed: int):
    """Backprop in forward mode: regression onto online SGD, by gradient or ES, then ES.

    ``vsml-imitation-mlp``: the network has hidden layers ``mlp_hidden`` and the
    teacher is online backprop on the MLP of those widths at its tuned rate.
    """
    c, key = ctx.config, jax.random.key(seed)
    if name == "vsml-imitation-mlp":
        config, lr = vsml_config(c.init, c.mlp_hidden), ctx.rate("sgd-mlp")
        meta_lr = c.mlp_grad_lr
    else:
        config, lr, meta_lr = vsml_config(c.init), ctx.rate("sgd") * N_IN, c.grad_lr
    learner = nets.vsml_learner(num_classes=WAY, config=config)

    def imitation(meta, key, x, y):
        return vsml.imitation_loss(meta, key, x, y, num_classes=WAY, lr=lr, config=config)

    if name == "vsml-imitation-es":
        params, log = _es(
            ctx, learner, vsml.init_meta_params(key, config), seed, lr=c.vsml_lr,
            steps=c.imitation_es_steps, loss=imitation, desc=f"{name}, seed {seed}",
        )  # fmt: skip
        return learner, params, log
    params, log = _grad(
        ctx, learner, vsml.init_meta_params(key, config), seed, steps=c.regression_steps,
        tasks_per_step=c.regression_tasks, loss=imitation, lr=meta_lr,
        desc=f"{'vsml-imitation' if name == 'vsml-imitation-finetune' else name}, seed {seed}",
    )  # fmt: skip
    if name == "vsml-imitation-finetune":
        params, log = _es(
            ctx, learner, params, seed, lr=c.finetune_lr, sigma=c.finetune_sigma,
            desc=f"{name}, seed {seed}",
        )  # fmt: skip
    return learner, params, log


FAMILIES = {
    "sgd": train_linear,
    "adam": train_linear,
    "vsml-handset": train_handset,
    "vsml-es": train_from_scratch,
    "vsml-es-legacy": train_from_scratch,
    "meta-rnn-es": train_from_scratch,
    "hebbian-es": train_from_scratch,
    "vsml-grad": train_by_gradient,
    "meta-rnn-grad": train_by_gradient,
    "hebbian-grad": train_by_gradient,
    "vsml-imitation": train_imitation,
    "vsml-imitation-es": train_imitation,
    "vsml-imitation-finetune": train_imitation,
    "sgd-mlp": train_mlp_sgd,
    "vsml-imitation-mlp": train_imitation,
}


# ----------------------------------------------------------------------------
# Parts, the gathered result file, and the plot.


def command_line(config: Config, out_dir: str | Path, name: str = "vsml") -> str:
    """The ``esmeta experiment`` call that reproduces ``config`` (fields off their defaults)."""
    return report.experiment_command(name, config, out_dir)


def part_path(out_dir: str | Path, name: str, seed: int) -> Path:
    return Path(out_dir) / "parts" / name / f"seed{seed}.json"


def save_params(path: Path, params: Any) -> None:
    """Trained parameters beside their part: a flat ``.npz`` of the dict's arrays."""
    if params is not None:
        np.savez(path.with_suffix(".npz"), **{k: np.asarray(v) for k, v in params.items()})


def load_params(path: str | Path) -> dict[str, jax.Array]:
    """Parameters saved by ``save_params`` (give the part's ``.json`` or ``.npz`` path)."""
    with np.load(Path(path).with_suffix(".npz")) as data:
        return {k: jnp.asarray(data[k]) for k in data.files}


def run_part(ctx: Context, out_dir: Path, name: str, seed: int) -> dict[str, Any]:
    """Trains and tests one (learner, seed); writes its part and parameters."""
    start = time.perf_counter()
    learner, params, log = FAMILIES[name](ctx, name, seed)
    train_wall = time.perf_counter() - start
    digits_loss, digits_acc = curves(learner, params, *ctx.test, seed)
    _, omniglot_acc = curves(learner, params, *ctx.train, seed)
    path = part_path(out_dir, name, seed)
    payload = {
        "learner": name,
        "name": NAMES[name],
        "seed": seed,
        "train_wall_s": round(train_wall, 1),
        "digits_accuracy": digits_acc.tolist(),
        "digits_loss": digits_loss.tolist(),
        "digits_last10": float(digits_acc[-10:].mean()),
        "omniglot_last10": float(omniglot_acc[-10:].mean()),
        "meta_training": log,
        "num_params": 0 if params is None else vsml.num_meta_params(params),
        "sgd_lr": ctx.rate("sgd"),
        "adam_lr": ctx.rate("adam"),
    }
    if name in MLP_LEARNERS:
        payload["sgd_mlp_lr"] = ctx.rate("sgd-mlp")
    report.write_result(
        path,
        payload,
        config=dataclasses.replace(ctx.config, learners=(name,), seeds=(seed,)),
        command=command_line(ctx.config, out_dir),
        wall_s=time.perf_counter() - start,
    )
    save_params(path, params)
    return payload


def gather(out_dir: str | Path) -> dict[str, Any]:
    """All parts under ``out_dir``: per learner, curves over seeds and per-seed figures."""
    learners: dict[str, Any] = {}
    for name, title in NAMES.items():
        paths = sorted((Path(out_dir) / "parts" / name).glob("seed*.json"))
        if not paths:
            continue
        parts = [report.load_json(p) for p in paths]
        acc = np.array([p["digits_accuracy"] for p in parts])
        learners[name] = {
            "name": title,
            "seeds": [p["seed"] for p in parts],
            "digits_accuracy_mean": acc.mean(0).tolist(),
            "digits_accuracy_std": (acc.std(0, ddof=1) if len(acc) > 1 else 0 * acc[0]).tolist(),
            "digits_last10_per_seed": [p["digits_last10"] for p in parts],
            "digits_last10": float(np.mean([p["digits_last10"] for p in parts])),
            "digits_first10": float(acc[:, :10].mean()),
            "omniglot_last10": float(np.mean([p["omniglot_last10"] for p in parts])),
            "meta_training": [p["meta_training"] for p in parts],
            "train_wall_s_per_seed": [p["train_wall_s"] for p in parts],
            "num_params": parts[0]["num_params"],
            "parts": [
                {
                    "file": str(path),
                    "command": p["command"],
                    "wall_s": p["wall_s"],
                    "git_commit": p["provenance"]["git_commit"],
                    "config": p["config"],
                }
                for path, p in zip(paths, parts, strict=True)
            ],  # fmt: skip
        }
    return learners


def run(config: Config, out_dir: str | Path) -> dict[str, Any]:
    """Trains the missing (learner, seed) parts, then gathers all parts under ``out_dir``.

    Writes ``parts/<learner>/seed<k>.json`` (+ ``.npz``), ``generalisation.json`` and
    ``generalisation.png`` under ``out_dir``; returns the gathered result.
    """
    validate_config(config)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    ctx = Context(config)
    for name in config.learners:
        for seed in (0,) if name in UNSEEDED else config.seeds:
            if config.redo or not part_path(out_dir, name, seed).exists():
                run_part(ctx, out_dir, name, seed)
    payload = {
        "setting": f"{WAY}-way, {LENGTH} examples per episode, {N_IN} random-projection "
        "inputs; meta-trained on Omniglot (Vinyals train), tested on digits",
        "digits_last10": "mean online accuracy over the last 10 of the 50 examples, "
        f"{config.test_tasks} digits tasks",
        "learners": gather(out_dir),
    }
    result = report.write_result(
        out_dir / "generalisation.json",
        payload,
        config=config,
        command=command_line(config, out_dir),
        wall_s=time.perf_counter() - start,
    )
    plot(result, out_dir / "generalisation.png")
    return result


def learner_colours() -> dict[str, Any]:
    """One distinct colour per learner slug: matplotlib's ten, then six more named ones."""
    palette = [f"C{k}" for k in range(10)]
    palette += ["black", "darkgoldenrod", "teal", "navy", "magenta", "lime"]
    return {name: palette[k % len(palette)] for k, name in enumerate(NAMES)}


def plot_curves(ax: Any, results: dict[str, Any], names: Sequence[str], window: int = 5) -> None:
    """Online digits accuracy against examples seen (moving average), mean +- std over seeds."""
    colours = learner_colours()
    for name in names:
        r = results["learners"][name]
        mean, std = np.array(r["digits_accuracy_mean"]), np.array(r["digits_accuracy_std"])
        kernel = np.ones(window) / window
        smooth = np.convolve(mean, kernel, mode="valid")
        xs = np.arange(len(smooth)) + window
        style = "--" if "handset" in name else "-"
        ax.plot(xs, smooth, label=NAMES[name], color=colours[name], ls=style)
        if std.any():
            spread = np.convolve(std, kernel, mode="valid")
            ax.fill_between(xs, smooth - spread, smooth + spread, color=colours[name], alpha=0.15)
    ax.axhline(1 / WAY, color="grey", lw=0.8, label="chance")
    ax.set(xlabel="examples seen", ylabel="online accuracy", ylim=(0, 1))
    ax.legend(fontsize=7)


def plot(results: dict[str, Any], out: str | Path | None = None) -> Any:
    """Three panels: backprop in forward mode, generalisation to digits, meta-test curves."""
    import matplotlib.pyplot as plt

    learners = results["learners"]
    fig, (ax_bp, ax_gen, ax_meta) = plt.subplots(1, 3, figsize=(15, 4))
    plot_curves(ax_bp, results, [n for n in BACKPROP_PANEL if n in learners])
    ax_bp.set_title("backprop in forward mode (digits)", fontsize=9)
    others = [n for n in learners if n not in BACKPROP_PANEL[1:]]
    plot_curves(ax_gen, results, others)
    ax_gen.set_title("meta-trained on Omniglot, tested on unseen digits", fontsize=9)
    colours = learner_colours()
    for name, label in NAMES.items():
        for s, log in enumerate(learners.get(name, {}).get("meta_training", [])):
            if log.get("eval"):
                ax_meta.plot(
                    log["eval_step"], log["eval"], color=colours[name], alpha=0.7,
                    label=label if s == 0 else None,
                )  # fmt: skip
    ax_meta.set(xlabel="meta-training step", ylabel="digits accuracy, last 10 of 50", ylim=(0, 1))
    ax_meta.axhline(1 / WAY, color="grey", lw=0.8)
    ax_meta.legend(fontsize=7)
    return save_figure(fig, out)


VSML_HEADERS = (
    "learner",
    "digits (unseen), last 10 of 50",
    "per seed",
    "digits, first 10",
    "Omniglot, last 10",
    "meta-training per seed",
)


def markdown_table(result: dict[str, Any]) -> str:
    """The VS-ML table from a gathered ``generalisation.json``: per learner, digits accuracy
    over the last 10 of 50 examples (mean +- sample std over seeds, then each seed),
    over the first 10, Omniglot's, and the meta-training wall time per seed."""
    rows = []
    for r in result.get("learners", {}).values():
        if "digits_last10_per_seed" not in r:  # a file of the format before the parts
            continue
        per_seed = [100 * a for a in r["digits_last10_per_seed"]]
        spread = f" +- {report.sample_std(per_seed):.1f}" if len(per_seed) > 1 else ""
        walls = r["train_wall_s_per_seed"]
        rows.append(
            [
                r["name"],
                f"{np.mean(per_seed):.1f}{spread} %",
                ", ".join(f"{a:.1f}" for a in per_seed),
                f"{100 * r['digits_first10']:.1f} %",
                f"{100 * r['omniglot_last10']:.1f} %",
                f"{np.mean(walls) / 60:.1f} min" if max(walls) > 1 else "-",
            ]
        )
    return report.table(VSML_HEADERS, rows)
