"""Meta-training ProtoNets on Omniglot by backprop or by sharded ES, with evaluation.

``train_and_evaluate(config, workdir)`` is the whole experiment. It writes to
``workdir``:

- ``config.json``: the run's :class:`~esmeta_core.configs.TrainConfig`;
- ``metrics.jsonl``: one JSON line per ``log_every`` steps;
- ``checkpoint.msgpack``: step, parameters and optimizer state, replaced
  atomically every ``checkpoint_every`` steps and at the end;
- ``summary.json``: config, commit, JAX version, devices, wall time and the
  test accuracy with its 95 % confidence interval.

A run is reproducible from its seed alone: episode ``t`` and the ES noise of
step ``t`` depend on ``(seed, t)`` only, so a run resumed from a checkpoint
ends with the same parameters as one that was never interrupted.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm  # plain text bars: the same in terminals, notebooks and CI logs

from esmeta_core import es, protonet, sharding
from esmeta_core.configs import TrainConfig, es_config, validate
from esmeta_core.data import Episode, load_split, sample_episodes
from esmeta_core.report import provenance

CHECKPOINT = "checkpoint.msgpack"


class TrainState(NamedTuple):
    """What a checkpoint holds: the step reached, parameters and optimizer state."""

    step: int
    params: Any
    opt_state: Any


class Evaluation(NamedTuple):
    """Accuracy over test episodes: mean, half-width of the 95 % CI, and count."""

    accuracy: float
    ci95: float
    episodes: int


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam whose learning rate halves every ``lr_halving_every`` steps (Snell et al.)."""
    schedule = optax.exponential_decay(
        config.lr, transition_steps=config.lr_halving_every, decay_rate=0.5, staircase=True
    )
    return optax.adam(schedule)


def init_state(config: TrainConfig, model: protonet.Conv4) -> TrainState:
    params = protonet.init_params(jax.random.key(config.seed), model)
    return TrainState(0, params, make_optimizer(config).init(params))


def step_key(seed: int, step: int) -> jax.Array:
    """The ES noise key of step ``step``: ``fold_in(key(seed + 1), step)``."""
    return jax.random.fold_in(jax.random.key(seed + 1), step)


def make_train_step(
    config: TrainConfig, model: protonet.Conv4, mesh: jax.sharding.Mesh
) -> Callable[[Any, Any, jax.Array, Episode], tuple[Any, Any, dict[str, jax.Array]]]:
    """A jitted ``(params, opt_state, key, episodes) -> (params, opt_state, metrics)``.

    ``episodes`` carry a leading ``[batch]`` axis. With ``method="es"`` the
    gradient is :func:`esmeta_core.es.es_grad` sharded over ``mesh``; with
    ``"backprop"`` it is ``jax.grad``. Either way Adam applies it.
    """
    optimizer = make_optimizer(config)
    train_way = config.train_way or config.way if config.method == "backprop" else config.way

    def loss_fn(params, episodes):
        losses = jax.vmap(
            lambda e: protonet.episode_loss(
                model, params, e, way=train_way, query_chunk=config.query_chunk
            )
        )(episodes)
        return losses.mean()

    def center_metrics(params, episodes):
        loss, acc = jax.vmap(
            lambda e: protonet.episode_loss_and_accuracy(model, params, e, way=train_way)
        )(episodes)
        return loss.mean(), acc.mean()

    @jax.jit
    def train_step(params, opt_state, key, episodes):
        metrics = {}
        if config.method == "es":
            grads, stats = es.es_grad(
                loss_fn, params, key, episodes, config=es_config(config), mesh=mesh
            )
            metrics.update(
                population_loss=stats.loss_mean,
                population_loss_std=stats.loss_std,
                num_nonfinite=stats.num_nonfinite,
            )
        else:
            grads = jax.grad(loss_fn)(params, episodes)
        loss, acc = center_metrics(params, episodes)
        metrics.update(loss=loss, accuracy=acc, grad_norm=optax.tree.norm(grads))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return train_step


# ----------------------------------------------------------------------------
# Evaluation.


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


# ----------------------------------------------------------------------------
# Checkpoints.


def save_checkpoint(workdir: Path, state: TrainState) -> None:
    """Writes ``checkpoint.msgpack`` atomically (temporary file, then rename)."""
    host = sharding.to_host({"params": state.params, "opt_state": state.opt_state})
    payload = flax.serialization.to_bytes({"step": np.int64(state.step), **host})
    tmp = workdir / (CHECKPOINT + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, workdir / CHECKPOINT)


def restore_checkpoint(workdir: Path, template: TrainState) -> TrainState:
    """Reads ``checkpoint.msgpack`` into the structure of ``template``.

    Raises:
      ValueError: the checkpoint's parameter shapes differ (another model width).
    """
    path = Path(workdir) / CHECKPOINT
    try:
        raw = flax.serialization.msgpack_restore(path.read_bytes())
        raw["params"], raw["step"]  # noqa: B018 (checks the keys)
    except Exception as e:  # msgpack raises several types for a damaged file
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {e}). Delete it to "
            "restart the run from step 0, or restore it from a backup."
        ) from e
    want = jax.tree.map(np.shape, template.params)
    got = jax.tree.map(np.shape, raw["params"])
    if want != got:
        raise ValueError(
            f"{path} holds a model of another shape (e.g. another width) than the config asks "
            f"for: checkpoint conv shapes {jax.tree.leaves(got)[:2]}, expected "
            f"{jax.tree.leaves(want)[:2]}."
        )
    target = {"step": np.int64(0), "params": template.params, "opt_state": template.opt_state}
    restored = flax.serialization.from_state_dict(target, raw)
    return TrainState(int(restored["step"]), restored["params"], restored["opt_state"])


def check_workdir_config(workdir: Path, config: TrainConfig) -> TrainConfig:
    """The config saved in ``workdir``; errors if a width or method clash with ``config``."""
    saved = TrainConfig.load(workdir / "config.json")
    for field in ("width", "method"):
        if getattr(saved, field) != getattr(config, field):
            raise ValueError(
                f"{workdir} holds a run with {field}={getattr(saved, field)!r}, but "
                f"{field}={getattr(config, field)!r} was asked for. Use another --workdir, "
                "or the saved value."
            )
    return saved


# ----------------------------------------------------------------------------
# The experiment.


def _metrics_up_to(path: Path, step: int) -> list[str]:
    """Lines of ``metrics.jsonl`` logged at or before ``step`` (drops those past a checkpoint)."""
    if not path.exists():
        return []
    return [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= step
    ]


def train_and_evaluate(
    config: TrainConfig,
    workdir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Trains, checkpoints and tests one ProtoNet; returns (and writes) the summary.

    Args:
      config: the run; checked before any compute.
      workdir: where files go. An existing run there needs ``resume=True``.
      resume: continue the run in ``workdir`` from its last checkpoint.
      progress: show progress bars.
      on_step: called with each finished step (used by tests to interrupt).
    """
    workdir = Path(workdir)
    mesh = sharding.population_mesh()
    validate(config, mesh.shape[sharding.POP_AXIS])
    has_run = (workdir / "config.json").exists()
    if has_run and not resume:
        raise FileExistsError(
            f"{workdir} already holds a run. Pass --resume to continue it, or choose another "
            "--workdir."
        )
    if resume and has_run:
        saved = check_workdir_config(workdir, config)
        config = TrainConfig(**{**saved.to_json(), "steps": max(config.steps, saved.steps)})
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config.to_json(), indent=2))

    model = protonet.Conv4(config.width)
    state = init_state(config, model)
    if resume and (workdir / CHECKPOINT).exists():
        state = restore_checkpoint(workdir, state)
    metrics_path = workdir / "metrics.jsonl"
    kept = _metrics_up_to(metrics_path, state.step)
    metrics_path.write_text("".join(line + "\n" for line in kept))

    train_images = load_split(config.split).images
    train_way = config.train_way or config.way if config.method == "backprop" else config.way
    train_step = make_train_step(config, model, mesh)
    params, opt_state = sharding.replicate((state.params, state.opt_state), mesh)
    start, wall0 = state.step, time.perf_counter()
    bar = tqdm(
        total=config.steps,
        initial=start,
        desc=f"{config.method} {config.way}w{config.shot}s",
        disable=not progress,
        dynamic_ncols=True,
    )
    with metrics_path.open("a") as log:
        for step in range(start, config.steps):
            episodes = sample_episodes(
                train_images,
                seed=config.seed,
                step=step,
                batch=config.batch,
                way=train_way,
                shot=config.shot,
                query=config.query,
            )
            inputs = sharding.replicate((step_key(config.seed, step), episodes), mesh)
            params, opt_state, metrics = train_step(params, opt_state, *inputs)
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                record = {k: float(v) for k, v in sharding.to_host(metrics).items()}
                elapsed = time.perf_counter() - wall0
                record.update(
                    step=done,
                    wall_s=round(elapsed, 2),
                    episodes_per_s=round((done - start) * config.batch / elapsed, 3),
                )
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    acc=f"{record['accuracy']:.3f}",
                    ep_s=f"{record['episodes_per_s']:.2f}",
                )
            if done % config.checkpoint_every == 0 or done == config.steps:
                save_checkpoint(workdir, TrainState(done, params, opt_state))
            bar.update(1)
            if on_step is not None:
                on_step(done)
    bar.close()
    train_wall = time.perf_counter() - wall0

    test_images = load_split(config.eval_split).images
    params_host = sharding.to_host(params)
    result = evaluate(
        model,
        params_host,
        test_images,
        way=config.way,
        shot=config.shot,
        episodes=config.eval_episodes,
        progress=progress,
    )
    summary = {
        "config": config.to_json(),
        **provenance(),
        "train_wall_s": round(train_wall, 1),
        "resumed_from_step": start,
        "num_params": protonet.num_params(params_host),
        "eval": {f"{config.way}w{config.shot}s": result._asdict()},
        "eval_split": config.eval_split,
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_checkpoint(
    workdir: str | Path,
    *,
    settings: tuple[tuple[int, int], ...] = ((5, 1), (5, 5), (20, 1), (20, 5)),
    episodes: int = 1000,
    split: str | None = None,
    width: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Tests a checkpoint on several (way, shot) settings; writes ``eval.json``.

    Raises:
      FileNotFoundError: no checkpoint in ``workdir``.
      ValueError: ``width`` given and different from the checkpoint's.
    """
    workdir = Path(workdir)
    if not (workdir / CHECKPOINT).exists():
        raise FileNotFoundError(f"No {CHECKPOINT} in {workdir}: train first (esmeta train).")
    config = TrainConfig.load(workdir / "config.json")
    if width is not None and width != config.width:
        raise ValueError(
            f"The checkpoint in {workdir} was trained with width={config.width}, "
            f"but width={width} was asked for."
        )
    split = split or config.eval_split
    from esmeta_core.configs import SPLIT_CLASSES

    for way, shot in settings:
        if way > SPLIT_CLASSES[split] or shot + 1 > 20:
            raise ValueError(f"Cannot test {way}-way {shot}-shot on {split!r}.")
    model = protonet.Conv4(config.width)
    state = restore_checkpoint(workdir, init_state(config, model))
    images = load_split(split).images
    results = {}
    for way, shot in settings:
        r = evaluate(
            model, state.params, images, way=way, shot=shot, episodes=episodes, progress=progress
        )
        results[f"{way}w{shot}s"] = r._asdict()
    out = {"step": state.step, "split": split, "results": results, **provenance()}
    (workdir / "eval.json").write_text(json.dumps(out, indent=2))
    return results


def read_metrics(workdir: str | Path) -> list[dict[str, float]]:
    """The run's ``metrics.jsonl`` as a list of dicts."""
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    values = np.asarray(values, float)
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_learning_curve(workdirs: dict[str, str | Path], out: str | Path | None = None):
    """Training loss and accuracy against step for several runs; saves a PNG if ``out``."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, wd in workdirs.items():
        rows = read_metrics(wd)
        steps = np.array([r["step"] for r in rows])
        window = max(1, len(rows) // 20)
        ax_loss.plot(steps, smoothed([r["loss"] for r in rows], window), label=label)
        ax_acc.plot(steps, smoothed([r["accuracy"] for r in rows], window), label=label)
    ax_loss.set(xlabel="step", ylabel="training episode loss", yscale="log")
    ax_acc.set(xlabel="step", ylabel="training episode accuracy")
    ax_acc.legend()
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=120)
    return fig


def summary_line(summary: dict[str, Any]) -> str:
    """The one line the main job ends with."""
    ((setting, result),) = summary["eval"].items()
    return (
        f"Test accuracy ({setting}, {result['episodes']} episodes, {summary['eval_split']} split): "
        f"{100 * result['accuracy']:.2f} % +- {100 * result['ci95']:.2f} (95 % CI)"
    )


def as_array_tree(tree: Any) -> Any:
    """Host NumPy copy of a pytree (for comparisons in tests and notebooks)."""
    return jax.tree.map(lambda x: np.asarray(jnp.asarray(x)), tree)
