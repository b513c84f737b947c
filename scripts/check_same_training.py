"""Trains the first steps of a preset and saves or compares the final parameters.

A behaviour check for refactors of the training loop: run it on the old code to save
the parameters, then on the new code to compare them (the maximum absolute difference
must be 0.0)::

    python scripts/check_same_training.py --save /tmp/before.npz   # old code
    python scripts/check_same_training.py --compare /tmp/before.npz  # new code

It trains with ``esmeta train --preset main --steps 50 --eval-episodes 20`` into a
temporary workdir (the learning-rate schedule does not depend on ``steps``, so these
are the first 50 steps of the full run) and reads the parameters from its checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import jax
import numpy as np

from esmeta_core import configs, protonet, train


def _restore_params(workdir: Path, config: configs.TrainConfig):
    model = protonet.Conv4(config.width)
    try:
        from esmeta_core import checkpoint
    except ImportError:  # before the orbax checkpoints (commit 65ece98): train.py held them
        return train.restore_checkpoint(workdir, train.init_state(config, model))
    return checkpoint.restore(workdir, train.init_state(config, model))


def trained_params(preset: str, steps: int) -> dict[str, np.ndarray]:
    """Flat ``{leaf path: array}`` of the parameters after ``steps`` steps of ``preset``."""
    config = dataclasses.replace(configs.get_preset(preset), steps=steps, eval_episodes=20)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "run"
        train.train_and_evaluate(config, workdir, progress=False)
        state = _restore_params(workdir, config)
    assert state.step == steps, state.step
    leaves = jax.tree_util.tree_leaves_with_path(state.params)
    return {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="main")
    parser.add_argument("--steps", type=int, default=50)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="write the parameters to this .npz")
    group.add_argument("--compare", help="compare the parameters with this .npz")
    args = parser.parse_args()
    params = trained_params(args.preset, args.steps)
    if args.save:
        np.savez(args.save, **params)
        print(f"saved {len(params)} arrays after {args.steps} steps of {args.preset!r}")
        return
    before = dict(np.load(args.compare))
    if set(before) != set(params):
        raise SystemExit(f"different parameter trees: {sorted(before)} vs {sorted(params)}")
    worst = 0.0
    for name in sorted(params):
        diff = float(np.max(np.abs(before[name] - params[name])))
        worst = max(worst, diff)
        print(f"{name:40s} {str(params[name].shape):18s} max abs diff {diff}")
    print(f"{args.preset!r}, {args.steps} steps: max abs diff over all parameters = {worst}")
    raise SystemExit(0 if worst == 0.0 else 1)


if __name__ == "__main__":
    main()
