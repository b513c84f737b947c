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

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from esmeta_core import report
from esmeta_core.configs import RESUMABLE, ConfigError, TrainConfig, differences, validate_config

CONFIG = "config.json"  # the run's TrainConfig inside a workdir
METRICS = "metrics.jsonl"  # the run's training curve inside a workdir
LOCK = ".lock"  # held (flock) by the one process that writes a workdir
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


def save(
    checkpoints: ocp.CheckpointManager, state: TrainState, *, config_hash: str | None = None
) -> None:
    """Writes ``state`` as step ``state.step``; every process calls it with the same state.

    ``config_hash`` (:func:`esmeta_core.configs.config_hash` of the run) is stored in
    the step's metadata and checked by :func:`restore`.
    """
    items = {name: ocp.args.StandardSave(getattr(state, name)) for name in ITEMS}
    metadata = {"config_hash": config_hash} if config_hash else None
    saved = checkpoints.save(state.step, args=ocp.args.Composite(**items), custom_metadata=metadata)
    if not saved:  # orbax skips a step at or below its newest one, without an error
        raise FileExistsError(
            f"{checkpoints.directory}: step {state.step} was not saved, because the folder "
            f"already holds step {checkpoints.latest_step()}: it holds another run's "
            "checkpoints. Use a new --workdir."
        )


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


def restore(
    workdir: str | Path,
    template: TrainState,
    *,
    config_hash: str | Collection[str] | None = None,
) -> TrainState:
    """The newest checkpoint in ``workdir``, in the structure and shardings of ``template``.

    Args:
      workdir: a run's workdir.
      template: a state of the same model and optimizer (e.g. a fresh one); its
        leaves' shapes, dtypes and shardings are those restored. With
        ``opt_state=None`` only the parameters are read (for evaluation).
      config_hash: if given, the hash the checkpoint must have been saved with (or a
        collection of the hashes accepted, see
        :func:`esmeta_core.configs.saved_config_hashes`).

    Raises:
      FileNotFoundError: no checkpoint in ``workdir``.
      ValueError: an old-format checkpoint, a damaged one, one of another model
        shape (e.g. another width), or one saved under another config hash.
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
        stored_hash = (checkpoints.metadata(step).custom_metadata or {}).get("config_hash")
        accepted = {config_hash} if isinstance(config_hash, str) else set(config_hash or ())
        if accepted and stored_hash and stored_hash not in accepted:
            raise ValueError(
                f"{path} was saved by a run whose config hash is {stored_hash}, but "
                f"{workdir / CONFIG} hashes to {' or '.join(sorted(accepted))}: the config was "
                "changed after this checkpoint was written. Restore the original config.json, "
                "or use another --workdir."
            )
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


def saved_config(workdir: str | Path) -> TrainConfig | None:
    """The config of the run saved in ``workdir`` (re-validated), or ``None`` if there is none.

    Raises:
      ConfigError: ``config.json`` is not valid JSON or holds a bad field (naming the file).
    """
    path = Path(workdir) / CONFIG
    if not path.is_file():
        return None
    config = TrainConfig.load(path)
    try:
        validate_config(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}", field=e.field) from None
    return config


def resume_config(
    workdir: str | Path, config: TrainConfig, *, resume: bool, allow_changes: bool = False
) -> TrainConfig:
    """The config a run in ``workdir`` goes on with; writes nothing.

    A new run (``resume=False``) needs a workdir without a run. A resumed one keeps
    its saved, re-validated config: ``config`` may differ from it only in the
    :data:`~esmeta_core.configs.RESUMABLE` fields (``steps`` never shrinks, and grows not
    at all under a cosine or linear learning rate, which decays to the saved ``steps``),
    unless ``allow_changes`` (which still never shrinks ``steps``).

    Raises:
      FileExistsError: ``workdir`` holds a run, or any of its files (see
        :func:`run_files`), and ``resume`` is false.
      FileNotFoundError: ``resume`` but ``workdir`` holds no run.
      ConfigError: the saved config is bad, or ``config`` differs from it (or grows
        ``steps`` under a cosine or linear learning rate, or has fewer ``steps``).
    """
    workdir = Path(workdir)
    if not resume:
        found = run_files(workdir)
        if found:
            raise FileExistsError(
                f"{workdir} already holds a run ({', '.join(found)}). Pass --resume to continue "
                "it, or choose another --workdir."
            )
        return config
    saved = saved_config(workdir)
    if saved is None:
        raise FileNotFoundError(
            f"--resume: {workdir} holds no run to continue (no {CONFIG}). Start one without "
            "--resume."
        )
    changed = [d for d in differences(saved, config) if d.split("=")[0] not in RESUMABLE]
    if changed and not allow_changes:
        raise ConfigError(
            f"{workdir} holds a run whose config differs from the one asked for: "
            + "; ".join(changed)
            + f". A resumed run keeps its saved config (it may change only {RESUMABLE}); "
            "drop these overrides, use another --workdir, or pass --allow-config-change.",
            field=changed[0].split("=")[0],
        )
    if config.steps < saved.steps:
        raise ConfigError(
            f"--steps {config.steps} is below the {saved.steps} steps of the run in {workdir}: "
            f"a resumed run only goes on. Resume without --steps (or with at least "
            f"{saved.steps}), or start a new run in another --workdir.",
            field="steps",
        )
    grown = config.steps > saved.steps
    if grown and saved.lr_schedule in ("cosine", "linear") and not allow_changes:
        raise ConfigError(
            f"{workdir} holds a run whose {saved.lr_schedule} learning rate decays to its "
            f"end at step {saved.steps}; --steps {config.steps} would move that end and "
            "change the learning rate of the steps still to come. Resume without --steps "
            "(or with the saved value), start a new run, or pass --allow-config-change.",
            field="steps",
        )
    base = config if allow_changes else saved
    resumable = {name: getattr(config, name) for name in RESUMABLE}
    return dataclasses.replace(base, **resumable)


def run_files(workdir: str | Path) -> list[str]:
    """What in ``workdir`` belongs to a run: ``config.json``, ``metrics.jsonl``, checkpoint steps.

    A new run refuses a workdir where this is not empty, so that it never mixes with
    another run's files (orbax would keep the other run's steps rather than overwrite them).
    """
    workdir = Path(workdir)
    found = [name for name in (CONFIG, METRICS, LEGACY_CHECKPOINT) if (workdir / name).exists()]
    folder = workdir / CHECKPOINTS
    steps = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if steps:
        shown = ", ".join(steps[:3]) + (", ..." if len(steps) > 3 else "")
        found.append(f"{CHECKPOINTS}/{shown}")
    return found


def check_workdir_name(workdir: str | Path) -> None:
    """Refuses a workdir whose name is not valid UTF-8 (orbax needs UTF-8 paths).

    Such a name comes from a byte path that the file system accepts but Python decodes
    with ``surrogateescape``; orbax would fail on it only when saving the first
    checkpoint, after the training.

    Raises:
      ValueError: the name does not encode as UTF-8.
    """
    try:
        str(workdir).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"--workdir {os.fsencode(workdir)!r} is not a valid UTF-8 name, which checkpoints "
            "need; choose a UTF-8 name."
        ) from None


@contextlib.contextmanager
def lock(workdir: str | Path) -> Iterator[None]:
    """Holds ``workdir/.lock`` (an exclusive ``flock``) for the block: one writer per workdir.

    Creates ``workdir`` (and its parents). The lock is the kernel's: it goes with the
    process, so a killed run never leaves a lock that blocks the next one. The file
    holds the holder's process id, for the message.

    Raises:
      FileExistsError: another process holds the lock (another run or a writing eval).
      ValueError: the workdir's name is not UTF-8 (see :func:`check_workdir_name`).
    """
    check_workdir_name(workdir)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FileExistsError(
                f"{workdir} is in use by another run (lock {path} held by process {holder}); "
                "wait for it to end, or choose another --workdir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_config(workdir: str | Path, config: TrainConfig) -> None:
    """Writes ``workdir/config.json`` (created with its parents), atomically."""
    report.write_text_atomic(Path(workdir) / CONFIG, json.dumps(config.to_json(), indent=2))
