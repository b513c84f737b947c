"""The optimizer of a training run: Adam, a learning-rate schedule, kernel projection.

All of it descends the gradient (or the ES estimate) it is given, and all of
it is plain optax, so ES and backprop runs share one optimizer.

Batch norm makes every Conv kernel before it *scale-invariant* per output
channel: ``L(c W) = L(W)`` for ``c > 0``. Adam's steps are a fixed size, so the
kernels' norms grow by a random walk and silently cut the effective learning
rate (step / norm) and, for ES, the effective sigma (van Laarhoven 2017,
arXiv:1706.05350). :func:`project_to_unit_channels` puts every kernel channel back
on the unit sphere after each step, so step size and sigma keep their meaning. This
module knows no model: the caller says which leaves are kernels (a mask).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

LR_SCHEDULES = ("halving", "cosine", "linear", "constant")


def lr_schedule(
    lr: float,
    *,
    kind: str = "halving",
    steps: int,
    halving_every: int = 2000,
    final_fraction: float = 0.0,
) -> optax.Schedule:
    """The learning rate at each step.

    - ``"halving"``: ``lr * 0.5 ** floor(t / halving_every)`` (Snell et al. 2017,
      arXiv:1703.05175). It never acts in a run shorter than ``halving_every``.
    - ``"cosine"``: ``lr_t = lr (f + (1 - f)(1 + cos(pi t / T)) / 2)`` with
      ``f = final_fraction`` and ``T = steps`` (Loshchilov & Hutter 2016,
      arXiv:1608.03983, without restarts): it acts within any run.
    - ``"linear"``: from ``lr`` to ``f lr`` linearly over ``steps``.
    - ``"constant"``: ``lr``.
    """
    if kind == "halving":
        return optax.exponential_decay(
            lr, transition_steps=halving_every, decay_rate=0.5, staircase=True
        )
    if kind == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=steps, alpha=final_fraction)
    if kind == "linear":
        return optax.linear_schedule(lr, lr * final_fraction, transition_steps=steps)
    if kind == "constant":
        return optax.constant_schedule(lr)
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}.")


def unit_channels(x: jax.Array) -> jax.Array:
    """Each output channel (last axis) of ``x`` divided by its norm: f32[..., c] -> same."""
    axes = tuple(range(x.ndim - 1))
    return x / jnp.sqrt(jnp.sum(x**2, axis=axes, keepdims=True) + 1e-12)


class ProjectState(NamedTuple):
    """No state: the projection depends on the parameters only."""


def project_to_unit_channels(
    mask: Callable[[Any], Any] | Any,
) -> optax.GradientTransformation:
    """Turns updates ``u`` into ``P(theta + u) - theta`` on the leaves in ``mask``.

    ``P`` scales every output channel of a kernel to norm 1, so after the step
    ``theta + u`` lies on the product of unit spheres. For a scale-invariant
    kernel this changes nothing the loss sees, and keeps the step size relative
    to the weights constant (Riemannian / projected SGD on the sphere; see
    van Laarhoven 2017, arXiv:1706.05350, and Wan et al. 2020,
    arXiv:2006.08419, on the "spherical motion dynamics" of such weights).
    Chain it after the optimizer; it needs ``params`` in ``update``.
    """

    def init_fn(params):
        del params
        return ProjectState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("project_to_unit_channels needs params in update().")
        which = mask(params) if callable(mask) else mask

        def project(u, p, m):
            return unit_channels(p + u) - p if m else u

        return jax.tree.map(project, updates, params, which), state

    return optax.GradientTransformation(init_fn, update_fn)


def first_moment(opt_state: Any) -> Any:
    """Adam's first moment ``mu`` in the state of :func:`make_optimizer`'s optimizer.

    .. math::

       \\mu_t = b_1 \\mu_{t-1} + (1 - b_1) \\, g_t

    (no bias correction): an exponential average of the gradients (or ES
    estimates) given so far, shaped like ``params``; zeros before the first step.
    Found by name in the ``ScaleByAdamState`` wherever the chain (the kernel
    projection) puts it; ``scripts/diagnostics/es_plateau.py`` measures it.

    Args:
      opt_state: the state of an optimizer with one Adam inside.

    Returns:
      ``mu``, a pytree shaped like ``params``.

    Raises:
      ValueError: the state holds no Adam first moment.
    """
    mu = optax.tree_utils.tree_get(
        opt_state,
        "mu",
        filtering=lambda path, _: getattr(path[-1], "tuple_name", None) == "ScaleByAdamState",
    )
    if mu is None:
        raise ValueError("the optimizer state holds no Adam first moment (ScaleByAdamState.mu).")
    return mu


def make_optimizer(
    config: Any, *, kernel_mask: Callable[[Any], Any] | Any = None
) -> optax.GradientTransformation:
    """The optimizer of a :class:`~esmeta_core.configs.TrainConfig`.

    Adam (``b1 = config.adam_b1``) with the schedule of :func:`lr_schedule`, then
    :func:`project_to_unit_channels` on the leaves of ``kernel_mask`` when
    ``config.unit_kernels``.

    Args:
      config: a ``TrainConfig`` (its ``lr``, ``lr_schedule``, ``steps``,
        ``lr_final_fraction``, ``adam_b1`` and ``unit_kernels``).
      kernel_mask: which leaves are batch-normed kernels, a pytree of bools shaped
        like ``params`` or a callable ``params -> that pytree`` (the model knows its
        names, e.g. :func:`esmeta_core.protonet.conv_kernel_mask`). Needed only with
        ``unit_kernels``.

    Raises:
      ValueError: ``config.unit_kernels`` without a ``kernel_mask``.
    """
    schedule = lr_schedule(
        config.lr,
        kind=config.lr_schedule,
        steps=config.steps,
        final_fraction=config.lr_final_fraction,
    )
    opt = optax.adam(schedule, b1=config.adam_b1)
    if config.unit_kernels:
        if kernel_mask is None:
            raise ValueError("unit_kernels needs a kernel_mask: which leaves are the kernels.")
        opt = optax.chain(opt, project_to_unit_channels(kernel_mask))
    return opt
