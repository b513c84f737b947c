"""Checkpoints of a training run, the state the loop carries, and the run's saved config.

A workdir holds ``config.json`` (the run's :class:`~esmeta_core.configs.TrainConfig`)
and ``checkpoints/<step>/``, written by an orbax-checkpoint ``CheckpointManager``:

- atomic: a step is written to a temporary folder and renamed when complete, so a
  run killed while saving leaves the previous checkpoint intact;
- the last :data:`KEEP` steps are kept, older ones deleted;
- multi-host aware: every process calls :func:`save` with the same global,
  replicated arrays and orbax writes them once.

Checkpoints of esmeta before orbax (one ``checkpoint.msgpack`` file) are refused
with a message that says how to proceed (see :func:`latest_step`); they are not
migrated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from esmeta_core.configs import TrainConfig

CHECKPOINTS = "checkpoints"  # the folder of orbax steps inside a workdir
LEGACY_CHECKPOINT = "checkpoint.msgpack"  # the format before orbax; refused
KEEP = 3  # checkpoints kept per run (the newest ones)
ITEMS = ("params", "opt_state")  # stored separately: evaluation restores only the parameters


class TrainState(NamedTuple):
    """What the training loop carries and a checkpoint holds.

    Attributes:
      step: optimizer steps done.
      params: the model's parameter pytree.
      opt_state: the optax optimizer state for ``params``.
    """

    step: int
    params: Any
    opt_state: Any


def manager(workdir: str | Path, *, keep: int = KEEP) -> ocp.CheckpointManager:
    """The synchronous orbax ``CheckpointManager`` of ``workdir/checkpoints`` (a context manager).

    Example:
      >>> import tempfile
      >>> with manager(tempfile.mkdtemp()) as m:
      ...     m.all_steps()
      []
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False
    )
    handlers = {name: ocp.StandardCheckpointHandler() for name in ITEMS}
    return ocp.CheckpointManager(
        Path(workdir).absolute() / CHECKPOINTS, options=options, item_handlers=handlers
    )


def save(checkpoints: ocp.CheckpointManager, state: TrainState) -> None:
    """Writes ``state`` as step ``state.step``; every process calls it with the same state."""
    items = {name: ocp.args.StandardSave(getattr(state, name)) for name in ITEMS}
    checkpoints.save(state.step, args=ocp.args.Composite(**items))


def latest_step(workdir: str | Path) -> int | None:
    """The newest checkpointed step in ``workdir``, or ``None`` if there is none.

    Raises:
      ValueError: ``workdir`` holds only a checkpoint of the old (msgpack) format.
    """
    workdir = Path(workdir)
    steps = []
    if (workdir / CHECKPOINTS).is_dir():
        with manager(workdir) as checkpoints:
            steps = list(checkpoints.all_steps())
    if not steps and (workdir / LEGACY_CHECKPOINT).exists():
        raise ValueError(
            f"{workdir / LEGACY_CHECKPOINT} is a checkpoint of an older esmeta (msgpack, before "
            f"orbax checkpoints in {CHECKPOINTS}/); this version does not read it. Retrain into "
            "a new --workdir, or evaluate it with esmeta at commit 65ece98 or earlier."
        )
    return max(steps) if steps else None


def restore(workdir: str | Path, template: TrainState) -> TrainState:
    """The newest checkpoint in ``workdir``, in the structure and shardings of ``template``.

    Args:
      workdir: a run's workdir.
      template: a state of the same model and optimizer (e.g. a fresh one); its
        leaves' shapes, dtypes and shardings are those restored. With
        ``opt_state=None`` only the parameters are read (for evaluation).

    Raises:
      FileNotFoundError: no checkpoint in ``workdir``.
      ValueError: an old-format checkpoint, a damaged one, or one of another model
        shape (e.g. another width).
    """
    workdir = Path(workdir)
    step = latest_step(workdir)
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}: train first (esmeta train).")
    path = workdir / CHECKPOINTS / str(step)
    names = [name for name in ITEMS if getattr(template, name) is not None]
    want = jax.tree.map(lambda x: tuple(x.shape), template.params)
    with manager(workdir) as checkpoints:
        try:
            stored = checkpoints.item_metadata(step)["params"]
            got = jax.tree.map(lambda x: tuple(x.shape), dict(stored))
        except Exception as e:  # orbax raises several types for a damaged checkpoint
            raise _unreadable(path, e) from e
        if got != want:
            raise ValueError(
                f"{path} holds a model of another shape (e.g. another width) than the config "
                f"asks for: checkpoint conv shapes {jax.tree.leaves(got)[:2]}, expected "
                f"{jax.tree.leaves(want)[:2]}."
            )
        abstract = {
            name: jax.tree.map(ocp.utils.to_shape_dtype_struct, getattr(template, name))
            for name in names
        }
        args = ocp.args.Composite(**{n: ocp.args.StandardRestore(a) for n, a in abstract.items()})
        try:
            items = checkpoints.restore(step, args=args)
        except Exception as e:
            raise _unreadable(path, e) from e
    return TrainState(step, items["params"], items["opt_state"] if "opt_state" in names else None)


def _unreadable(path: Path, error: Exception) -> ValueError:
    return ValueError(
        f"{path} is not a readable checkpoint ({type(error).__name__}: {error}). Delete this "
        "step's folder to resume from the one before it (or from step 0), or restore it from "
        "a backup."
    )


def prepare_workdir(workdir: str | Path, config: TrainConfig, *, resume: bool) -> TrainConfig:
    """Writes the run's ``config.json``; on resume, checks it against the one saved there.

    A resumed run keeps its saved config, except that ``steps`` may grow.

    Raises:
      FileExistsError: ``workdir`` holds a run and ``resume`` is false.
      ValueError: the saved run has another ``width`` or ``method``.
    """
    workdir = Path(workdir)
    path = workdir / "config.json"
    if path.exists() and not resume:
        raise FileExistsError(
            f"{workdir} already holds a run. Pass --resume to continue it, or choose another "
            "--workdir."
        )
    if path.exists():
        saved = TrainConfig.load(path)
        for field in ("width", "method"):
            if getattr(saved, field) != getattr(config, field):
                raise ValueError(
                    f"{workdir} holds a run with {field}={getattr(saved, field)!r}, but "
                    f"{field}={getattr(config, field)!r} was asked for. Use another --workdir, "
                    "or the saved value."
                )
        config = TrainConfig(**{**saved.to_json(), "steps": max(config.steps, saved.steps)})
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_json(), indent=2))
    return config
