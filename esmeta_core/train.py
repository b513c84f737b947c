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

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from tqdm import tqdm  # plain text bars: the same in terminals, notebooks and CI logs

from esmeta_core import checkpoint, protonet, report, sharding
from esmeta_core.checkpoint import TrainState
from esmeta_core.configs import TrainConfig, config_hash, saved_config_hashes, validate_config
from esmeta_core.data import load_split, sample_episodes
from esmeta_core.evaluation import Evaluation, evaluate
from esmeta_core.train_step import (  # noqa: F401 (re-exported: the step's pieces)
    all_finite,
    init_state,
    make_optimizer,
    make_train_step,
    model_for,
    step_key,
)

METRICS = checkpoint.METRICS


class TrainingDiverged(RuntimeError):
    """The run stopped: its loss or parameters became non-finite (or every ES member did)."""


def is_writer() -> bool:
    """Whether this process writes the run's files (config, metrics, summary): process 0."""
    return jax.process_index() == 0


# ----------------------------------------------------------------------------
# Prepare or resume, the loop, the test.


def prepare(
    config: TrainConfig,
    workdir: Path,
    *,
    mesh: jax.sharding.Mesh,
    resume: bool,
    allow_changes: bool = False,
) -> tuple[TrainConfig, TrainState]:
    """Checks ``config``, writes it to ``workdir`` and returns the run's first state.

    A new run starts from :func:`init_state`; a resumed one from its last checkpoint,
    with the saved config (see :func:`esmeta_core.checkpoint.resume_config`), and its
    ``metrics.jsonl`` loses the lines logged after that checkpoint (and a torn last
    line); a resumed run with no checkpoint yet starts at step 0 and says so on stderr.
    ``config.json`` is written only once the data and the model are ready, so a run
    that fails before that leaves nothing that blocks a rerun. The state is replicated
    on ``mesh``.
    """
    config = checkpoint.resume_config(workdir, config, resume=resume, allow_changes=allow_changes)
    sharding.barrier("esmeta-workdir-checked")  # every process read it before 0 writes
    validate_config(config, mesh.shape[sharding.POP_AXIS])
    load_split(config.split)  # the data is there and sound before anything is written
    state = init_state(config, model_for(config))
    state = TrainState(0, *sharding.replicate((state.params, state.opt_state), mesh))
    if resume and checkpoint.latest_step(workdir) is not None:
        saved = json.loads((workdir / checkpoint.CONFIG).read_text())
        expected = None if allow_changes else saved_config_hashes(config, saved)
        state = checkpoint.restore(workdir, state, config_hash=expected)
    elif resume and is_writer():  # a run stopped before its first checkpoint
        print(
            f"esmeta: --resume: {workdir} holds no checkpoint yet: starting at step 0.",
            file=sys.stderr,
        )
    if is_writer():
        checkpoint.write_config(workdir, config)
        path = workdir / METRICS
        text = path.read_text() if path.exists() else ""
        report.write_text_atomic(path, report.trim_metrics(text, state.step, path=path))
    return config, state


def _check_finite(metrics: dict[str, Any], config: TrainConfig, step: int, bad_run: int) -> int:
    """Raises :class:`TrainingDiverged` on a non-finite step; returns the all-members-bad run."""
    loss, params_finite = float(metrics["loss"]), bool(metrics["params_finite"])
    if not math.isfinite(loss) or not params_finite:
        what = f"loss {loss}" if not math.isfinite(loss) else "non-finite parameters"
        raise TrainingDiverged(f"step {step} gave {what}")
    if config.method == "es" and int(metrics["num_nonfinite"]) >= config.population:
        bad_run += 1
        if bad_run >= config.max_nonfinite_steps:
            raise TrainingDiverged(
                f"every ES member's loss was non-finite for {bad_run} steps in a row "
                f"(steps {step - bad_run + 1}-{step}; max_nonfinite_steps="
                f"{config.max_nonfinite_steps}): sigma={config.sigma} or lr={config.lr} "
                "is likely too large"
            )
        return bad_run
    return 0


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
    Only process 0 writes ``metrics.jsonl``; every process saves checkpoints (orbax
    writes them once).

    Raises:
      TrainingDiverged: the loss or the parameters became non-finite, or every ES
        member was non-finite for ``max_nonfinite_steps`` steps in a row. No checkpoint
        is written from such a step on, so the last one saved is a good one.
    """
    images = load_split(config.split).images
    train_step = make_train_step(config, model_for(config), mesh)
    start, wall0, bad_run = state.step, time.perf_counter(), 0
    desc = f"{config.method} {config.way}w{config.shot}s"
    bar = tqdm(
        total=config.steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True
    )
    log = (workdir / METRICS).open("a") if is_writer() else contextlib.nullcontext()
    with log, checkpoint.manager(workdir) as checkpoints:
        while state.step < config.steps:
            episodes = sample_episodes(
                images,
                seed=config.seed,
                step=state.step,
                batch=1,
                way=config.training_way,
                shot=config.shot,
                query=config.query,
            )
            inputs = sharding.replicate((step_key(config.seed, state.step), episodes), mesh)
            params, opt_state, metrics = train_step(state.params, state.opt_state, *inputs)
            state = TrainState(state.step + 1, params, opt_state)
            done = state.step
            metrics = sharding.to_host(metrics)
            try:
                bad_run = _check_finite(metrics, config, done, bad_run)
            except TrainingDiverged as e:
                bar.close()
                last = checkpoint.latest_step(workdir)
                kept = f"step {last}" if last is not None else "none yet"
                raise TrainingDiverged(
                    f"training stopped: {e}. The last good checkpoint ({kept}) in "
                    f"{workdir / checkpoint.CHECKPOINTS} is kept."
                ) from None
            if done % config.log_every == 0 or done == config.steps:
                elapsed = time.perf_counter() - wall0
                record = {k: float(v) for k, v in metrics.items() if k != "params_finite"}
                record.update(
                    step=done,
                    wall_s=round(elapsed, 2),
                    episodes_per_s=round((done - start) / elapsed, 3),
                )
                if is_writer():
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    acc=f"{record['accuracy']:.3f}",
                    trend=f"{record['trend_cosine']:+.3f}",  # train_step.trend_cosine
                    ep_s=f"{record['episodes_per_s']:.2f}",
                )
            if bad_run == 0 and (done % config.checkpoint_every == 0 or done == config.steps):
                checkpoint.save(checkpoints, state, config_hash=config_hash(config))
            bar.update(1)
            if on_step is not None:
                on_step(done)
    bar.close()
    return state, time.perf_counter() - wall0


def final_evaluation(config: TrainConfig, params: Any, *, progress: bool = False) -> Evaluation:
    """The run's test: ``eval_episodes`` ``way``-way ``shot``-shot episodes of ``eval_split``."""
    return evaluate(
        model_for(config),
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
    allow_changes: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Trains, checkpoints and tests one ProtoNet; returns (and writes) the summary.

    Args:
      config: the run, checked before any compute; workdir: where files go.
      resume: continue the run in ``workdir`` with its saved config (``config`` may
        differ only in :data:`~esmeta_core.configs.RESUMABLE`, or anywhere with
        ``allow_changes``).
      progress: show progress bars; on_step: called with each finished step (tests).
      command: the command line recorded in ``summary.json`` (default: this process's).

    Process 0 holds the workdir's lock (:func:`esmeta_core.checkpoint.lock`) from
    before the first file is written to the end: a second run on the same workdir is
    refused with ``FileExistsError``.
    """
    checkpoint.check_workdir_name(workdir)  # before anything is written, on every process
    workdir = Path(workdir)
    with checkpoint.lock(workdir) if is_writer() else contextlib.nullcontext():
        return _train_and_evaluate(
            config,
            workdir,
            resume=resume,
            allow_changes=allow_changes,
            progress=progress,
            on_step=on_step,
            command=command,
        )


def _train_and_evaluate(
    config: TrainConfig,
    workdir: Path,
    *,
    resume: bool,
    allow_changes: bool,
    progress: bool,
    on_step: Callable[[int], None] | None,
    command: str | None,
) -> dict[str, Any]:
    """:func:`train_and_evaluate` once the workdir is this run's alone."""
    mesh = sharding.population_mesh()
    config, state = prepare(config, workdir, mesh=mesh, resume=resume, allow_changes=allow_changes)
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
    command = command or report.command_line()
    if not is_writer():  # one process of a multi-host run writes the file
        return {"command": command, "config": config.to_json(), **summary}
    return report.write_result(
        workdir / "summary.json", summary, config=config, command=command, wall_s=train_wall
    )
