"""Meta-training ProtoNets on Omniglot by backprop or by sharded ES, with evaluation.

``train_and_evaluate(config, workdir)`` is the whole experiment: :func:`prepare`
(a new run, or the resumed one), :func:`train_loop` (carrying a
:class:`~esmeta_core.checkpoint.TrainState`) and the test (:func:`evaluate`). It
writes to ``workdir``:

- ``config.json``: the run's :class:`~esmeta_core.configs.TrainConfig`;
- ``metrics.jsonl``: one JSON line per ``log_every`` steps;
- ``checkpoints/<step>/``: parameters and optimizer state (orbax; atomic, the last
  few kept), every ``checkpoint_every`` steps and at the end;
- ``summary.json``: config, commit, JAX version, devices, wall time and the
  test accuracy with its 95 % confidence interval.

A run is reproducible from its seed alone: episode ``t`` and the ES noise of
step ``t`` depend on ``(seed, t)`` only, so a run resumed from a checkpoint
ends with the same parameters as one that was never interrupted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import optax
from tqdm import tqdm  # plain text bars: the same in terminals, notebooks and CI logs

from esmeta_core import checkpoint, es, protonet, sharding
from esmeta_core.checkpoint import TrainState
from esmeta_core.configs import TrainConfig, es_config, validate_config
from esmeta_core.data import Episode, load_split, sample_episodes
from esmeta_core.evaluation import Evaluation, evaluate
from esmeta_core.report import command_line, write_result

METRICS = "metrics.jsonl"


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
# Prepare or resume, the loop, the test.


def prepare(
    config: TrainConfig, workdir: Path, *, mesh: jax.sharding.Mesh, resume: bool
) -> tuple[TrainConfig, TrainState]:
    """Checks ``config``, writes it to ``workdir`` and returns the run's first state.

    A new run starts from :func:`init_state`; a resumed one from its last checkpoint
    (with the saved config, ``steps`` possibly raised), and its ``metrics.jsonl``
    loses the lines logged after that checkpoint. The state is replicated on ``mesh``.
    """
    validate_config(config, mesh.shape[sharding.POP_AXIS])
    config = checkpoint.prepare_workdir(workdir, config, resume=resume)
    state = init_state(config, protonet.Conv4(config.width))
    state = TrainState(0, *sharding.replicate((state.params, state.opt_state), mesh))
    if resume and checkpoint.latest_step(workdir) is not None:
        state = checkpoint.restore(workdir, state)
    path = workdir / METRICS
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= state.step]
    path.write_text("".join(line + "\n" for line in kept))
    return config, state


def train_loop(
    config: TrainConfig,
    state: TrainState,
    *,
    mesh: jax.sharding.Mesh,
    workdir: Path,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> tuple[TrainState, float]:
    """Steps ``state`` to ``config.steps``, logging and checkpointing; returns it and the wall time.

    Step ``t`` trains on episodes ``(seed, t)`` with noise key :func:`step_key`.
    """
    images = load_split(config.split).images
    train_way = config.train_way or config.way if config.method == "backprop" else config.way
    train_step = make_train_step(config, protonet.Conv4(config.width), mesh)
    start, wall0 = state.step, time.perf_counter()
    desc = f"{config.method} {config.way}w{config.shot}s"
    bar = tqdm(
        total=config.steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True
    )
    with (workdir / METRICS).open("a") as log, checkpoint.manager(workdir) as checkpoints:
        while state.step < config.steps:
            episodes = sample_episodes(
                images,
                seed=config.seed,
                step=state.step,
                batch=config.batch,
                way=train_way,
                shot=config.shot,
                query=config.query,
            )
            inputs = sharding.replicate((step_key(config.seed, state.step), episodes), mesh)
            params, opt_state, metrics = train_step(state.params, state.opt_state, *inputs)
            state = TrainState(state.step + 1, params, opt_state)
            done = state.step
            if done % config.log_every == 0 or done == config.steps:
                elapsed = time.perf_counter() - wall0
                record = {k: float(v) for k, v in sharding.to_host(metrics).items()}
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
                checkpoint.save(checkpoints, state)
            bar.update(1)
            if on_step is not None:
                on_step(done)
    bar.close()
    return state, time.perf_counter() - wall0


def final_evaluation(config: TrainConfig, params: Any, *, progress: bool = False) -> Evaluation:
    """The run's test: ``eval_episodes`` ``way``-way ``shot``-shot episodes of ``eval_split``."""
    return evaluate(
        protonet.Conv4(config.width),
        params,
        load_split(config.eval_split).images,
        way=config.way,
        shot=config.shot,
        episodes=config.eval_episodes,
        progress=progress,
    )


def train_and_evaluate(
    config: TrainConfig,
    workdir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Trains, checkpoints and tests one ProtoNet; returns (and writes) the summary.

    Args:
      config: the run; checked before any compute.
      workdir: where files go. An existing run there needs ``resume=True``.
      resume: continue the run in ``workdir`` from its last checkpoint.
      progress: show progress bars.
      on_step: called with each finished step (used by tests to interrupt).
      command: the command line recorded in ``summary.json`` (default: this process's).
    """
    workdir, mesh = Path(workdir), sharding.population_mesh()
    config, state = prepare(config, workdir, mesh=mesh, resume=resume)
    start = state.step
    state, train_wall = train_loop(
        config, state, mesh=mesh, workdir=workdir, progress=progress, on_step=on_step
    )
    params = sharding.to_host(state.params)
    result = final_evaluation(config, params, progress=progress)
    summary = {
        "train_wall_s": round(train_wall, 1),
        "resumed_from_step": start,
        "num_params": protonet.num_params(params),
        "eval": {f"{config.way}w{config.shot}s": result._asdict()},
        "eval_split": config.eval_split,
    }
    return write_result(
        workdir / "summary.json",
        summary,
        config=config,
        command=command or command_line(),
        wall_s=train_wall,
    )
